"""Study `init`: zeros, constant, small and large normal, standard, Xavier and He on tanh and ReLU nets.

Each scheme trains a tanh and a ReLU net on several seeds. The activation scale is read at initialization
(the probes' step-0 measurement, before any update); symmetry, weight gradients and learning are read
after training.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.analysis.diagnosis import NOT_LEARNING_RULE
from pipeline.studies.base import Findings, StudyRun, finished, per_seed, seed_label, seed_table
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import at_init, geo_mean, off_one, signal_ratio_at_init, thresholds

ACTIVATIONS = ("tanh", "relu")
LIMITS = ("vanished", "exploded", "saturated", "kept")
ACT_RANGE = (1e-10, 1e6)  # y range of the act std panels: an exploding net leaves it (its label says how far)
LOSS_TOP = 30.0  # loss panels stop here: a diverging net's loss would flatten every other curve


def scheme(run: StudyRun) -> str:
    """The init scheme of a run: its init name, with normal's std, Xavier and He variants folded."""
    name = str(run.values.get("init", ""))
    if name == "normal":
        return f"normal {float(run.values.get('init.std', math.nan)):g}"
    if name.startswith("xavier"):
        return "xavier"
    if name.startswith("he_"):
        return "he"
    return name


def activation(run: StudyRun) -> str:
    return str(run.values.get("model.activation"))


def normal_stds(runs: list[StudyRun]) -> list[str]:
    """The normal schemes present, from the smallest std to the largest."""
    names = {scheme(r) for r in runs if scheme(r).startswith("normal ")}
    return sorted(names, key=lambda s: float(s.split()[1]))


def group(runs: list[StudyRun], act: str, name: str) -> list[StudyRun]:
    """Every run (one per seed, finished or not) of one activation and scheme, by seed."""
    return sorted((r for r in runs if activation(r) == act and scheme(r) == name), key=lambda r: r.seed)


def flags(runs: list[StudyRun], has) -> dict[str, bool | None]:
    """{"seed 0": has(run), ...}; None for a run that did not finish."""
    return {seed_label(r.seed): (bool(has(r)) if r.ok else None) for r in runs}


def hidden_at_init(run: StudyRun, prefix: str) -> list[float]:
    """prefix/layer_XX of the hidden layers at step 0 (before any update); act_ metrics log the output last."""
    keys = sorted(k for k in run.history if k.startswith(prefix + "/layer_"))
    keys = keys[:-1] if prefix.startswith("act_") else keys  # saturation is logged for hidden layers only
    return [at_init(run, k) for k in keys]


def saturation_at_init(run: StudyRun) -> float:
    """Mean share of saturated units over the hidden layers at init (nan without saturation probes: ReLU)."""
    values = [v for v in hidden_at_init(run, "saturation") if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def max_weight_grad(run: StudyRun) -> float:
    """Largest ||dL/dW|| of any layer at any measurement: exactly 0 when no weight ever gets a gradient."""
    values = [v for k in run.history if k.startswith("grad_norm/layer_") for v in run.series(k)[1]]
    return float(np.max(values)) if values else math.nan


def accuracies(runs: list[StudyRun]) -> str:
    """ "test acc 0.95, 0.96, FAILED": what a learning check measured, seed by seed."""
    return "test acc " + ", ".join(f"{r.get('test/acc'):.2f}" if r.ok else r.status for r in runs)


def symmetry_checks(runs: list[StudyRun]) -> list[Check]:
    """Zeros and constant leave units identical: the `symmetric` label on every run, tanh and relu."""
    out = []
    for name in ("zeros", "constant"):
        marked = {
            f"{a}, {label}": flag
            for a in ACTIVATIONS
            for label, flag in flags(group(runs, a, name), lambda r: "symmetric" in r.verdict).items()
        }
        out.append(
            every(
                f"{name} leaves every hidden unit of a layer identical after training (verdict `symmetric`), "
                "tanh and relu",
                marked,
                expected="symmetric on every run",
            )
        )
    return out


def zeros_relu_checks(runs: list[StudyRun]) -> list[Check]:
    """Zeros + ReLU: no weight gradient at any measurement, and the net does not learn."""
    mine = group(runs, "relu", "zeros")
    grads = ", ".join("-" if not r.ok else f"{max_weight_grad(r):g}" for r in mine)
    return [
        every(
            "zeros + relu: no weight ever gets a gradient (largest ||dL/dW|| over training)",
            flags(mine, lambda r: max_weight_grad(r) == 0.0),
            measured=f"max ||dL/dW|| {grads or '-'}",
            expected="exactly 0 on every seed",
        ),
        every(
            "zeros + relu never learns",
            flags(mine, lambda r: not r.learned),
            measured=accuracies(mine),
            expected="not_learning on every seed",
        ),
    ]


def scale_checks(runs: list[StudyRun], lim: dict[str, float]) -> list[Check]:
    """Too small vanishes (both activations); too large saturates tanh and explodes ReLU, all at init."""
    stds = normal_stds(runs)
    if len(stds) < 2:  # the smallest and the largest std of normal stand for "too small" and "too large"
        return [
            missing(
                "too small and too large a normal init",
                "two normal stds in the grid",
                "this size runs fewer than two normal stds",
            )
        ]
    small, large = stds[0], stds[-1]
    out = [
        compare(
            f"too small ({small}) makes {a}'s activations vanish with depth: act std last/first hidden at init",
            per_seed(group(runs, a, small), signal_ratio_at_init),
            "<",
            lim["vanished"],
            scale="log",
        )
        for a in ACTIVATIONS
    ]
    out.append(
        compare(
            f"too large ({large}) saturates tanh: mean share of saturated units over the hidden layers at init",
            per_seed(group(runs, "tanh", large), saturation_at_init),
            ">",
            lim["saturated"],
        )
    )
    out.append(
        compare(
            f"too large ({large}) explodes relu: act std last/first hidden at init",
            per_seed(group(runs, "relu", large), signal_ratio_at_init),
            ">",
            lim["exploded"],
            scale="log",
        )
    )
    return out


def suits_checks(runs: list[StudyRun], lim: dict[str, float]) -> list[Check]:
    """Xavier keeps tanh's scale and the tanh net learns; He does both for ReLU."""
    out = []
    for act, name in (("tanh", "xavier"), ("relu", "he")):
        mine = group(runs, act, name)
        drift = per_seed(mine, lambda r: off_one(signal_ratio_at_init(r)))
        out.append(
            compare(
                f"{name} keeps {act}'s activation scale: act std last/first hidden at init near 1 "
                "(shown: the factor it is off 1, max(r, 1/r))",
                drift,
                "<",
                lim["kept"],
                scale="log",
            )
        )
        out.append(
            every(
                f"... and the {act} net learns with it",
                flags(mine, lambda r: r.learned),
                measured=accuracies(mine),
                expected="learns on every seed",
            )
        )
    return out


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/init.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    return symmetry_checks(runs) + zeros_relu_checks(runs) + scale_checks(runs, lim) + suits_checks(runs, lim)


# --- the figure: act std per layer at init and the training loss, seeds folded ---------------------------------


def spread(values: list[np.ndarray], log: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, min, max) over the seeds at each point, over the seeds that reach it (a diverged run stops early);
    geometric mean with `log`; non-finite values (and zeros with `log`) left out."""
    n = max((len(v) for v in values), default=0)
    stack = np.full((len(values), n), np.nan)  # (seeds, points)
    for i, v in enumerate(values):
        stack[i, : len(v)] = v
    if stack.size == 0:
        return np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    stack = np.ma.masked_invalid(np.where((stack > 0) | (not log), stack, np.nan))  # a point no seed reached: nan
    mean = np.exp(np.ma.log(stack).mean(axis=0)) if log else stack.mean(axis=0)
    lo, hi = stack.min(axis=0), stack.max(axis=0)
    return (
        np.ma.filled(mean.astype(float), np.nan),
        np.ma.filled(lo.astype(float), np.nan),
        np.ma.filled(hi.astype(float), np.nan),
    )


def off_chart(values: list[np.ndarray], top: float) -> str:
    """' (up to 1e+35)' when finite values exceed the panel's top, else ''."""
    flat = np.concatenate(values) if values else np.array([])
    flat = flat[np.isfinite(flat)]
    return f" (up to {flat.max():.0e})" if len(flat) and flat.max() > top else ""


def plot_profile(ax, runs: list[StudyRun], name: str, colour: str) -> None:
    """Act std per hidden layer at init: geometric mean over seeds, min..max shaded (zeros: none on a log axis)."""
    profiles = [np.array(hidden_at_init(r, "act_std"), dtype=float) for r in runs]  # each (hidden layers,)
    mean, low, high = spread(profiles, log=True)
    label = name + (off_chart(profiles, ACT_RANGE[1]) if np.isfinite(mean).any() else " (all zero)")
    layers = np.arange(1, len(mean) + 1)
    ax.plot(layers, mean, marker="o", ms=3, color=colour, label=label)
    ax.fill_between(layers, low, high, color=colour, alpha=0.2, lw=0)


def loss_curve(run: StudyRun) -> tuple[np.ndarray, np.ndarray]:
    """(steps, training loss): the whole training set's loss before any step at 0, then the logged train/loss."""
    steps, losses = run.series("train/loss")
    return np.concatenate([[0.0], steps]), np.concatenate([[run.get("train/initial_loss")], losses])


def plot_loss(ax, runs: list[StudyRun], name: str, colour: str) -> None:
    """Training loss against step: mean over seeds, min..max shaded; a diverged run's curve stops early."""
    curves = [loss_curve(r) for r in runs]  # (steps, losses) per seed; the same steps until one stops
    steps = max((c[0] for c in curves), key=len)
    mean, low, high = spread([c[1] for c in curves], log=False)
    diverged = sum(r.diverged for r in runs)
    label = name + (f" (diverged x{diverged})" if diverged else "") + off_chart([c[1] for c in curves], LOSS_TOP)
    ax.plot(steps, mean, marker="o" if len(steps) < 5 else None, color=colour, label=label)
    ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)


def figure(runs: list[StudyRun]) -> Figure:
    """Act std per layer at init (top) and training loss (bottom), per activation, seeds folded."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    names = list(dict.fromkeys(scheme(r) for r in runs))
    colours = {name: f"C{i}" for i, name in enumerate(names)}
    for col, act in enumerate(ACTIVATIONS):
        for name in names:
            mine = finished(group(runs, act, name))
            if mine:
                plot_profile(axes[0, col], mine, name, colours[name])
                plot_loss(axes[1, col], mine, name, colours[name])
        axes[0, col].set(
            yscale="log",
            ylim=ACT_RANGE,
            xlabel="hidden layer",
            ylabel="act std at init (seeds: geometric mean, range)",
            title=f"{act}: activation scale across layers",
        )
        axes[1, col].set(
            yscale="log",
            xlabel="step (0: the whole training set before any step)",
            ylabel="train loss (seeds: mean, range)",
            title=f"{act}: training loss",
        )
        axes[1, col].set_ylim(top=min(axes[1, col].get_ylim()[1], LOSS_TOP))
        for ax in axes[:, col]:
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:  # no runs of this activation: no legend
                ax.legend(fontsize=8)
    return fig


# --- the table and the flat metrics -------------------------------------------------------------------------------

COLUMNS = [
    "activation",
    "init",
    "seed",
    "act std L1 at init",
    "act std last/first at init",
    "saturation at init",
    "max ||dL/dW||",
    "train loss initial",
    "train loss final",
    "test acc",
    "verdict",
]


def row(run: StudyRun) -> dict:
    """One run: its scale at init, its gradients, its learning and its verdict."""
    return {
        "activation": activation(run),
        "init": scheme(run),
        "seed": run.seed,
        "act std L1 at init": (hidden_at_init(run, "act_std") or [math.nan])[0],
        "act std last/first at init": signal_ratio_at_init(run),
        "saturation at init": saturation_at_init(run),
        "max ||dL/dW||": max_weight_grad(run),
        "train loss initial": run.get("train/initial_loss"),
        "train loss final": run.get("train/final_loss"),
        "test acc": run.get("test/acc"),
        "verdict": ",".join(run.verdict) or run.status,
    }


def scheme_metrics(runs: list[StudyRun]) -> dict[str, float]:
    """Per activation and scheme over its seeds: act std last/first hidden at init (geometric mean), test acc
    (mean), the share of seeds that learned."""
    out = {}
    for act in ACTIVATIONS:
        for name in dict.fromkeys(scheme(r) for r in runs):
            mine, key = finished(group(runs, act, name)), f"{act}_{name.replace(' ', '_')}"
            if not mine:
                continue
            accs = [r.get("test/acc") for r in mine if math.isfinite(r.get("test/acc"))]
            out[f"act_ratio/{key}"] = geo_mean([signal_ratio_at_init(r) for r in mine])
            out[f"test_acc/{key}"] = float(np.mean(accs)) if accs else math.nan
            out[f"learned/{key}"] = float(np.mean([r.learned for r in mine]))
    return out


def findings(runs: list[StudyRun], cfg) -> Findings:
    order = {name: i for i, name in enumerate(dict.fromkeys(scheme(r) for r in runs))}
    per_run = sorted(
        (row(r) for r in finished(runs)),
        key=lambda x: (
            ACTIVATIONS.index(x["activation"]) if x["activation"] in ACTIVATIONS else 9,
            order.get(x["init"], 99),
            x["seed"],
        ),
    )
    columns, rows = seed_table(per_run, ["activation", "init"], COLUMNS)
    notes = [
        (
            "Each row folds the seeds: mean (min..max). act std: the std of f(z) over the probe batch and the "
            "layer's units, measured at step 0, before any update (the net as its init made it); last/first: "
            "the last hidden layer's over the first's (undefined for zeros: every activation is 0). saturation: "
            "the share of tanh units with f'(z) below 10% of its maximum, averaged over the hidden layers at "
            "init. max ||dL/dW||: the largest weight-gradient norm of any layer at any measurement during "
            "training. `symmetric`: after training, some hidden layer has every unit's incoming weights and bias "
            "equal within 1e-6. " + NOT_LEARNING_RULE + " It learns otherwise (and when it did not diverge). A "
            "factor away from 1 counts either way: max(r, 1/r)."
        )
    ]
    return Findings(
        checks(runs, cfg), columns, rows, scheme_metrics(runs), {"init.png": figure(runs)}, notes, {"runs.csv": per_run}
    )
