"""Study `batch_size`: full batch, mini-batches and pure SGD at one learning rate: per epoch, per second, noise."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, finished

NOISE_STEPS = 100  # gradient noise is compared over the first steps, where every run is near the same weights
SLOPE_TOLERANCE = 0.3  # "roughly 1/B": a fitted log-log slope within -1 +- this
BUDGET_WINDOW = 0.75  # the loss within a budget is averaged over its last quarter
MIN_RANK_CORRELATION = 0.9  # batch size against loss after the same epochs (5 sizes: one adjacent swap allowed)


def batch_of(run: StudyRun) -> float:
    """The batch size, inf for the full batch (train.batch_size=null)."""
    value = str(run.values.get("train.batch_size", "null"))
    return math.inf if value in ("null", "None") else float(value)


def label(batch: float) -> str:
    return "full batch" if math.isinf(batch) else f"B={int(batch)}"


def seed_of(run: StudyRun) -> str:
    return str(run.values.get("seed", "0"))


def paired(run: StudyRun, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, train/loss, key) at the steps where both were logged and are finite."""
    steps, loss = run.series("train/loss")
    other = dict(run.history.get(key, []))
    keep = [i for i, s in enumerate(steps) if s in other and math.isfinite(loss[i]) and math.isfinite(other[s])]
    return steps[keep], loss[keep], np.array([other[steps[i]] for i in keep], dtype=float)


def final_loss(run: StudyRun) -> float:
    """The last logged train/loss (the end of the last epoch)."""
    loss = run.series("train/loss")[1]
    loss = loss[np.isfinite(loss)]
    return float(loss[-1]) if len(loss) else math.nan


def steps_per_epoch(run: StudyRun) -> float:
    steps, epochs = run.series("epoch")
    return float(steps[-1] / epochs[-1]) if len(steps) and epochs[-1] > 0 else math.nan


def seconds_per_epoch(run: StudyRun) -> float:
    """Time in training steps alone (probes and logging excluded) per epoch."""
    epochs = run.get("epoch")
    return run.get("time/train_seconds") / epochs if epochs and epochs > 0 else math.nan


def train_seconds(run: StudyRun) -> float:
    times = paired(run, "time/train_seconds")[2]
    return float(times[-1]) if len(times) else math.nan


def loss_at_time(run: StudyRun, seconds: float) -> float:
    """Geometric-mean train/loss over the last quarter of the first `seconds` of training (nan outside the run)."""
    # averaged, not read off one point: pure SGD's 20-step means scatter by a factor of a few
    _, loss, times = paired(run, "time/train_seconds")
    ok = loss > 0
    loss, times = loss[ok], times[ok]
    if not len(times) or not math.isfinite(seconds) or not times[0] <= seconds <= times[-1]:
        return math.nan
    window = (times >= BUDGET_WINDOW * seconds) & (times <= seconds)
    if window.any():  # else a coarsely logged run (full batch): interpolate between its neighbours
        return float(np.exp(np.mean(np.log(loss[window]))))
    return float(np.exp(np.interp(seconds, times, np.log(loss))))


def ms_per_step(run: StudyRun) -> float:
    return 1e3 * seconds_per_epoch(run) / steps_per_epoch(run)


def early_noise(run: StudyRun, window: float) -> float:
    """Mean grad_noise/relative over the probe points in the first `window` steps (nan: full batch, none)."""
    steps, noise = run.series("grad_noise/relative")
    keep = (steps <= window) & np.isfinite(noise)
    return float(noise[keep].mean()) if keep.any() else math.nan


def noise_window(runs: list[StudyRun]) -> float:
    """NOISE_STEPS, or fewer when some run with the noise probe ends sooner (smoke size)."""
    ends = [r.series("grad_noise/relative")[0] for r in finished(runs)]
    return float(min([NOISE_STEPS] + [e.max() for e in ends if len(e)]))


def budget(runs: list[StudyRun]) -> float:
    """The common wall-time budget: the training time of the run that finishes first (all have data up to it)."""
    times = [train_seconds(r) for r in finished(runs) if not r.diverged]
    times = [t for t in times if math.isfinite(t)]
    return min(times) if times else math.nan


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1 (ties broken by order; the losses and sizes compared here do not tie)."""
    return np.argsort(np.argsort(np.array(values, dtype=float), kind="stable"), kind="stable").astype(float)


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rho of two equally long lists (inf ranks last), nan below 3 points."""
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def loglog_slope(batches: list[float], noise: list[float]) -> float:
    """Least-squares slope of log(noise) against log(B) (-1 for noise proportional to 1/B)."""
    pts = [(math.log(b), math.log(n)) for b, n in zip(batches, noise) if math.isfinite(b) and n > 0]
    if len(pts) < 2 or len({b for b, _ in pts}) < 2:
        return math.nan
    x, y = np.array(pts).T  # (points,) each
    return float(np.polyfit(x, y, 1)[0])


@dataclass
class Point:
    """One batch size, its seeds aggregated (medians)."""

    batch: float
    final_loss: float
    loss_at_budget: float
    seconds_per_epoch: float
    ms_per_step: float
    noise: float


def _median(values: list[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.median(vals)) if vals else math.nan


def points(runs: list[StudyRun], seconds: float, window: float) -> list[Point]:
    """One Point per batch size with a finished, non-diverged run, smallest batch first."""
    groups: dict[float, list[StudyRun]] = {}
    for run in finished(runs):
        if not run.diverged:
            groups.setdefault(batch_of(run), []).append(run)
    return [Point(b, _median([final_loss(r) for r in g]), _median([loss_at_time(r, seconds) for r in g]),
                  _median([seconds_per_epoch(r) for r in g]), _median([ms_per_step(r) for r in g]),
                  _median([early_noise(r, window) for r in g]))
            for b, g in sorted(groups.items())]


def checks(pts: list[Point]) -> dict[str, bool] | None:
    """The claim's checks; None when pure SGD, the full batch, a batch in between or two noise values are missing."""
    sizes = [p.batch for p in pts]
    mids = [p for p in pts if 1 < p.batch < math.inf and math.isfinite(p.loss_at_budget)]
    noisy = [p for p in pts if math.isfinite(p.noise)]
    if 1 not in sizes or math.inf not in sizes or not mids or len(noisy) < 2:
        return None
    sgd, full = pts[0], pts[-1]
    if not (math.isfinite(sgd.loss_at_budget) and math.isfinite(full.loss_at_budget)):
        return None
    best_mid = min(mids, key=lambda p: p.loss_at_budget)
    slope = loglog_slope([p.batch for p in noisy], [p.noise for p in noisy])
    rho = rank_correlation(sizes, [p.final_loss for p in pts])
    return {
        f"smaller batches end lower after the same epochs (rank correlation of B and final loss {rho:.2f} >= "
        f"{MIN_RANK_CORRELATION})": rho >= MIN_RANK_CORRELATION,
        "pure SGD has the slowest epochs in wall time": sgd.seconds_per_epoch == max(p.seconds_per_epoch for p in pts),
        f"within the same wall time a mid-size batch ({label(best_mid.batch)}) gets lower than both extremes":
            best_mid.loss_at_budget < sgd.loss_at_budget and best_mid.loss_at_budget < full.loss_at_budget,
        "gradient noise falls with every larger batch": all(a.noise > b.noise for a, b in zip(noisy, noisy[1:])),
        f"gradient noise ~ 1/B (log-log slope {slope:.2f} within -1 +- {SLOPE_TOLERANCE})":
            abs(slope + 1) <= SLOPE_TOLERANCE,
    }


def row(run: StudyRun, seconds: float, window: float) -> dict:
    noise = early_noise(run, window)
    return {
        "batch": label(batch_of(run)),
        "seed": seed_of(run),
        "steps / epoch": steps_per_epoch(run),
        "final train loss": final_loss(run),
        "val loss": run.get("val/loss"),
        "test acc": run.get("test/acc"),
        "train ms / epoch": 1e3 * seconds_per_epoch(run),
        "ms / step": ms_per_step(run),
        f"loss near {1e3 * seconds:.0f} ms": loss_at_time(run, seconds),
        "grad noise (early)": noise,
        "noise x B": noise * batch_of(run) if math.isfinite(batch_of(run)) else math.nan,
        "verdict": ",".join(run.verdict) or run.status,
    }


def _shown(runs: list[StudyRun]) -> list[StudyRun]:
    """The first seed's finished runs, smallest batch first (one curve per batch size)."""
    done = finished(runs)
    first = min((seed_of(r) for r in done), default="0")
    return sorted((r for r in done if seed_of(r) == first), key=batch_of)


def _curves(epoch_ax, time_ax, runs: list[StudyRun], seconds: float) -> None:
    """train/loss against (fractional) epoch and against seconds of training, one line per batch size."""
    for i, run in enumerate(_shown(runs)):
        steps, loss, times = paired(run, "time/train_seconds")
        ok = loss > 0
        per_epoch = steps_per_epoch(run)
        kw = {"color": f"C{i}", "label": label(batch_of(run)), "lw": 1.2}
        if math.isfinite(per_epoch):
            epoch_ax.semilogy(steps[ok] / per_epoch, loss[ok], **kw)
        time_ax.loglog(times[ok], loss[ok], **kw)
    if math.isfinite(seconds) and seconds > 0:
        time_ax.axvspan(BUDGET_WINDOW * seconds, seconds, color="k", alpha=0.12,
                        label=f"common budget {1e3 * seconds:.0f} ms (loss averaged here)")
    epoch_ax.set(xlabel="epoch", ylabel="train loss (log)", title="loss per epoch (same lr, same epochs)")
    time_ax.set(xlabel="seconds in training steps (log)", ylabel="train loss (log)", title="loss per wall time")


def _noise(ax, pts: list[Point], window: float) -> None:
    """Early gradient noise against batch size (log-log) beside a 1/B line through their geometric mean."""
    noisy = [p for p in pts if math.isfinite(p.noise) and p.noise > 0]
    if noisy:
        b = np.array([p.batch for p in noisy])  # (sizes,)
        n = np.array([p.noise for p in noisy])  # (sizes,)
        scale = float(np.exp(np.mean(np.log(n * b))))  # c in c/B, fitted in log space
        grid = np.geomspace(b.min(), b.max(), 50)  # (50,)
        ax.loglog(grid, scale / grid, "k--", lw=1, label="c / B")
        ax.loglog(b, n, "o-", color="C3", label=f"measured (mean over steps <= {window:.0f})")
    ax.set(xlabel="batch size B (log)", ylabel="E||g_B - g||^2 / ||g||^2 (log)",
           title="mini-batch gradient noise (full batch: 0)")


def figure(runs: list[StudyRun], pts: list[Point], seconds: float, window: float) -> Figure:
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    epoch_ax, time_ax, noise_ax = fig.subplots(1, 3)
    _curves(epoch_ax, time_ax, runs, seconds)
    _noise(noise_ax, pts, window)
    for ax in (epoch_ax, time_ax, noise_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # no runs, no legend (matplotlib warns on an empty one)
            ax.legend(fontsize=8)
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    seconds, window = budget(runs), noise_window(runs)
    pts = points(runs, seconds, window)
    columns = ["batch", "seed", "steps / epoch", "final train loss", "val loss", "test acc", "train ms / epoch",
               "ms / step", f"loss near {1e3 * seconds:.0f} ms", "grad noise (early)", "noise x B", "verdict"]
    rows = [row(r, seconds, window) for r in sorted(finished(runs), key=lambda r: (batch_of(r), seed_of(r)))]
    metrics = {"budget_seconds": seconds}
    for p in pts:
        name = "full" if math.isinf(p.batch) else str(int(p.batch))
        metrics.update({f"final_loss/batch_{name}": p.final_loss, f"loss_at_budget/batch_{name}": p.loss_at_budget,
                        f"seconds_per_epoch/batch_{name}": p.seconds_per_epoch, f"grad_noise/batch_{name}": p.noise})
    noisy = [p for p in pts if math.isfinite(p.noise)]
    metrics["grad_noise_slope"] = loglog_slope([p.batch for p in noisy], [p.noise for p in noisy])
    figs = {"batch_size.png": figure(runs, pts, seconds, window)}
    verdicts = checks(pts)
    if verdicts is None:
        return StudyReport(columns, rows, "not enough finished batch sizes to decide (need pure SGD, the full batch "
                           "and one in between with a loss within the common budget, and two with gradient noise)",
                           None, metrics, figs)
    supported = all(verdicts.values())
    conclusion = _conclusion(runs, pts, seconds, metrics["grad_noise_slope"], verdicts)
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in verdicts.items()]
    notes.append(f"- gradient noise: mean of grad_noise/relative over the probe points in the first {window:.0f} "
                 "steps (4 batches each), where every batch size is near the same weights; later the full "
                 "gradient shrinks as training converges and the relative noise grows (see the runs' history). "
                 "Sampling without replacement scales it by (N-B)/(N-1), a little below 1/B for large B.")
    notes.append("- wall time is time/train_seconds (training steps only); it depends on the machine's load.")
    return StudyReport(columns, rows, conclusion, supported, metrics, figs, notes)


def _conclusion(runs: list[StudyRun], pts: list[Point], seconds: float, slope: float,
                verdicts: dict[str, bool]) -> str:
    """The deciding numbers in one line; when the per-second check fails, what the step costs say about it."""
    done = finished(runs)
    lr = _median([r.get("lr") for r in done])  # the (constant) learning rate every run logged
    epochs = max((r.get("epoch") for r in done if math.isfinite(r.get("epoch"))), default=math.nan)
    sgd, full = pts[0], pts[-1]
    mids = [p for p in pts if 1 < p.batch < math.inf]
    failed = [k for k, v in verdicts.items() if not v]
    why = ""
    if any(k.startswith("within the same wall time") for k in failed):
        cheapest = min(mids, key=lambda p: p.ms_per_step)
        why = (f" (a pure-SGD step costs {sgd.ms_per_step:.3f} ms, a {label(cheapest.batch)} step "
               f"{cheapest.ms_per_step:.3f} ms: per-step overhead dominates both, and at one learning rate a step "
               "makes about the same expected progress whatever B, so the bigger batch's extra examples only "
               "smooth its steps)")
    return (
        f"after {epochs:.0f} epochs at lr {lr:g}, train loss "
        + ", ".join(f"{label(p.batch)} {p.final_loss:.3g}" for p in pts)
        + f"; within {1e3 * seconds:.0f} ms of training "
        + ", ".join(f"{label(p.batch)} {p.loss_at_budget:.3g}" for p in pts)
        + f" (pure SGD {1e3 * sgd.seconds_per_epoch:.0f} ms/epoch vs full batch {1e3 * full.seconds_per_epoch:.1f})"
        + "; early gradient noise "
        + ", ".join(f"{label(p.batch)} {p.noise:.3g}" for p in pts if math.isfinite(p.noise))
        + f", log-log slope {slope:.2f}. "
        + ("Supported." if not failed else "Not supported: " + "; ".join(failed) + why + ".")
    )
