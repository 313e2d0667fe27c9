"""Study `optimizers`: seven update rules on a sigmoid net's loss plateau, each at its own tuned learning rate.

Every rule runs its own lr grid (a study case) on every seed. Per rule the report picks the lr with the
fewest epochs to the validation-loss target (mean over seeds; validation data only), then compares the
rules at their picks seed by seed: epochs to the training-loss target, and how the effective step size
changes over training. A pick at the edge of its grid leaves that rule's checks undecided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import Findings, StudyRun, finished, per_seed, seed_table, seeds
from pipeline.studies.checks import UNDECIDED, Check, compare, missing
from pipeline.studies.measures import thresholds

ORDER = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
FASTER = ("momentum", "rmsprop", "adam")  # the claim: each leaves the plateau in fewer epochs than sgd
FORGETTING = ("rmsprop", "adam")  # moving averages of squared gradients: their effective step need not decay
LIMITS = ("target_val_loss", "target_loss", "target_acc", "step_window", "decay_max", "decay_share")


def rule(run: StudyRun) -> str:
    """The update rule: the study case's name (one case per rule), else the swept optimizer."""
    return run.case or str(run.values.get("optimizer"))


def lr_of(run: StudyRun) -> float:
    """The learning rate of the run's grid point (the logged lr where the grid does not sweep it)."""
    value = run.values.get("optimizer.lr")
    return float(value) if value is not None else run.get("lr")


def per_epoch(run: StudyRun, key: str) -> np.ndarray:
    """A metric's value at each epoch's last step, in epoch order: (epochs,)."""
    epoch_steps = {s for s, _ in run.history.get("epoch", [])}
    return np.array([v for s, v in run.history.get(key, []) if s in epoch_steps], dtype=float)


def epochs_to(values: np.ndarray, target: float, below: bool = True) -> float:
    """First epoch (1-based) whose value reaches the target; inf when none does."""
    hit = np.flatnonzero(values <= target if below else values >= target)
    return float(hit[0] + 1) if len(hit) else math.inf


def best_val_loss(run: StudyRun) -> float:
    """The lowest epoch-end validation loss (inf when there is none)."""
    val = per_epoch(run, "val/loss")
    val = val[np.isfinite(val)]
    return float(val.min()) if len(val) else math.inf


def at_steps(run: StudyRun, key: str, steps: np.ndarray) -> np.ndarray:
    """The metric's values at `steps` (nan where it was not logged): (len(steps),)."""
    values = dict(run.history.get(key, []))
    return np.array([values.get(int(t), math.nan) for t in steps], dtype=float)


def effective_step(run: StudyRun) -> tuple[np.ndarray, np.ndarray]:
    """(steps, ||dW|| / ||dL/dW||) per measurement, geometric mean over layers: lr itself for plain SGD.

    ||dW|| = update_ratio * weight_norm; for an adaptive rule it is the step its per-weight scaling gives.
    """
    layers = sorted(k.split("/")[1] for k in run.history if k.startswith("update_ratio/layer_"))
    logs, steps = [], np.array([])
    for layer in layers:
        steps, ratio = run.series(f"update_ratio/{layer}")
        wnorm, gnorm = at_steps(run, f"weight_norm/{layer}", steps), at_steps(run, f"grad_norm/{layer}", steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs.append(np.log(ratio * wnorm / gnorm))  # (measurements,)
    if not logs:
        return np.array([]), np.array([])
    stacked = np.array(logs)  # (layers, measurements)
    ok = np.isfinite(stacked).all(axis=0)
    return steps[ok], np.exp(stacked[:, ok].mean(axis=0))


def step_decay(run: StudyRun, window: float) -> float:
    """Effective step late / early: means over the last and the first `window` share of the measurements."""
    _, eff = effective_step(run)
    if len(eff) < 2:
        return math.nan
    n = max(1, round(window * len(eff)))
    early, late = float(eff[:n].mean()), float(eff[-n:].mean())
    return late / early if early > 0 else math.nan


# --- tuning: each rule's lr, on validation numbers only ----------------------------------------------


@dataclass
class Tuning:
    """One rule's lr grid, each lr's score (mean epochs to the val target, mean best val loss), the pick."""

    rule: str
    grid: list[float]
    scores: dict[float, tuple[float, float]]
    pick: float | None

    @property
    def problem(self) -> str:
        """Why this rule counts as not tuned ("" when its pick is inside its grid)."""
        if self.pick is None:
            return f"no lr of {self.rule} reaches the val-loss target on every seed"
        if len(self.grid) < 2 or self.pick in (self.grid[0], self.grid[-1]):
            grid = ", ".join(map(fmt_lr, self.grid))
            return f"{self.rule}'s best lr {self.pick:g} is at the edge of its grid ({grid})"
        return ""


def fmt_lr(lr: float | None) -> str:
    return "-" if lr is None else f"{lr:g}"


def epochs_to_val(run: StudyRun, target: float) -> float:
    """Epochs to val loss <= target; inf for a run that did not finish or diverged (it rules its lr out)."""
    return epochs_to(per_epoch(run, "val/loss"), target) if run.ok and not run.diverged else math.inf


def tune(runs: list[StudyRun], name: str, target: float, all_seeds: list[str]) -> Tuning:
    """Pick `name`'s lr: fewest mean epochs to val loss <= target over every seed, ties to the lower best val loss."""
    mine = [r for r in runs if rule(r) == name]
    grid = sorted({lr_of(r) for r in mine})
    scores = {}
    for lr in grid:
        group = {r.seed: r for r in mine if lr_of(r) == lr}
        epochs = [epochs_to_val(group[s], target) if s in group else math.inf for s in all_seeds]
        best = [best_val_loss(group[s]) if s in group and group[s].ok else math.inf for s in all_seeds]
        scores[lr] = (float(np.mean(epochs)), float(np.mean(best)))
    eligible = [(score, lr) for lr, score in scores.items() if math.isfinite(score[0])]
    return Tuning(name, grid, scores, min(eligible)[1] if eligible else None)


def at_pick(runs: list[StudyRun], tuning: Tuning) -> list[StudyRun]:
    """The rule's runs at its picked lr, one per seed."""
    return [r for r in runs if rule(r) == tuning.rule and tuning.pick is not None and lr_of(r) == tuning.pick]


def untuned(check: Check, *tunings: Tuning) -> Check:
    """The check made undecided when a rule it compares is not tuned (no pick, or a pick at its grid's edge)."""
    problems = [t.problem for t in tunings if t.problem]
    return replace(check, outcome=UNDECIDED, why="tuning incomplete: " + "; ".join(problems)) if problems else check


# --- the claim, check by check -----------------------------------------------------------------------


def checks(runs: list[StudyRun], tunings: dict[str, Tuning], lim: dict[str, float]) -> list[Check]:
    """Epochs to the training-loss target against tuned sgd, then Adagrad's effective-step decay."""
    all_seeds = seeds(runs)

    def epochs(name: str) -> dict[str, float]:
        return per_seed(
            at_pick(runs, tunings[name]), lambda r: epochs_to(per_epoch(r, "train/loss"), lim["target_loss"]), all_seeds
        )

    def decay(name: str) -> dict[str, float]:
        return per_seed(at_pick(runs, tunings[name]), lambda r: step_decay(r, lim["step_window"]), all_seeds)

    out = []
    for name in FASTER:
        title = f"{name} reaches training loss <= {lim['target_loss']:g} in fewer epochs than sgd, both tuned"
        if name not in tunings or "sgd" not in tunings:
            out.append(
                missing(
                    title,
                    "fewer epochs than sgd on every seed",
                    f"this size runs no {name if name not in tunings else 'sgd'} case",
                )
            )
            continue
        lrs = f" (lr {fmt_lr(tunings[name].pick)} vs {fmt_lr(tunings['sgd'].pick)})"
        out.append(
            untuned(
                compare(title + lrs, epochs(name), "<", epochs("sgd"), limit_name="sgd's epochs"),
                tunings[name],
                tunings["sgd"],
            )
        )
    title = f"adagrad's effective step decays over training: late/early < {lim['decay_max']:g}"
    if "adagrad" not in tunings:
        return out + [missing(title, f"< {lim['decay_max']:g}", "this size runs no adagrad case")]
    ada = decay("adagrad")
    out.append(
        untuned(
            compare(title + f" (lr {fmt_lr(tunings['adagrad'].pick)})", ada, "<", lim["decay_max"], scale="log"),
            tunings["adagrad"],
        )
    )
    title = (
        f"adagrad's late/early ends below {lim['decay_share']:g} x the lower of rmsprop's and adam's "
        "(which forget old gradients)"
    )
    if not all(n in tunings for n in FORGETTING):
        return out + [missing(title, "both in the grid", "this size runs no rmsprop or adam case")]
    others = {n: decay(n) for n in FORGETTING}
    lower = {k: min(others["rmsprop"][k], others["adam"][k]) for k in ada}  # nan stays nan: missing
    out.append(
        untuned(
            compare(
                title,
                ada,
                "<",
                lower,
                times=lim["decay_share"],
                scale="log",
                limit_name="the lower of rmsprop's and adam's",
            ),
            tunings["adagrad"],
            *(tunings[n] for n in FORGETTING),
        )
    )
    return out


# --- table, figure, notes ----------------------------------------------------------------------------


def columns(lim: dict[str, float]) -> list[str]:
    return [
        "optimizer",
        "lr",
        "picked",
        "seed",
        f"epochs to val loss <= {lim['target_val_loss']:g}",
        "best val loss",
        f"epochs to train loss <= {lim['target_loss']:g}",
        f"epochs to val acc >= {lim['target_acc']:g}",
        "final train loss",
        "test acc",
        "step late / early",
        "verdict",
    ]


def row(run: StudyRun, lim: dict[str, float], picked: bool) -> dict:
    """One finished run's numbers (a column per measure of `columns`)."""
    cols = columns(lim)
    loss = per_epoch(run, "train/loss")
    return dict(
        zip(
            cols,
            [
                rule(run),
                lr_of(run),
                "picked" if picked else "",
                run.seed,
                epochs_to_val(run, lim["target_val_loss"]),
                best_val_loss(run),
                epochs_to(loss, lim["target_loss"]),
                epochs_to(per_epoch(run, "val/acc"), lim["target_acc"], below=False),
                float(loss[-1]) if len(loss) else math.nan,
                run.get("test/acc"),
                step_decay(run, lim["step_window"]),
                ",".join(run.verdict) or run.status,
            ],
        )
    )


def order_key(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mean, min and max over the runs' curves, cut to the shortest: (n,) each."""
    n = min(len(c) for c in curves)
    stacked = np.array([c[:n] for c in curves])  # (runs, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.exp(np.log(stacked).mean(axis=0)), stacked.min(axis=0), stacked.max(axis=0)


def step_curves(runs: list[StudyRun]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The effective step of each run at the steps all of them measured: (steps,), [(steps,)] per run."""
    measured = [dict(zip(*effective_step(r))) for r in runs]
    common = np.array(sorted(set.intersection(*(set(m) for m in measured)))) if measured else np.array([])
    return common, [np.array([m[s] for s in common]) for m in measured]


def figure(runs: list[StudyRun], tunings: dict[str, Tuning], lim: dict[str, float]) -> Figure:
    """Loss, val accuracy and effective step of each rule at its picked lr: mean over seeds, min..max shaded."""
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    loss_ax, acc_ax, step_ax = fig.subplots(1, 3)
    for name in sorted(tunings, key=order_key):
        done = [r for r in finished(at_pick(runs, tunings[name])) if not r.diverged]
        if not done:
            continue
        colour, label = f"C{order_key(name) % 10}", f"{name} (lr {fmt_lr(tunings[name].pick)})"
        for ax, key in ((loss_ax, "train/loss"), (acc_ax, "val/acc")):
            mean, lo, hi = band([per_epoch(r, key) for r in done])
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, color=colour, label=label)
            ax.fill_between(epochs, lo, hi, color=colour, alpha=0.2, lw=0)
        steps, curves = step_curves(done)
        if len(steps):
            mean, lo, hi = band(curves)
            step_ax.plot(steps, mean, color=colour, label=name)
            step_ax.fill_between(steps, lo, hi, color=colour, alpha=0.2, lw=0)
    loss_ax.axhline(lim["target_loss"], color="k", ls=":", lw=1, label=f"target {lim['target_loss']:g}")
    acc_ax.axhline(lim["target_acc"], color="k", ls=":", lw=1, label=f"{lim['target_acc']:g}")
    loss_ax.set(
        xlabel="epoch",
        ylabel="training loss (epoch mean; log)",
        yscale="log",
        title="loss at each rule's tuned lr (seeds: mean, min..max)",
    )
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy", ylim=(0, 1))
    step_ax.set(
        xlabel="step",
        ylabel="||dW|| / ||dL/dW|| (geo. mean over layers; log)",
        yscale="log",
        title="effective step size (= lr for SGD)",
    )
    for ax in (loss_ax, acc_ax, step_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


def tuning_rows(tunings: dict[str, Tuning], lim: dict[str, float]) -> list[dict]:
    """Each rule's grid with its scores and the pick, for tuning.csv."""
    return [
        {
            "optimizer": t.rule,
            "lr": lr,
            f"mean epochs to val loss <= {lim['target_val_loss']:g}": ep,
            "mean best val loss": best,
            "picked": lr == t.pick,
            "problem": t.problem if lr == t.pick else "",
        }
        for t in sorted(tunings.values(), key=lambda t: order_key(t.rule))
        for lr, (ep, best) in t.scores.items()
    ]


def metrics(tunings: dict[str, Tuning], per_run: list[dict], lim: dict[str, float]) -> dict:
    """Per rule at its pick: the lr, mean epochs to the training target, late/early (geometric), test acc."""
    cols = columns(lim)
    out = {}
    for name, t in tunings.items():
        if t.pick is None:
            continue
        mine = [r for r in per_run if r["optimizer"] == name and r["picked"]]
        out[f"tuned_lr/{name}"] = t.pick
        for key, col in (("epochs_to_loss", cols[6]), ("test_acc", "test acc"), ("final_loss", "final train loss")):
            out[f"{key}/{name}"] = float(np.mean([r[col] for r in mine])) if mine else math.nan
        decays = [r["step late / early"] for r in mine if r["step late / early"] > 0]
        out[f"step_decay/{name}"] = float(np.exp(np.mean(np.log(decays)))) if decays else math.nan
    return out


def notes(tunings: dict[str, Tuning], found: dict, lim: dict[str, float]) -> list[str]:
    picks = ", ".join(f"{t.rule} {fmt_lr(t.pick)}" for t in sorted(tunings.values(), key=lambda t: order_key(t.rule)))
    accs = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in found.items() if k.startswith("test_acc/"))
    return [
        (
            "- Each row folds the seeds of one rule and lr: mean (min..max). Tuning (validation data "
            "only, never test): "
            f"per rule, the lr of its grid with the fewest epochs to val loss <= {lim['target_val_loss']:g}, mean over "
            "the seeds (a seed that never gets there, failed or diverged rules the lr out), ties to the lower mean "
            f"best val loss; `picked` marks it. Tuned lrs: {picks}. A pick at the edge of its grid makes that rule's "
            "checks undecided (the optimum may lie outside); tuning.csv has every lr's score."
        ),
        (
            f"- Epochs to train loss <= {lim['target_loss']:g}: the first epoch whose mean training "
            "loss is at most the "
            "target (inf: never). The sigmoid net starts on a plateau near 2.3; this target marks leaving it. The "
            "checks compare each rule with tuned sgd seed by seed (seed s against seed s)."
        ),
        (
            "- Effective step = ||dW|| / ||dL/dW|| per layer (update_ratio x weight_norm / grad_norm "
            "at the same step), "
            "geometric mean over layers; it equals lr for plain SGD, which checks the measure. late / early: its mean "
            f"over the last {lim['step_window']:.0%} of the measurements over its mean over the first "
            f"{lim['step_window']:.0%}. Adagrad divides by the running sum of squared gradients, so each weight's "
            "step can only shrink; RMSprop and Adam divide by moving averages, so their steps grow back as the "
            "gradients shrink."
        ),
        (
            f"- Faster is not better: test accuracy at the tuned lrs (mean over seeds) is {accs or '-'}. "
            "Momentum at lr "
            "p (momentum 0.9) moves like SGD at p / (1 - 0.9) once its velocity builds up: it beats sgd here because "
            "its largest stable step is larger than sgd's, not because the two differ at small steps."
        ),
    ]


def findings(runs: list[StudyRun], cfg) -> Findings:
    lim = thresholds(cfg, *LIMITS)
    all_seeds = seeds(runs)
    tunings = {
        name: tune(runs, name, lim["target_val_loss"], all_seeds)
        for name in sorted({rule(r) for r in runs}, key=order_key)
    }
    picked = {id(r) for t in tunings.values() for r in at_pick(runs, t)}
    per_run = sorted(
        (row(r, lim, id(r) in picked) for r in finished(runs)),
        key=lambda x: (order_key(x["optimizer"]), x["lr"], int(x["seed"]) if x["seed"].isdigit() else 0),
    )
    cols, rows = seed_table(per_run, ["optimizer", "lr", "picked"], columns(lim))
    found = metrics(tunings, per_run, lim)
    return Findings(
        checks(runs, tunings, lim),
        cols,
        rows,
        found,
        {"optimizers.png": figure(runs, tunings, lim)},
        notes(tunings, found, lim),
        {"runs.csv": per_run, "tuning.csv": tuning_rows(tunings, lim)},
    )
