"""Study `learning_rate`: plain SGD over a log grid of learning rates: crawl, converge, diverge or kill ReLUs.

Every part of the claim is decided per seed: the smallest lr's loss drop (crawl), the lr that validates best
(chosen on val/acc, never on test) and how far its loss drops (converge), and how the too-large lrs fail
(diverge to NaN, or a dead ReLU share that jumps above the best lr's).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from pipeline.analysis.diagnosis import NOT_LEARNING_RULE
from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import thresholds

LIMITS = ("crawl_drop", "converged_drop", "dead_jump")


def lr_of(run: StudyRun) -> float:
    return float(run.values.get("optimizer.lr", math.nan))


def lrs(runs: list[StudyRun]) -> list[float]:
    """The grid's learning rates, ascending (whether or not their runs finished)."""
    return sorted({lr_of(r) for r in runs})


def at(runs: list[StudyRun], lr: float, seed: str) -> StudyRun | None:
    """The run of one learning rate and seed (None when the grid has none)."""
    return next((r for r in runs if lr_of(r) == lr and r.seed == seed), None)


def loss_drop(run: StudyRun) -> float:
    """Share of the initial training loss gone by the end: 1 - final / initial, both over the whole training set.

    nan for a diverged run (it has no final loss: its loss went non-finite) or one without the numbers.
    """
    start, end = run.get("train/initial_loss"), run.get("train/final_loss")
    if run.diverged or not (math.isfinite(start) and math.isfinite(end) and start > 0):
        return math.nan
    return 1.0 - end / start


def dead_share(run: StudyRun) -> float:
    """The last measured dead ReLU share (a diverged run: the last one before it stopped)."""
    _, share = run.series("dead_relu/total")
    share = share[np.isfinite(share)]
    return float(share[-1]) if len(share) else run.get("dead_relu/total")


def validation_key(run: StudyRun) -> tuple[float, float]:
    """What "best" means: the highest final val/acc, ties broken by the lower final val/loss."""
    acc, loss = run.get("val/acc"), run.get("val/loss")
    return (acc if math.isfinite(acc) else -math.inf, -loss if math.isfinite(loss) else -math.inf)


def best_run(runs: list[StudyRun], seed: str) -> StudyRun | None:
    """The seed's lr that validates best among its finished runs that did not diverge (None: no candidate).

    Chosen on the validation split only: the test split never picks anything.
    """
    candidates = [r for r in finished(runs) if r.seed == seed and not r.diverged and math.isfinite(r.get("val/acc"))]
    return max(candidates, key=validation_key, default=None)


def killed(run: StudyRun, best: StudyRun, jump: float) -> bool:
    """ReLUs killed: the run's final dead share is at least `jump` above the best lr's of the same seed."""
    dead, best_dead = dead_share(run), dead_share(best)
    return math.isfinite(dead) and math.isfinite(best_dead) and dead >= best_dead + jump


def regime(run: StudyRun, best: StudyRun | None, lim: dict[str, float]) -> str:
    """What the run did: diverged, dead (ReLUs killed and not learning), crawl, converged or partial."""
    if run.diverged:
        return "diverged"
    if best is not None and killed(run, best, lim["dead_jump"]) and not run.learned:
        return "dead"
    drop = loss_drop(run)
    if math.isfinite(drop) and drop < lim["crawl_drop"]:
        return "crawl"
    if math.isfinite(drop) and drop > lim["converged_drop"]:
        return "converged"
    return "partial"


# --- the claim, check by check -----------------------------------------------------------------------


def crawl_check(runs: list[StudyRun], lim: dict[str, float]) -> Check:
    """The smallest lr crawls: its training loss drops by less than crawl_drop of its initial value, per seed."""
    low = lrs(runs)[0]
    mine = {s: at(runs, low, s) for s in seeds(runs)}
    drops = {seed_label(s): loss_drop(r) if r is not None and r.ok else math.nan for s, r in mine.items()}
    check = compare(
        f"too small an lr crawls: the smallest lr ({low:g}) loses less than {lim['crawl_drop']:.0%} "
        "of its initial training loss",
        drops,
        "<",
        lim["crawl_drop"],
    )
    gone = [seed_label(s) for s, r in mine.items() if r is not None and r.ok and r.diverged]
    if gone:  # a diverged run has no final loss: say why rather than "missing"
        check.why = f"diverged (not a crawl): {', '.join(gone)}"
    return check


def best_checks(runs: list[StudyRun], best: dict[str, StudyRun | None], lim: dict[str, float]) -> list[Check]:
    """A good lr converges: the lr that validates best is inside the grid, its loss drops far, and it learns."""
    grid = lrs(runs)
    low, high = grid[0], grid[-1]
    chosen = {seed_label(s): (lr_of(b) if b is not None else None) for s, b in best.items()}
    shown = ", ".join(f"{k}: {'-' if v is None else f'{v:g}'}" for k, v in chosen.items())
    inside = every(
        f"a good lr lies between the extremes: the lr with the best val acc per seed is neither the "
        f"smallest ({low:g}) nor the largest ({high:g})",
        {k: (low < v < high if v is not None else None) for k, v in chosen.items()},
        measured=shown,
        expected="inside the grid on every seed",
    )
    drops = {seed_label(s): loss_drop(b) if b is not None else math.nan for s, b in best.items()}
    converges = compare(
        f"a good lr converges: the best lr on validation loses more than "
        f"{lim['converged_drop']:.0%} of its initial training loss",
        drops,
        ">",
        lim["converged_drop"],
    )
    accs = ", ".join(f"{b.get('test/acc'):.2f}" if b is not None else "-" for b in best.values())
    learns = every(
        "... and learns (not `not_learning`)",
        {seed_label(s): (b.learned if b is not None else None) for s, b in best.items()},
        measured=f"test acc {accs}",
        expected="learns on every seed",
    )
    return [inside, converges, learns]


def failure(run: StudyRun | None, best: StudyRun | None, jump: float) -> bool | None:
    """A too-large lr's failure explained: diverged, or ReLUs killed and not learning (None: a run missing)."""
    if run is None or not run.ok:
        return None
    if run.diverged:
        return True
    return None if best is None else killed(run, best, jump) and not run.learned


def outcome_of(run: StudyRun | None, best: StudyRun | None, jump: float) -> str:
    """How a run ended, in words: missing, diverged, ReLUs killed, learns, or did not learn otherwise."""
    if run is None or not run.ok:
        return "missing"
    if run.diverged:
        return "diverged"
    if failure(run, best, jump):
        return "ReLUs killed"
    return "learns" if run.learned else "not learning, ReLUs alive"


def counted(texts) -> str:
    """Distinct texts in their first order, each with its count: "diverged x2, ReLUs killed x1"."""
    texts = list(texts)
    return ", ".join(f"{t} x{texts.count(t)}" for t in dict.fromkeys(texts))


def too_large_checks(runs: list[StudyRun], best: dict[str, StudyRun | None], lim: dict[str, float]) -> list[Check]:
    """Too large an lr fails by diverging or killing ReLUs: at the largest lr, and every failing lr above the best."""
    jump = lim["dead_jump"]
    high = lrs(runs)[-1]
    top = {s: at(runs, high, s) for s in seeds(runs)}
    how = counted(outcome_of(r, best[s], jump) for s, r in top.items())
    largest = every(
        f"too large an lr fails: the largest lr ({high:g}) diverges to NaN, or its dead ReLU share "
        f"ends >= the best lr's + {jump:g} and it does not learn",
        {seed_label(s): failure(r, best[s], jump) for s, r in top.items()},
        measured=how,
        expected="on every seed",
    )
    flags: dict[str, bool | None] = {}
    failing: list[str] = []
    for s in seeds(runs):
        b = best[s]
        if b is None:
            flags[seed_label(s)] = None
            continue
        above = [r for r in runs if r.seed == s and lr_of(r) > lr_of(b)]
        bad = [r for r in above if not r.ok or r.diverged or not r.learned]
        flags[seed_label(s)] = None if any(not r.ok for r in bad) else all(failure(r, b, jump) for r in bad)
        failing += [f"lr {lr_of(r):g} {outcome_of(r, b, jump)}" for r in bad]
    mechanism = every(
        "every lr above the best that does not learn failed by one of the two: diverged, or its "
        f"dead ReLU share jumped by >= {jump:g}",
        flags,
        measured=counted(sorted(failing, key=lambda t: float(t.split()[1]))) or "none failed",
        expected="on every seed",
    )
    return [largest, mechanism]


def checks(runs: list[StudyRun], lim: dict[str, float]) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/learning_rate.yaml)."""
    if len(lrs(runs)) < 3:
        return [
            missing(
                "crawl, converge, diverge or kill",
                "at least three learning rates",
                f"this size runs {len(lrs(runs))} learning rate(s)",
            )
        ]
    best = {s: best_run(runs, s) for s in seeds(runs)}
    return [crawl_check(runs, lim), *best_checks(runs, best, lim), *too_large_checks(runs, best, lim)]


# --- table, figure, metrics --------------------------------------------------------------------------


def row(run: StudyRun, best: StudyRun | None, lim: dict[str, float]) -> dict:
    steps = run.get("diverged_at_step")
    return {
        "lr": lr_of(run),
        "seed": run.seed,
        "final train loss": run.get("train/final_loss") if not run.diverged else math.nan,
        "loss drop": loss_drop(run),
        "val acc": run.get("val/acc") if not run.diverged else math.nan,
        "test acc": run.get("test/acc"),
        "dead share": dead_share(run) if not run.diverged else math.nan,  # NaN units are not counted dead
        "diverged at step": steps,  # nan: did not diverge
        "best on val": best is not None and run is best,
        "regime": regime(run, best, lim),
        "verdict": ",".join(run.verdict) or run.status,
    }


COLUMNS = [
    "lr",
    "seed",
    "final train loss",
    "loss drop",
    "val acc",
    "test acc",
    "dead share",
    "diverged at step",
    "best on val",
    "regime",
    "verdict",
]


def per_lr(runs: list[StudyRun], measure) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray]:
    """(lrs, mean, min, max) of a measure over the seeds that finished without diverging, per lr."""
    out: list[tuple[float, float, float, float]] = []
    for lr in lrs(runs):
        vals = [measure(r) for r in finished(runs) if lr_of(r) == lr and not r.diverged]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            out.append((lr, float(np.mean(vals)), min(vals), max(vals)))
    if not out:
        return [], np.array([]), np.array([]), np.array([])
    x, mean, lo, hi = zip(*out)
    return list(x), np.array(mean), np.array(lo), np.array(hi)


def _summary_axes(ax, runs: list[StudyRun], best: dict[str, StudyRun | None]) -> None:
    """Final loss (log-log) and dead share (right axis) against lr, mean over seeds with their min..max;
    diverged lrs marked on the top edge with how many seeds diverged; the best lr on validation per seed."""
    x, mean, lo, hi = per_lr(runs, lambda r: r.get("train/final_loss"))
    pos = mean > 0
    ax.loglog(np.array(x)[pos], mean[pos], "o-", color="C0", label="final train loss (seeds: mean, min..max)")
    ax.fill_between(np.array(x)[pos], lo[pos], hi[pos], color="C0", alpha=0.2)
    starts = [r.get("train/initial_loss") for r in finished(runs) if math.isfinite(r.get("train/initial_loss"))]
    if starts:
        ax.axhline(float(np.mean(starts)), color="C0", ls=":", lw=1, label="initial loss (mean)")
    top_edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in lr, y in axes fraction
    for i, lr in enumerate(lr for lr in lrs(runs) if any(r.diverged for r in finished(runs) if lr_of(r) == lr)):
        mine = [r for r in finished(runs) if lr_of(r) == lr]
        ax.plot(
            [lr], [0.95], "x", color="red", ms=10, mew=2, transform=top_edge, label="diverged (NaN)" if i == 0 else None
        )
        ax.annotate(
            f"{sum(r.diverged for r in mine)} of {len(mine)} seeds",
            (lr, 0.95),
            xycoords=top_edge,
            xytext=(0, -14 - 10 * (i % 2)),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            color="red",
        )  # neighbours staggered
    chosen = [lr_of(b) for b in best.values() if b is not None]
    for i, lr in enumerate(sorted(set(chosen))):
        ax.axvline(lr, color="green", ls="--", lw=1, alpha=0.6, label="best on validation" if i == 0 else None)
    dead_ax = ax.twinx()
    x, mean, lo, hi = per_lr(runs, dead_share)
    dead_ax.semilogx(x, mean, "s--", color="C1", label="dead ReLU share (final)")
    if x:
        dead_ax.fill_between(x, lo, hi, color="C1", alpha=0.2)
    dead_ax.set(ylim=(-0.02, 1.02), ylabel="dead ReLU share (final)")
    ax.set(xlabel="learning rate (log)", ylabel="final train loss (log)", title="where each learning rate ends up")
    ax.grid(alpha=0.3, which="both")
    handles = ax.get_legend_handles_labels()
    dead_handles = dead_ax.get_legend_handles_labels()
    ax.legend(handles[0] + dead_handles[0], handles[1] + dead_handles[1], fontsize=7, loc="center left")


def _curves_axes(ax, runs: list[StudyRun]) -> None:
    """train/loss against step, one line per lr (first seed), coloured from small (dark) to large (light)."""
    done = finished(runs)
    first = min((r.seed for r in done), default=None)
    shown = sorted((r for r in done if r.seed == first), key=lr_of)
    cmap = colormaps["viridis"]
    for i, run in enumerate(shown):
        steps, loss = run.series("train/loss")
        ok = np.isfinite(loss) & (loss > 0)
        colour = cmap(0.9 * i / max(1, len(shown) - 1))  # 0.9: the lightest yellow is unreadable
        text = f"lr={lr_of(run):g}" + (
            f" (diverged at step {int(run.get('diverged_at_step'))})"
            if run.diverged and math.isfinite(run.get("diverged_at_step"))
            else ""
        )
        ax.semilogy(steps[ok], loss[ok], color=colour, label=text)
        if run.diverged and ok.any():
            ax.plot(steps[ok][-1], loss[ok][-1], "x", color="red", ms=8, mew=2)
    ax.set(xlabel="step", ylabel="train loss (log)", title=f"loss curves per learning rate (seed {first})")
    ax.grid(alpha=0.3, which="both")
    if shown:  # no runs, no legend (matplotlib warns on an empty one)
        ax.legend(fontsize=7, ncol=2)


def figure(runs: list[StudyRun], best: dict[str, StudyRun | None]) -> Figure:
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    summary, curves = fig.subplots(1, 2)
    _summary_axes(summary, runs, best)
    _curves_axes(curves, runs)
    return fig


def metrics_of(runs: list[StudyRun], best: dict[str, StudyRun | None]) -> dict[str, float]:
    """Flat numbers for metrics.json: per lr the mean final loss and dead share (seeds that did not diverge),
    the share of seeds that diverged, and the best lr on validation per seed."""
    out: dict[str, float] = {}
    for lr, mean in zip(*per_lr(runs, lambda r: r.get("train/final_loss"))[:2]):
        out[f"final_loss/lr_{lr:g}"] = float(mean)
    for lr, mean in zip(*per_lr(runs, dead_share)[:2]):
        out[f"dead_share/lr_{lr:g}"] = float(mean)
    for lr in lrs(runs):
        mine = [r for r in finished(runs) if lr_of(r) == lr]
        if mine:
            out[f"diverged_share/lr_{lr:g}"] = sum(r.diverged for r in mine) / len(mine)
    out.update({f"best_lr/seed_{s}": lr_of(b) for s, b in best.items() if b is not None})
    return out


NOTES = [
    (
        "Each row folds the seeds: mean (min..max), labels counted. loss drop: 1 - train/final_loss / "
        "train/initial_loss, both over the whole training set (before the first step and after the last); a "
        "diverged run has none. The best lr of a seed is the one with the highest final val acc among its runs "
        "that did not diverge (ties: the lower val loss): the test split never chooses. dead share: share of "
        "hidden ReLU units with z <= 0 on every example of the probe batch, at the last measurement; ReLUs count "
        "as killed when it ends at least `dead_jump` above the best lr's of the same seed. regime: diverged, dead "
        "(killed and not learning), crawl (loss drop < `crawl_drop`), converged (> `converged_drop`), else "
        "partial. " + NOT_LEARNING_RULE
    )
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    lim = thresholds(cfg, *LIMITS)
    best = {s: best_run(runs, s) for s in seeds(runs)}
    per_run = [row(r, best.get(r.seed), lim) for r in sorted(finished(runs), key=lambda r: (lr_of(r), r.seed))]
    columns, rows = seed_table(per_run, ["lr"], COLUMNS)
    return Findings(
        checks(runs, lim),
        columns,
        rows,
        metrics_of(runs, best),
        {"learning_rate.png": figure(runs, best)},
        NOTES,
        {"runs.csv": per_run},
    )
