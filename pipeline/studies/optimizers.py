"""Study `optimizers`: seven update rules at their conventional learning rates on one problem."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, finished

ORDER = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")
FASTER = ("momentum", "rmsprop", "adam")  # the claim: each reaches the target loss before sgd
DECAYS = 0.5  # Adagrad's effective step must fall below this share of its early value
EDGE = 0.1  # share of the measurements that make up "early" and "late"
TARGET_LOSS, TARGET_ACC = 0.5, 0.9  # defaults when the study config does not set them


def name(run: StudyRun) -> str:
    return str(run.values.get("optimizer"))


def per_epoch(run: StudyRun, key: str) -> np.ndarray:
    """A metric's value at each epoch's last step, in epoch order: (epochs,)."""
    epoch_steps = {s for s, _ in run.history.get("epoch", [])}
    return np.array([v for s, v in run.history.get(key, []) if s in epoch_steps], dtype=float)


def epochs_to(values: np.ndarray, target: float, below: bool) -> float:
    """First epoch (1-based) whose value reaches the target; inf when none does."""
    hit = np.flatnonzero(values <= target if below else values >= target)
    return float(hit[0] + 1) if len(hit) else math.inf


def at_steps(run: StudyRun, key: str, steps: np.ndarray) -> np.ndarray:
    """The metric's values at `steps` (NaN where it was not logged; weights are also logged at step 0)."""
    values = dict(run.history.get(key, []))
    return np.array([values.get(int(t), math.nan) for t in steps], dtype=float)


def effective_step(run: StudyRun) -> tuple[np.ndarray, np.ndarray]:
    """(steps, ||dW|| / ||g||) per measurement, geometric mean over layers: lr itself for plain SGD.

    ||dW|| = update_ratio * weight_norm; for an adaptive rule it is the step its per-weight scaling gives.
    """
    layers = sorted(k.split("/")[1] for k in run.history if k.startswith("update_ratio/layer_"))
    logs, steps = [], None
    for layer in layers:
        s, ratio = run.series(f"update_ratio/{layer}")
        wnorm, gnorm = at_steps(run, f"weight_norm/{layer}", s), at_steps(run, f"grad_norm/{layer}", s)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs.append(np.log(ratio * wnorm / gnorm))  # (measurements,)
        steps = s
    if not logs:
        return np.array([]), np.array([])
    stacked = np.array(logs)  # (layers, measurements)
    ok = np.isfinite(stacked).all(axis=0)
    return steps[ok], np.exp(stacked[:, ok].mean(axis=0))


def step_decay(run: StudyRun) -> tuple[float, float, float]:
    """(early, late, late / early) effective step: means of the first and last EDGE of the measurements."""
    _, eff = effective_step(run)
    if len(eff) < 2:
        return math.nan, math.nan, math.nan
    n = max(1, int(round(EDGE * len(eff))))
    early, late = float(eff[:n].mean()), float(eff[-n:].mean())
    return early, late, late / early if early > 0 else math.nan


def row(run: StudyRun, target_loss: float, target_acc: float) -> dict:
    loss = per_epoch(run, "train/loss")
    early, late, decay = step_decay(run)
    return {
        "optimizer": name(run),
        "lr": run.get("lr"),
        "seed": run.values.get("seed", "0"),
        f"epochs to loss <= {target_loss:g}": epochs_to(loss, target_loss, below=True),
        f"epochs to val acc >= {target_acc:g}": epochs_to(per_epoch(run, "val/acc"), target_acc, below=False),
        "final train loss": float(loss[-1]) if len(loss) else math.nan,
        "test acc": run.get("test/acc"),
        "step early": early,
        "step late": late,
        "late / early": decay,
        "verdict": ",".join(run.verdict) or run.status,
    }


def mean_by(rows: list[dict], column: str) -> dict[str, float]:
    """Per optimizer, the mean of a column over seeds (inf stays inf: a seed that never got there)."""
    out = {}
    for opt in ORDER:
        vals = [r[column] for r in rows if r["optimizer"] == opt and not math.isnan(r[column])]
        if vals:
            out[opt] = float(np.mean(vals))
    return out


def figure(runs: list[StudyRun], target_loss: float, target_acc: float) -> Figure:
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    loss_ax, acc_ax, step_ax = fig.subplots(1, 3)
    done = finished(runs)
    for run in sorted(done, key=lambda r: ORDER.index(name(r)) if name(r) in ORDER else 99):
        opt = name(run)
        colour = f"C{ORDER.index(opt)}" if opt in ORDER else "C9"
        first = run is next(r for r in done if name(r) == opt)  # one legend entry per optimizer
        loss = per_epoch(run, "train/loss")
        pos = np.isfinite(loss) & (loss > 0)  # a log axis cannot show 0 or inf
        epochs = np.arange(1, len(loss) + 1)
        loss_ax.semilogy(epochs[pos], loss[pos], color=colour, label=f"{opt} (lr {run.get('lr'):g})" if first
                         else None)
        acc = per_epoch(run, "val/acc")
        acc_ax.plot(np.arange(1, len(acc) + 1), acc, color=colour, label=opt if first else None)
        steps, eff = effective_step(run)
        step_ax.semilogy(steps, eff, color=colour, label=opt if first else None)
    loss_ax.axhline(target_loss, color="k", ls=":", lw=1, label=f"target {target_loss:g}")
    acc_ax.axhline(target_acc, color="k", ls=":", lw=1, label=f"target {target_acc:g}")
    loss_ax.set(xlabel="epoch", ylabel="training loss (epoch mean)", title="loss curves")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="accuracy", ylim=(0, 1))
    if not done:
        step_ax.plot([], [], label="no finished run")
    step_ax.set(xlabel="step", ylabel="||dW|| / ||dL/dW|| (geo. mean over layers)",
                title="effective step size (= lr for SGD)")
    for ax in (loss_ax, acc_ax, step_ax):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)  # every panel has its target line or a run: never an empty legend
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    study = cfg.get("study") if cfg is not None else None
    target_loss = float((study or {}).get("target_loss", TARGET_LOSS) or TARGET_LOSS)
    target_acc = float((study or {}).get("target_acc", TARGET_ACC) or TARGET_ACC)
    loss_col, acc_col = f"epochs to loss <= {target_loss:g}", f"epochs to val acc >= {target_acc:g}"
    rows = [row(r, target_loss, target_acc) for r in runs if r.ok]
    columns = ["optimizer", "lr", "seed", loss_col, acc_col, "final train loss", "test acc", "step early",
               "step late", "late / early", "verdict"]
    to_loss, to_acc = mean_by(rows, loss_col), mean_by(rows, acc_col)
    final, test, decay = mean_by(rows, "final train loss"), mean_by(rows, "test acc"), mean_by(rows, "late / early")
    metrics = {f"{key}/{opt}": table[opt] for key, table in (("epochs_to_loss", to_loss), ("epochs_to_acc", to_acc),
               ("final_loss", final), ("test_acc", test), ("step_decay", decay)) for opt in table}
    figs = {"optimizers.png": figure(runs, target_loss, target_acc)}
    needed = ("sgd", *FASTER, "adagrad")
    if any(opt not in to_loss for opt in needed) or any(opt not in decay for opt in ("adagrad", "rmsprop", "adam")):
        return StudyReport(columns, rows, "not enough finished runs to decide (needs sgd, momentum, rmsprop, adam "
                           "and adagrad)", None, metrics, figs)
    checks = {f"{opt} reaches loss {target_loss:g} in fewer epochs than sgd": to_loss[opt] < to_loss["sgd"]
              for opt in FASTER}
    checks[f"adagrad's effective step decays (late / early < {DECAYS}) and more than rmsprop's and adam's"] = (
        decay["adagrad"] < DECAYS and decay["adagrad"] < min(decay["rmsprop"], decay["adam"]))
    supported = all(checks.values())

    def ep(opt: str) -> str:
        return "never" if math.isinf(to_loss[opt]) else f"{to_loss[opt]:.0f}"

    epochs = int(max((len(per_epoch(r, "train/loss")) for r in finished(runs)), default=0))
    conclusion = (f"epochs to training loss <= {target_loss:g} (of {epochs}): "
                  + ", ".join(f"{opt} {ep(opt)}" for opt in ORDER if opt in to_loss)
                  + f"; final loss sgd {final['sgd']:.3f} vs momentum {final['momentum']:.3f}, rmsprop "
                    f"{final['rmsprop']:.3f}, adam {final['adam']:.3f}; effective step late/early: adagrad "
                    f"{decay['adagrad']:.2f}, rmsprop {decay['rmsprop']:.2f}, adam {decay['adam']:.2f}. "
                  + ("Supported." if supported else
                     "Not supported: " + "; ".join(k for k, v in checks.items() if not v) + "."))
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in checks.items()]
    notes += ["", "Learning rates (each option's default in conf/optimizer/): "
              + ", ".join(f"{r['optimizer']} {r['lr']:g}" for r in rows if r["seed"] in ("0", 0)) + ".",
              "Effective step = ||dW|| / ||dL/dW|| per layer (update_ratio x weight_norm / grad_norm at the same "
              "step), geometric mean over layers; it equals lr for plain SGD, which checks the measure. Momentum "
              "at lr 0.01 with momentum 0.9 moves like SGD at 0.01 / (1 - 0.9) = 0.1 once its velocity builds "
              "up, so at the conventional rates it is not a faster SGD but the same one, smoothed."]
    return StudyReport(columns, rows, conclusion, supported, metrics, figs, notes)
