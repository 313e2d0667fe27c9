"""Study `learning_rate`: plain SGD over a log grid of learning rates: crawl, converge, diverge or kill ReLUs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from pipeline.studies.base import StudyReport, StudyRun, finished

CRAWL_DROP = 0.25  # a crawling run loses less than this share of its initial loss
CONVERGED_DROP = 0.9  # a converging run loses more than this share
DEAD_JUMP = 0.2  # a dead share this far above the best learning rate's counts as ReLUs killed


def lr_of(run: StudyRun) -> float:
    return float(run.values.get("optimizer.lr", math.nan))


def seed_of(run: StudyRun) -> str:
    return str(run.values.get("seed", "0"))


def finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def first_loss(run: StudyRun) -> float:
    """The first logged train/loss (mean over the first probe interval), nan when none was logged."""
    losses = finite(run.series("train/loss")[1])
    return float(losses[0]) if len(losses) else math.nan


def final_loss(run: StudyRun) -> float:
    """The last logged train/loss; inf for a diverged run (its loss went non-finite)."""
    if run.diverged:
        return math.inf
    losses = finite(run.series("train/loss")[1])
    return float(losses[-1]) if len(losses) else math.nan


def peak_dead(run: StudyRun) -> float:
    """The largest dead-ReLU share seen during training."""
    shares = finite(run.series("dead_relu/total")[1])
    return float(shares.max()) if len(shares) else math.nan


def reference_losses(runs: list[StudyRun]) -> dict[str, float]:
    """Initial loss per seed: the first logged loss of the smallest learning rate (it moves least before it)."""
    refs: dict[str, float] = {}
    for run in sorted(finished(runs), key=lr_of):
        loss = first_loss(run)
        if seed_of(run) not in refs and math.isfinite(loss):
            refs[seed_of(run)] = loss
    return refs


def loss_drop(run: StudyRun, reference: float) -> float:
    """Share of the initial loss gone by the end (1 = all of it, 0 = none, nan when diverged or unknown)."""
    final = final_loss(run)
    if not (math.isfinite(final) and math.isfinite(reference) and reference > 0):
        return math.nan
    return 1.0 - final / reference


@dataclass
class Point:
    """One learning rate, its seeds aggregated (medians over the seeds that did not diverge)."""

    lr: float
    final_loss: float
    drop: float
    dead: float
    diverged: bool  # most seeds diverged
    diverged_at: float  # earliest divergence step, nan when none diverged


def _median(values: list[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.median(vals)) if vals else math.nan


def points(runs: list[StudyRun]) -> list[Point]:
    """One Point per learning rate with a finished run, by learning rate."""
    refs = reference_losses(runs)
    by_lr: dict[float, list[StudyRun]] = {}
    for run in finished(runs):
        by_lr.setdefault(lr_of(run), []).append(run)
    out = []
    for lr in sorted(by_lr):
        group = by_lr[lr]
        alive = [r for r in group if not r.diverged]
        steps = [r.get("diverged_at_step") for r in group if r.diverged]
        out.append(Point(
            lr=lr,
            final_loss=_median([final_loss(r) for r in alive]) if alive else math.inf,
            drop=_median([loss_drop(r, refs.get(seed_of(r), math.nan)) for r in alive]),
            dead=_median([r.get("dead_relu/total") for r in alive]),
            diverged=2 * len(steps) > len(group),
            diverged_at=min(steps) if steps else math.nan,
        ))
    return out


def best(pts: list[Point]) -> Point | None:
    """The learning rate with the lowest final loss among those that did not diverge."""
    alive = [p for p in pts if not p.diverged and math.isfinite(p.final_loss)]
    return min(alive, key=lambda p: p.final_loss) if alive else None


def regime(p: Point, best_dead: float) -> str:
    """What this learning rate did: diverged, dead (ReLUs killed), crawl, converged or partial."""
    if p.diverged:
        return "diverged"
    if math.isfinite(p.dead) and math.isfinite(best_dead) and p.dead >= best_dead + DEAD_JUMP:
        return "dead"
    if math.isfinite(p.drop) and p.drop < CRAWL_DROP:
        return "crawl"
    if math.isfinite(p.drop) and p.drop > CONVERGED_DROP:
        return "converged"
    return "partial"


def checks(pts: list[Point]) -> dict[str, bool] | None:
    """The claim's three checks, None when the smallest, a good or the largest learning rate is missing."""
    top = best(pts)
    if len(pts) < 3 or top is None:
        return None
    low, high = pts[0], pts[-1]
    if not math.isfinite(low.drop) and not low.diverged:
        return None
    return {
        f"the smallest lr ({low.lr:g}) crawls: loss drops < {CRAWL_DROP:.0%}":
            not low.diverged and low.drop < CRAWL_DROP,
        f"an intermediate lr converges: the best lr ({top.lr:g}) is neither the smallest nor the largest and its "
        f"loss drops > {CONVERGED_DROP:.0%}": low.lr < top.lr < high.lr and top.drop > CONVERGED_DROP,
        f"the largest lr ({high.lr:g}) diverges or kills ReLUs (dead share >= best's + {DEAD_JUMP})":
            high.diverged or regime(high, top.dead) == "dead",
    }


def row(run: StudyRun, reference: float, best_dead: float) -> dict:
    steps = run.get("diverged_at_step")
    p = Point(lr_of(run), final_loss(run), loss_drop(run, reference), run.get("dead_relu/total"), run.diverged, steps)
    return {
        "lr": lr_of(run),
        "seed": seed_of(run),
        "final train loss": final_loss(run),
        "loss drop": p.drop,
        "val acc": run.get("val/acc"),
        "test acc": run.get("test/acc"),
        "dead share": run.get("dead_relu/total"),
        "peak dead share": peak_dead(run),
        "diverged at step": int(steps) if math.isfinite(steps) else None,
        "regime": regime(p, best_dead),
        "verdict": ",".join(run.verdict) or run.status,
    }


def _summary_axes(ax, pts: list[Point], reference: float) -> None:
    """Final loss (log-log) and dead share (right axis) against lr; diverged lrs marked on the top edge."""
    alive = [p for p in pts if not p.diverged and math.isfinite(p.final_loss) and p.final_loss > 0]
    ax.loglog([p.lr for p in alive], [p.final_loss for p in alive], "o-", color="C0", label="final train loss")
    if math.isfinite(reference):
        ax.axhline(reference, color="C0", ls=":", lw=1, label="initial loss")
    top_edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in lr, y in axes fraction
    for i, p in enumerate(q for q in pts if q.diverged):
        ax.plot([p.lr], [0.95], "x", color="red", ms=10, mew=2, transform=top_edge,
                label="diverged (NaN)" if i == 0 else None)
        step = f"step {int(p.diverged_at)}" if math.isfinite(p.diverged_at) else "diverged"
        ax.annotate(step, (p.lr, 0.95), xycoords=top_edge, xytext=(0, -14 - 10 * (i % 2)),  # neighbours staggered
                    textcoords="offset points", ha="center", fontsize=7, color="red")
    dead_ax = ax.twinx()
    dead = [p for p in pts if not p.diverged and math.isfinite(p.dead)]
    dead_ax.semilogx([p.lr for p in dead], [p.dead for p in dead], "s--", color="C1", label="dead ReLU share")
    dead_ax.set(ylim=(-0.02, 1.02), ylabel="dead ReLU share (final)")
    ax.set(xlabel="learning rate (log)", ylabel="final train loss (log)", title="where each learning rate ends up")
    ax.grid(alpha=0.3, which="both")
    handles = ax.get_legend_handles_labels()
    dead_handles = dead_ax.get_legend_handles_labels()
    ax.legend(handles[0] + dead_handles[0], handles[1] + dead_handles[1], fontsize=8, loc="center left")


def _curves_axes(ax, runs: list[StudyRun]) -> None:
    """train/loss against step, one line per lr (first seed), coloured from small (dark) to large (light)."""
    shown = sorted((r for r in finished(runs) if seed_of(r) == min(seed_of(q) for q in finished(runs))), key=lr_of)
    cmap = colormaps["viridis"]
    for i, run in enumerate(shown):
        steps, loss = run.series("train/loss")
        ok = np.isfinite(loss) & (loss > 0)
        colour = cmap(0.9 * i / max(1, len(shown) - 1))  # 0.9: the lightest yellow is unreadable
        label = f"lr={lr_of(run):g}" + (f" (diverged at step {int(run.get('diverged_at_step'))})"
                                         if run.diverged and math.isfinite(run.get("diverged_at_step")) else "")
        ax.semilogy(steps[ok], loss[ok], color=colour, label=label)
        if run.diverged and ok.any():
            ax.plot(steps[ok][-1], loss[ok][-1], "x", color="red", ms=8, mew=2)
    ax.set(xlabel="step", ylabel="train loss (log)", title="loss curves per learning rate")
    ax.grid(alpha=0.3, which="both")
    if shown:  # no runs, no legend (matplotlib warns on an empty one)
        ax.legend(fontsize=7, ncol=2)


def figure(runs: list[StudyRun], pts: list[Point], reference: float) -> Figure:
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    summary, curves = fig.subplots(1, 2)
    _summary_axes(summary, pts, reference)
    _curves_axes(curves, runs)
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    pts = points(runs)
    top = best(pts)
    best_dead = top.dead if top else math.nan
    refs = reference_losses(runs)
    reference = _median(list(refs.values()))
    columns = ["lr", "seed", "final train loss", "loss drop", "val acc", "test acc", "dead share", "peak dead share",
               "diverged at step", "regime", "verdict"]
    rows = [row(r, refs.get(seed_of(r), math.nan), best_dead) for r in sorted(finished(runs), key=lr_of)]
    metrics = {"initial_loss": reference}
    for p in pts:
        metrics.update({f"final_loss/lr_{p.lr:g}": p.final_loss, f"dead_share/lr_{p.lr:g}": p.dead,
                        f"diverged_at_step/lr_{p.lr:g}": p.diverged_at})
    figs = {"learning_rate.png": figure(runs, pts, reference)}
    verdicts = checks(pts)
    if verdicts is None:
        return StudyReport(columns, rows, "not enough finished learning rates to decide (need the smallest, a "
                           "converging one and the largest)", None, metrics, figs)
    metrics["best_lr"] = top.lr
    low, high = pts[0], pts[-1]
    killers = [p for p in pts if p.lr > top.lr and regime(p, best_dead) == "dead"]
    divergers = [p for p in pts if p.diverged]
    supported = all(verdicts.values())
    conclusion = (
        f"lr {low.lr:g} crawls from {reference:.2f} to {low.final_loss:.3g} ({_pct(low.drop)} drop); "
        f"lr {top.lr:g} is best, reaching {top.final_loss:.3g} ({_pct(top.drop)} drop); "
        + (f"dead ReLU share jumps from {best_dead:.2f} to {max(p.dead for p in killers):.2f} at lr "
           f"{', '.join(f'{p.lr:g}' for p in killers)}; " if killers else "no lr kills ReLUs without diverging; ")
        + (f"lr {', '.join(f'{p.lr:g}' for p in divergers)} diverge(s) (NaN{_first_step(divergers)}). "
           if divergers else "no lr diverges. ")
        + ("Supported." if supported else "Not supported: " + "; ".join(k for k, v in verdicts.items() if not v) + ".")
    )
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in verdicts.items()]
    notes.append(f"- lr {high.lr:g} regime: {regime(high, best_dead)}")
    return StudyReport(columns, rows, conclusion, supported, metrics, figs, notes)


def _pct(share: float) -> str:
    return f"{100 * share:.3g}%" if math.isfinite(share) else "n/a"


def _first_step(divergers: list[Point]) -> str:
    steps = [p.diverged_at for p in divergers if math.isfinite(p.diverged_at)]
    return f", first at step {int(min(steps))}" if steps else ""
