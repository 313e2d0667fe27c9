"""Study `activations`: sigmoid, tanh, relu, leaky_relu and elu in the same 5-layer net, on several seeds.

Per seed: the gradient reaching the first layer (relative to the output layer's), the hidden layers' mean
activation, and whether the net learns. The cost of each activation is reported as information only, measured
in a controlled way (pipeline/studies/timing.py): it describes this NumPy engine, not training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.diagnosis import NOT_LEARNING_RULE
from pipeline.engine import make_activation
from pipeline.harness.build import build_trainer, load_data
from pipeline.studies import timing
from pipeline.studies.base import Findings, StudyRun, finished, per_seed, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.grid import expand
from pipeline.studies.measures import grad_norm_ratio, mean_over_layers, thresholds

ORDER = ("sigmoid", "tanh", "relu", "leaky_relu", "elu")
RELU_FAMILY = ("relu", "leaky_relu", "elu")
LEARNERS = ("tanh", *RELU_FAMILY)  # the claim: each of these learns where sigmoid does not
LIMITS = ("grad_ratio_gap", "centred_max", "acc_gap", "target_acc")
TIMED_ARRAYS = 32  # different (64, 64) inputs the activation-alone timing cycles through


def activation(run: StudyRun) -> str:
    return str(run.values.get("model.activation"))


def of(runs: list[StudyRun], name: str) -> list[StudyRun]:
    return [r for r in runs if activation(r) == name]


def learning_flags(runs: list[StudyRun], all_seeds: list[str], learned: bool, prefix: str = "") -> dict:
    """{"[prefix ]seed s": learned (or not, as asked)}; None for a run that is missing or did not finish."""
    by_seed = {r.seed: r for r in runs}
    return {
        f"{prefix}seed {s}": (by_seed[s].learned == learned if s in by_seed and by_seed[s].ok else None)
        for s in all_seeds
    }


def epochs_to_acc(run: StudyRun, target: float) -> float:
    """First epoch whose validation accuracy is at least `target`; inf when none is."""
    epoch_steps = [s for s, _ in run.history.get("epoch", [])]
    acc = dict(run.history.get("val/acc", []))
    hits = [i for i, s in enumerate(epoch_steps, 1) if acc.get(s, -math.inf) >= target]
    return float(hits[0]) if hits else math.inf


def accuracies(runs: list[StudyRun]) -> str:
    return ", ".join(f"{r.get('test/acc'):.2f}" if r.ok else r.status for r in sorted(runs, key=lambda r: r.seed))


# --- the claim, check by check -----------------------------------------------------------------------


def checks(runs: list[StudyRun], lim: dict[str, float]) -> list[Check]:
    """Gradient ratio, zero-centring, learning and accuracy, each per seed."""
    all_seeds = seeds(runs)
    if not of(runs, "sigmoid"):
        return [missing("sigmoid against the others", "a sigmoid run", "this size runs no sigmoid")]
    sig = of(runs, "sigmoid")
    ratio = {name: per_seed(of(runs, name), grad_norm_ratio, all_seeds) for name in ORDER}
    centre = {
        name: per_seed(of(runs, name), lambda r: abs(mean_over_layers(r, "act_mean")), all_seeds)
        for name in ("sigmoid", "tanh")
    }
    out = [
        compare(
            f"sigmoid's gradient reaching the first layer (||dL/dW_1|| / ||dL/dW_out||) is below "
            f"{lim['grad_ratio_gap']:g} x relu's",
            ratio["sigmoid"],
            "<",
            ratio["relu"],
            times=lim["grad_ratio_gap"],
            scale="log",
            limit_name="relu's ratio",
        ),
        compare(
            "sigmoid is not zero-centred: |mean activation| of the hidden layers",
            centre["sigmoid"],
            ">",
            lim["centred_max"],
        ),
        compare(
            "tanh is zero-centred: |mean activation| of the hidden layers", centre["tanh"], "<", lim["centred_max"]
        ),
        every(
            "the sigmoid net does not learn",
            learning_flags(sig, all_seeds, False),
            measured=f"test acc {accuracies(sig)}",
            expected="not_learning on every seed",
        ),
    ]
    learners = [name for name in LEARNERS if of(runs, name)]
    flags = {k: v for name in learners for k, v in learning_flags(of(runs, name), all_seeds, True, name + " ").items()}
    out.append(every(f"{', '.join(learners)} learn", flags, expected="learns on every seed of each"))
    family = [name for name in RELU_FAMILY if of(runs, name)]
    best = {
        k: max((per_seed(of(runs, n), lambda r: r.get("test/acc"), all_seeds)[k] for n in family), default=math.nan)
        for k in (seed_label(s) for s in all_seeds)
    }
    floor = {k: v + lim["acc_gap"] for k, v in per_seed(sig, lambda r: r.get("test/acc"), all_seeds).items()}
    out.append(
        compare(
            f"the best ReLU-family net's test accuracy ({', '.join(family)}) beats sigmoid's by {lim['acc_gap']:g}",
            best,
            ">=",
            floor,
            limit_name=f"sigmoid's + {lim['acc_gap']:g}",
        )
    )
    return out


# --- controlled cost (information, decides nothing) ---------------------------------------------------


def activation_fns(names: list[str]) -> dict[str, Callable]:
    """fn + backprop of each activation on (64, 64) float32 inputs, cycling through TIMED_ARRAYS different ones.

    One fixed array flatters the np.where-based activations: the CPU's branch predictor learns its sign pattern.
    """
    rng = np.random.default_rng(0)
    zs = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(TIMED_ARRAYS)]
    dys = [rng.standard_normal((64, 64)).astype(np.float32) for _ in range(TIMED_ARRAYS)]

    def cycling(act) -> Callable:
        state = {"i": 0}

        def call():
            i = state["i"] % TIMED_ARRAYS
            state["i"] += 1
            return act.backprop(dys[i], zs[i], act.fn(zs[i]))

        return call

    return {name: cycling(make_activation(name)) for name in names}


def step_fns(runs: list[StudyRun], cfg) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """One training step of each activation's network (its first seed's job), cycling 16 batches, with a reset."""
    jobs = {json.dumps(j.values, sort_keys=True): j for j in expand(cfg)}
    fns, resets = {}, {}
    for name in ORDER:
        mine = sorted(finished(of(runs, name)), key=lambda r: r.seed)
        job = jobs.get(json.dumps(mine[0].values, sort_keys=True)) if mine else None
        if job is None:
            continue
        data = load_data(job.cfg)
        trainer = build_trainer(job.cfg, data)
        rng = np.random.default_rng(0)
        batches = [
            rng.choice(
                len(data.y_train), min(job.cfg.train.batch_size or len(data.y_train), len(data.y_train)), replace=False
            )
            for _ in range(16)
        ]
        fns[name], resets[name] = timing.cycling_step(trainer, data.x_train, data.y_train, batches)
    return fns, resets


def controlled_costs(runs: list[StudyRun], cfg) -> dict[str, dict[str, float]]:
    """Seconds per call, best of k interleaved: {"activation": {name: s}, "step": {name: s}}."""
    settings = timing.settings(cfg)
    names = [name for name in ORDER if finished(of(runs, name))]
    if not names:
        return {"activation": {}, "step": {}}
    fns, resets = step_fns(runs, cfg)
    return {
        "activation": timing.best_of_interleaved(activation_fns(names), settings),
        "step": timing.best_of_interleaved(fns, settings, resets) if fns else {},
    }


def cost_note(costs: dict[str, dict[str, float]], cfg) -> str:
    """The controlled costs as a small Markdown table, relu = 1."""
    rows = [
        "| activation | fn + backprop, (64, 64) (us) | / relu | training step (us) | / relu |",
        "|---|---|---|---|---|",
    ]
    act, step = costs["activation"], costs["step"]
    for name in ORDER:
        if name in act:
            a, s = act[name], step.get(name, math.nan)
            rows.append(
                f"| {name} | {1e6 * a:.1f} | {a / act.get('relu', math.nan):.2f} | {1e6 * s:.0f} | "
                f"{s / step.get('relu', math.nan):.2f} |"
            )
    return (
        "- Cost, for information (it describes this NumPy engine and the CPU, not training, and decides "
        f"nothing): {timing.settings(cfg).describe()}, inputs varied call to call ({TIMED_ARRAYS} arrays; 16 "
        "batches, weights restored before each sample). sigmoid (scipy's expit) and tanh are single vectorized "
        "ufuncs; relu, leaky_relu and elu use np.where, whose cost depends on the CPU's branch prediction (a "
        "fixed input would flatter them).\n\n" + "\n".join(rows) + "\n"
    )


# --- table, figure -----------------------------------------------------------------------------------


def columns(lim: dict[str, float]) -> list[str]:
    return [
        "activation",
        "seed",
        "test acc",
        f"epochs to val acc >= {lim['target_acc']:g}",
        "grad ratio first/last",
        "act mean (hidden)",
        "saturation",
        "dead units",
        "verdict",
    ]


def row(run: StudyRun, lim: dict[str, float]) -> dict:
    values = [
        activation(run),
        run.seed,
        run.get("test/acc"),
        epochs_to_acc(run, lim["target_acc"]),
        grad_norm_ratio(run),
        mean_over_layers(run, "act_mean"),
        mean_over_layers(run, "saturation"),
        run.get("dead_relu/total"),
        ",".join(run.verdict) or run.status,
    ]
    return dict(zip(columns(lim), values))


def band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over the curves, cut to the shortest: (n,) each."""
    n = min(len(c) for c in curves)
    stacked = np.array([c[:n] for c in curves])  # (seeds, n)
    return stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0)


def figures(runs: list[StudyRun]) -> dict[str, Figure]:
    """Validation accuracy per epoch and the last gradient norm per layer: mean over seeds, min..max shaded."""
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    curves, grads = fig.subplots(1, 2)
    for i, name in enumerate(ORDER):
        done = finished(of(runs, name))
        if not done:
            continue
        kw = {"color": f"C{i}"}
        epoch_steps = [{s for s, _ in r.history.get("epoch", [])} for r in done]
        accs = [
            np.array([v for s, v in r.history.get("val/acc", []) if s in steps]) for r, steps in zip(done, epoch_steps)
        ]
        if all(len(a) for a in accs):
            mean, lo, hi = band(accs)
            x = np.arange(1, len(mean) + 1)
            curves.plot(x, mean, marker="o", ms=3, label=name, **kw)
            curves.fill_between(x, lo, hi, alpha=0.2, lw=0, **kw)
        norms = [np.array(r.layer_values("grad_norm")) for r in done]
        if all(len(n) and (n > 0).all() for n in norms):
            mean, lo, hi = band([np.log(n) for n in norms])
            x = np.arange(1, len(mean) + 1)
            grads.semilogy(x, np.exp(mean), marker="o", label=name, **kw)
            grads.fill_between(x, np.exp(lo), np.exp(hi), alpha=0.2, lw=0, **kw)
    curves.set(
        xlabel="epoch", ylabel="validation accuracy (seeds: mean, min..max)", title="learning curves", ylim=(0, 1)
    )
    grads.set(
        xlabel="layer (1 = input side)",
        ylabel="||dL/dW|| at the end (seeds: geo. mean)",
        title="gradient norm per layer",
    )
    for ax in (curves, grads):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return {"activations.png": fig}


def metrics(per_run: list[dict], costs: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per activation, means over seeds (the gradient ratio geometric), and the controlled costs."""
    out = {}
    for name in ORDER:
        mine = [r for r in per_run if r["activation"] == name]
        if not mine:
            continue
        for key, col in (("test_acc", "test acc"), ("act_mean", "act mean (hidden)")):
            out[f"{key}/{name}"] = float(np.mean([r[col] for r in mine]))
        ratios = [r["grad ratio first/last"] for r in mine if r["grad ratio first/last"] > 0]
        out[f"grad_ratio/{name}"] = float(np.exp(np.mean(np.log(ratios)))) if ratios else math.nan
    for kind, table in costs.items():
        out.update({f"controlled_{kind}_us/{name}": 1e6 * s for name, s in table.items()})
    return out


def speed_note(per_run: list[dict], lim: dict[str, float]) -> str:
    """Mean epochs to the val-accuracy target per activation (never: some seed did not get there)."""
    col = columns(lim)[3]
    means = {
        name: float(np.mean([r[col] for r in per_run if r["activation"] == name]))
        for name in ORDER
        if any(r["activation"] == name for r in per_run)
    }
    shown = ", ".join(f"{name} {'never' if math.isinf(m) else f'{m:.1f}'}" for name, m in means.items())
    return (
        "- Which activation learns fastest is not claimed: every net trains at the same lr, so a speed "
        f"ranking would need a tuned lr per activation. Mean epochs to val acc >= {lim['target_acc']:g} at this "
        f"lr: {shown or '-'}."
    )


def notes(per_run: list[dict], lim: dict[str, float], costs: dict[str, dict[str, float]], cfg) -> list[str]:
    return [
        (
            "- Each row folds the seeds of one activation: mean (min..max); runs.csv has every run. grad ratio "
            "first/last: ||dL/dW_1|| / ||dL/dW_out||, log-averaged over training. act mean (hidden): the hidden "
            "layers' mean activation at the end. saturation: share of units with f'(z) < 0.1 max f' (sigmoid's "
            "derivative is at most 0.25 even where it does not saturate, so its gradient can shrink per layer without "
            "saturation). " + NOT_LEARNING_RULE
        ),
        speed_note(per_run, lim),
        cost_note(costs, cfg) if costs["activation"] else "- Cost: no finished run to time.",
    ]


def findings(runs: list[StudyRun], cfg) -> Findings:
    lim = thresholds(cfg, *LIMITS)
    per_run = sorted(
        (row(r, lim) for r in finished(runs)),
        key=lambda x: (ORDER.index(x["activation"]) if x["activation"] in ORDER else 9, int(x["seed"])),
    )
    cols, rows = seed_table(per_run, ["activation"], columns(lim))
    costs = controlled_costs(runs, cfg)
    return Findings(
        checks(runs, lim),
        cols,
        rows,
        metrics(per_run, costs),
        figures(runs),
        notes(per_run, lim, costs, cfg),
        {"runs.csv": per_run},
    )
