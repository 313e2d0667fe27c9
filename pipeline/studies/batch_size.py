"""Study `batch_size`: full batch, mini-batches and pure SGD at one learning rate: per epoch, per unit of
compute, and the mini-batch gradient's noise.

Compute is controlled time, never a run's wall clock: at report time, in this process, one training step of
each batch size (and seed's network) is timed as the best of k interleaved samples on one BLAS thread
(pipeline/studies/timing.py), cycling through different batches; a run's controlled seconds at step s are
s x its batch size's step time.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from pipeline.harness.build import build_trainer, load_data
from pipeline.studies import timing
from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import FAILS, HOLDS, UNDECIDED, Check, compare, every, missing
from pipeline.studies.grid import expand
from pipeline.studies.measures import thresholds

LIMITS = ("noise_steps", "slope_tolerance", "min_rank_correlation", "sgd_epoch_cost", "budget_window")
BATCHES_TIMED = 16  # different random batches each timed step cycles through (the inputs vary call to call)

StepTimes = dict[tuple[float, str], float]  # (batch size, seed) -> controlled seconds per training step


def batch_of(run: StudyRun) -> float:
    """The batch size, inf for the full batch (train.batch_size=null)."""
    value = str(run.values.get("train.batch_size", "null"))
    return math.inf if value in ("null", "None") else float(value)


def label(batch: float) -> str:
    return "full batch" if math.isinf(batch) else f"B={int(batch)}"


def key_of(batch: float) -> str:
    """The batch size in a metric name: batch_1, ..., batch_full."""
    return "full" if math.isinf(batch) else str(int(batch))


def usable(runs: list[StudyRun]) -> list[StudyRun]:
    """The finished runs that did not diverge: the ones with numbers to compare."""
    return [r for r in finished(runs) if not r.diverged]


# --- controlled step times (report time) -----------------------------------------------------------------


def step_functions(runs: list[StudyRun], cfg) -> tuple[dict[str, Callable], dict[str, Callable], dict[str, tuple]]:
    """One training step per (batch size, seed) of the runs, built from that job's config, cycling batches.

    Returns (step fns, weight resets, name -> (batch, seed)); names are "B=16 seed 0".
    """
    jobs = {json.dumps(j.values, sort_keys=True): j for j in expand(cfg)}
    fns: dict[str, Callable] = {}
    resets: dict[str, Callable] = {}
    names: dict[str, tuple] = {}
    data_cache: dict[str, Any] = {}
    for run in usable(runs):
        job = jobs.get(json.dumps(run.values, sort_keys=True))
        if job is None:
            continue
        data_key = json.dumps(OmegaConf.to_container(job.cfg.data, resolve=True), sort_keys=True)
        data = data_cache.setdefault(data_key, load_data(job.cfg))
        trainer = build_trainer(job.cfg, data)
        n, b = len(data.y_train), batch_of(run)
        rng = np.random.default_rng(0)
        batches = (
            [np.arange(n)]
            if math.isinf(b) or b >= n
            else [rng.choice(n, int(b), replace=False) for _ in range(BATCHES_TIMED)]
        )
        name = f"{label(b)} seed {run.seed}"
        fns[name], resets[name] = timing.cycling_step(trainer, data.x_train, data.y_train, batches)
        names[name] = (b, run.seed)
    return fns, resets, names


def controlled_step_seconds(runs: list[StudyRun], cfg) -> StepTimes:
    """Seconds per training step of each (batch size, seed): best of k interleaved samples (study.timing)."""
    fns, resets, names = step_functions(runs, cfg)
    if not fns:
        return {}
    best = timing.best_of_interleaved(fns, timing.settings(cfg), resets)
    return {names[n]: best[n] for n in fns}


# --- per-run measures ----------------------------------------------------------------------------------


def step_time(run: StudyRun, times: StepTimes) -> float:
    return times.get((batch_of(run), run.seed), math.nan)


def final_loss(run: StudyRun) -> float:
    """The last logged train/loss (the end of the last epoch)."""
    loss = run.series("train/loss")[1]
    loss = loss[np.isfinite(loss)]
    return float(loss[-1]) if len(loss) else math.nan


def steps_per_epoch(run: StudyRun) -> float:
    steps, epochs = run.series("epoch")
    return float(steps[-1] / epochs[-1]) if len(steps) and epochs[-1] > 0 else math.nan


def epoch_seconds(run: StudyRun, times: StepTimes) -> float:
    """Controlled seconds per epoch: steps per epoch x the step time."""
    return steps_per_epoch(run) * step_time(run, times)


def loss_curve(run: StudyRun, times: StepTimes) -> tuple[np.ndarray, np.ndarray]:
    """(controlled seconds, train/loss) at the logged points with a finite, positive loss: (points,) each."""
    steps, loss = run.series("train/loss")
    ok = np.isfinite(loss) & (loss > 0)
    return steps[ok] * step_time(run, times), loss[ok]


def total_seconds(run: StudyRun, times: StepTimes) -> float:
    seconds, _ = loss_curve(run, times)
    return float(seconds[-1]) if len(seconds) else math.nan


def loss_at(run: StudyRun, seconds: float, times: StepTimes, window: float) -> float:
    """Geometric-mean train/loss over the controlled time (window x seconds .. seconds]; nan outside the run.

    Averaged, not read off one point: pure SGD's 20-step means scatter by a factor of a few. A coarsely logged
    run (the full batch: one point per step) with no point in the window is interpolated in log loss.
    """
    t, loss = loss_curve(run, times)
    if not len(t) or not math.isfinite(seconds) or not t[0] <= seconds <= t[-1]:
        return math.nan
    inside = (t >= window * seconds) & (t <= seconds)
    if inside.any():
        return float(np.exp(np.mean(np.log(loss[inside]))))
    return float(np.exp(np.interp(seconds, t, np.log(loss))))


def early_noise(run: StudyRun, steps: float) -> float:
    """Mean grad_noise/relative over the probe points in the first `steps` steps (nan: full batch, none)."""
    at, noise = run.series("grad_noise/relative")
    keep = (at <= steps) & np.isfinite(noise)
    return float(noise[keep].mean()) if keep.any() else math.nan


def noise_window(runs: list[StudyRun], most: float) -> float:
    """`most` steps, or fewer when a run with the noise probe ends sooner (the largest mini-batch)."""
    ends = [r.series("grad_noise/relative")[0] for r in usable(runs)]
    return float(min([most] + [e.max() for e in ends if len(e)]))


def budget(runs: list[StudyRun], times: StepTimes) -> float:
    """The common compute budget: the controlled time of the run that finishes first (all have data up to it)."""
    totals = [total_seconds(r, times) for r in usable(runs)]
    totals = [t for t in totals if math.isfinite(t)]
    return min(totals) if totals else math.nan


def ranks(values: list[float]) -> np.ndarray:
    """Ranks 0..n-1 (inf last; ties broken by order: the losses and sizes compared here do not tie)."""
    return np.argsort(np.argsort(np.array(values, dtype=float), kind="stable"), kind="stable").astype(float)


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rho of two equally long lists, nan below 3 points."""
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1]) if len(x) >= 3 else math.nan


def loglog_slope(batches: list[float], noise: list[float]) -> float:
    """Least-squares slope of log(noise) against log(B) (-1 for noise proportional to 1/B)."""
    pts = [(math.log(b), math.log(n)) for b, n in zip(batches, noise) if math.isfinite(b) and n > 0]
    if len(pts) < 2 or len({b for b, _ in pts}) < 2:
        return math.nan
    x, y = np.array(pts).T  # (points,) each
    return float(np.polyfit(x, y, 1)[0])


# --- per-seed measures of the claim ----------------------------------------------------------------------


class Seeds:
    """The runs arranged per seed and batch size, with the measures the checks compare."""

    def __init__(self, runs: list[StudyRun], times: StepTimes, lim: dict[str, float]):
        self.runs, self.times, self.lim = runs, times, lim
        self.seeds = seeds(runs)
        self.batches = sorted({batch_of(r) for r in runs})  # the grid's batch sizes, smallest first
        self.grid = {(batch_of(r), r.seed): r for r in runs}
        self.budget = budget(runs, times)
        self.window = noise_window(runs, lim["noise_steps"])

    def run(self, batch: float, seed: str) -> StudyRun | None:
        """The run of (batch, seed) when it finished without diverging, else None."""
        run = self.grid.get((batch, seed))
        return run if run is not None and run.ok and not run.diverged else None

    def complete(self, seed: str) -> list[StudyRun] | None:
        """Every batch size's run of the seed, or None when one is missing."""
        mine = [self.run(b, seed) for b in self.batches]
        return [r for r in mine if r is not None] if all(mine) else None

    def per_seed(self, measure: Callable[[str], float]) -> dict[str, float]:
        return {seed_label(s): measure(s) for s in self.seeds}

    def rank_correlation(self, seed: str) -> float:
        mine = self.complete(seed)
        return rank_correlation(self.batches, [final_loss(r) for r in mine]) if mine else math.nan

    def noise(self, seed: str) -> list[tuple[float, float]] | None:
        """(B, early noise) of the seed's mini-batches (the full batch has none), or None when one is missing."""
        mine = self.complete(seed)
        if mine is None:
            return None
        pts = [(batch_of(r), early_noise(r, self.window)) for r in mine if not math.isinf(batch_of(r))]
        return pts if all(math.isfinite(n) for _, n in pts) else None

    def noise_falls(self, seed: str) -> bool | None:
        pts = self.noise(seed)
        return None if pts is None else all(a > b for (_, a), (_, b) in itertools.pairwise(pts))

    def slope(self, seed: str) -> float:
        pts = self.noise(seed)
        if not pts or len(pts) < 2:
            return math.nan
        return loglog_slope([b for b, _ in pts], [n for _, n in pts])

    def epoch_cost_ratio(self, seed: str) -> float:
        """Pure SGD's controlled epoch over the dearest other batch size's."""
        mine = self.complete(seed)
        if mine is None or 1.0 not in self.batches:
            return math.nan
        costs = {batch_of(r): epoch_seconds(r, self.times) for r in mine}
        return costs[1.0] / max(c for b, c in costs.items() if b != 1.0)

    def loss_at_budget(self, batch: float, seed: str) -> float:
        run = self.run(batch, seed)
        return loss_at(run, self.budget, self.times, self.lim["budget_window"]) if run else math.nan

    def best_mid(self) -> float | None:
        """The batch between pure SGD and the full batch with the lowest mean log loss at the budget."""
        means = {
            b: np.mean(np.log([self.loss_at_budget(b, s) for s in self.seeds]))
            for b in self.batches
            if 1 < b < math.inf
        }
        finite = {b: float(m) for b, m in means.items() if math.isfinite(m)}
        return min(finite, key=lambda b: finite[b]) if finite else None


def keeps_pace(check: Check) -> Check:
    """A 'worse' comparison read three ways: worse beyond the spread fails; tie or better holds.

    `check` decides "value > the other's" (worse). Holds there -> worse -> fails; fails there (better on every
    seed beyond the spread) -> holds; undecided for seeds that disagree or an effect within the spread (a tie)
    -> holds; undecided for runs missing stays undecided.
    """
    if check.outcome == HOLDS:
        outcome, why = FAILS, "worse on every seed, beyond the seeds' spread"
    elif check.outcome == FAILS:
        outcome, why = HOLDS, "better on every seed, beyond the seeds' spread"
    elif check.why.startswith("runs missing"):
        outcome, why = UNDECIDED, check.why
    else:
        outcome, why = HOLDS, "tie: " + check.why.replace("holds on", "above it on")
    return Check(
        check.name,
        outcome,
        check.measured,
        "tie or better (not worse beyond the seeds' spread) than " + check.expected.removeprefix("> "),
        check.values,
        why,
    )


def checks(s: Seeds) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/batch_size.yaml)."""
    lim = s.lim
    out = [
        compare(
            "smaller batches end lower after the same epochs: rank correlation of B and the final training loss",
            s.per_seed(s.rank_correlation),
            ">=",
            lim["min_rank_correlation"],
        ),
        every(
            "gradient noise falls with every larger batch",
            {seed_label(k): s.noise_falls(k) for k in s.seeds},
            expected="on every seed",
        ),
        compare(
            f"gradient noise ~ 1/B: |log-log slope + 1| (slope within -1 +- {lim['slope_tolerance']:g})",
            s.per_seed(lambda k: abs(s.slope(k) + 1)),
            "<=",
            lim["slope_tolerance"],
        ),
    ]
    ms = 1e3 * s.budget
    cost = "pure SGD's epochs take far longer: its controlled epoch over the dearest other batch size's"
    # the names stay the same from run to run (the budget and the best mini-batch go into `measured`)
    fuller = "per unit of compute the full batch makes less progress: its loss at the common compute budget"
    pace = "pure SGD keeps pace per unit of compute: its loss at the common compute budget"
    if 1.0 not in s.batches or math.inf not in s.batches:
        why = "this size runs no pure SGD or no full batch"
        return out + [
            missing(cost, f">= {lim['sgd_epoch_cost']:g}", why),
            missing(fuller, "above the best mini-batch's", why),
            missing(pace, "tie or better", why),
        ]
    out.append(compare(cost, s.per_seed(s.epoch_cost_ratio), ">=", lim["sgd_epoch_cost"], scale="log"))
    mid = s.best_mid()
    if mid is None:
        why = "no mini-batch between pure SGD and the full batch has a loss at the budget on every seed"
        return out + [missing(fuller, "above the best mini-batch's", why), missing(pace, "tie or better", why)]
    mid_loss = s.per_seed(lambda k: s.loss_at_budget(mid, k))
    full = compare(
        f"{fuller} is above the best mini-batch's",
        s.per_seed(lambda k: s.loss_at_budget(math.inf, k)),
        ">",
        mid_loss,
        scale="log",
        limit_name=f"{label(mid)}'s loss",
    )
    sgd = keeps_pace(
        compare(
            f"{pace} against the best mini-batch's",
            s.per_seed(lambda k: s.loss_at_budget(1.0, k)),
            ">",
            mid_loss,
            scale="log",
            limit_name=f"{label(mid)}'s loss",
        )
    )
    for check in (full, sgd):
        check.measured += f"; at {ms:.3g} controlled ms, the best mini-batch {label(mid)}"
    return out + [full, sgd]


# --- table, figure, notes --------------------------------------------------------------------------------


def row(run: StudyRun, s: Seeds, budget_col: str) -> dict:
    b = batch_of(run)
    noise = early_noise(run, s.window)
    return {
        "batch": label(b),
        "seed": run.seed,
        "steps / epoch": steps_per_epoch(run),
        "final train loss": final_loss(run),
        "val loss": run.get("val/loss"),
        "test acc": run.get("test/acc"),
        "controlled us / step": 1e6 * step_time(run, s.times),
        "controlled ms / epoch": 1e3 * epoch_seconds(run, s.times),
        budget_col: loss_at(run, s.budget, s.times, s.lim["budget_window"]),
        "grad noise (early)": noise,
        "noise x B": noise * b if math.isfinite(b) else math.nan,
        "verdict": ",".join(run.verdict) or run.status,
    }


def geo_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mean, min and max over equally long curves: (n,) each."""
    stacked = np.array(curves)  # (seeds, n)
    return np.exp(np.log(stacked).mean(axis=0)), stacked.min(axis=0), stacked.max(axis=0)


def _curves(epoch_ax, time_ax, s: Seeds) -> None:
    """Loss per epoch and per controlled ms, one line per batch size: mean over seeds, min..max shaded."""
    for i, b in enumerate(s.batches):
        mine = [r for r in (s.run(b, k) for k in s.seeds) if r is not None]
        if not mine:
            continue
        per_run = [dict(zip(*r.series("train/loss"))) for r in mine]
        steps = np.array(sorted(set.intersection(*(set(p) for p in per_run))))  # (points,) logged by every seed
        curves = [np.array([p[t] for t in steps]) for p in per_run]
        keep = np.all([np.isfinite(c) & (c > 0) for c in curves], axis=0) if len(steps) else np.array([], bool)
        if not keep.any():
            continue
        mean, lo, hi = geo_band([c[keep] for c in curves])
        kw = {"color": f"C{i}", "label": label(b)}
        x_epoch = steps[keep] / steps_per_epoch(mine[0])
        x_ms = 1e3 * steps[keep] * float(np.mean([step_time(r, s.times) for r in mine]))  # mean step time over seeds
        for ax, x in ((epoch_ax, x_epoch), (time_ax, x_ms)):
            ax.plot(x, mean, lw=1.2, **kw)
            ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.2, lw=0)
    if math.isfinite(s.budget):
        time_ax.axvspan(
            1e3 * s.lim["budget_window"] * s.budget,
            1e3 * s.budget,
            color="k",
            alpha=0.12,
            label=f"budget {1e3 * s.budget:.3g} ms (loss averaged here)",
        )
    epoch_ax.set(xlabel="epoch", ylabel="train loss (log)", yscale="log", title="loss per epoch (same lr, same epochs)")
    time_ax.set(
        xlabel="controlled ms (steps x best-of-k step time; log)",
        ylabel="train loss (log)",
        xscale="log",
        yscale="log",
        title="loss per unit of compute",
    )


def _noise(ax, s: Seeds) -> None:
    """Early gradient noise against B (log-log), each seed's points, their geometric mean and a c/B line."""
    per_seed = [dict(p) for k in s.seeds if (p := s.noise(k))]
    if per_seed:
        b = np.array(sorted(set.intersection(*(set(p) for p in per_seed))))  # (sizes,)
        noise = np.array([[p[x] for x in b] for p in per_seed])  # (seeds, sizes)
        for p in noise:
            ax.loglog(b, p, ".", color="C3", alpha=0.5)
        mean = np.exp(np.log(noise).mean(axis=0))  # (sizes,)
        scale = float(np.exp(np.mean(np.log(mean * b))))  # c in c/B, fitted in log space
        grid = np.geomspace(b.min(), b.max(), 50)  # (50,)
        ax.loglog(grid, scale / grid, "k--", lw=1, label="c / B")
        ax.loglog(b, mean, "o-", color="C3", label=f"measured, steps <= {s.window:.0f} (seeds: geo. mean, dots)")
    ax.set(
        xlabel="batch size B (log)",
        ylabel="E||g_B - g||^2 / ||g||^2 (log)",
        title="mini-batch gradient noise (full batch: 0)",
    )


def figure(s: Seeds) -> Figure:
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    epoch_ax, time_ax, noise_ax = fig.subplots(1, 3)
    _curves(epoch_ax, time_ax, s)
    _noise(noise_ax, s)
    for ax in (epoch_ax, time_ax, noise_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:  # no runs, no legend (matplotlib warns on an empty one)
            ax.legend(fontsize=8)
    return fig


def metrics(s: Seeds, per_run: list[dict], budget_col: str) -> dict[str, float]:
    """Per batch size, means over seeds; the budget; the noise slope (mean of the seeds' slopes)."""
    out = {"budget_ms": 1e3 * s.budget}
    for b in s.batches:
        mine = [r for r in per_run if r["batch"] == label(b)]
        for key, col in (
            ("controlled_step_us", "controlled us / step"),
            ("final_loss", "final train loss"),
            ("loss_at_budget", budget_col),
            ("grad_noise", "grad noise (early)"),
        ):
            vals = [r[col] for r in mine if math.isfinite(r[col])]
            if vals:
                out[f"{key}/batch_{key_of(b)}"] = float(np.mean(vals))
    slopes = [v for v in (s.slope(k) for k in s.seeds) if math.isfinite(v)]
    if slopes:
        out["grad_noise_slope"] = float(np.mean(slopes))
    return out


def step_cost_note(s: Seeds) -> str:
    """Pure SGD's step and epoch against the best mini-batch's, in controlled time (mean over seeds)."""
    mid = s.best_mid()
    if mid is None or 1.0 not in s.batches:
        return ""
    step = {b: np.mean([t for (x, _), t in s.times.items() if x == b] or [math.nan]) for b in (1.0, mid)}
    runs = {b: [r for k in s.seeds if (r := s.run(b, k))] for b in (1.0, mid)}
    epoch = {b: step[b] * (steps_per_epoch(runs[b][0]) if runs[b] else math.nan) for b in (1.0, mid)}
    return (
        f" Here a pure-SGD step costs {step[1.0] / step[mid]:.2f}x a {label(mid)} step and its epoch "
        f"{epoch[1.0] / epoch[mid]:.1f}x a {label(mid)} epoch: at one lr a step makes about the same expected "
        "progress whatever B, so per unit of compute the per-step cost decides."
    )


def notes(s: Seeds, cfg) -> list[str]:
    how = timing.settings(cfg).describe()
    per_b: dict[float, list[float]] = {}
    for (b, _), t in s.times.items():
        per_b.setdefault(b, []).append(t)
    steps = ", ".join(f"{label(b)} {1e6 * min(v):.0f}..{1e6 * max(v):.0f}" for b, v in sorted(per_b.items()))
    return [
        "- Each row folds the seeds of one batch size: mean (min..max); runs.csv has every run.",
        (
            f"- Controlled compute: at report time, one training step of each batch size and seed's network, timed as "
            f"the {how}, cycling through {BATCHES_TIMED} different batches and restoring the weights before each "
            f"sample (pipeline/studies/timing.py). Step times in us (over seeds): {steps or '-'}. A run's controlled "
            "time at step s is s x its step time. The runs' own wall clock (time/train_seconds) decides nothing: on a "
            "shared machine it swung by 100x with the load."
        ),
        (
            f"- The budget is the controlled time of the run that finishes first ({1e3 * s.budget:.3g} ms); the loss "
            f"at the budget is the geometric mean of train/loss over its last {1 - s.lim['budget_window']:.0%}. Per "
            "unit of compute a comparison is three-way: better or worse needs the gap to hold on every seed and exceed "
            "the seeds' spread; anything else is a tie." + step_cost_note(s)
        ),
        (
            f"- Gradient noise: grad_noise/relative = E||g_B - g||^2 / ||g||^2 (4 batches per probe point), averaged "
            f"over the probe points in the first {s.window:.0f} steps, where every batch size is near the same "
            "weights; the slope is fitted per seed to log(noise) against log(B). Sampling without replacement scales "
            "it by (N-B)/(N-1), a little below 1/B for large B."
        ),
    ]


def findings(runs: list[StudyRun], cfg) -> Findings:
    lim = thresholds(cfg, *LIMITS)
    s = Seeds(runs, controlled_step_seconds(runs, cfg), lim)
    budget_col = f"loss at {1e3 * s.budget:.3g} ms" if math.isfinite(s.budget) else "loss at budget"
    per_run = [row(r, s, budget_col) for r in sorted(finished(runs), key=lambda r: (batch_of(r), int(r.seed)))]
    columns = [
        "batch",
        "seed",
        "steps / epoch",
        "final train loss",
        "val loss",
        "test acc",
        "controlled us / step",
        "controlled ms / epoch",
        budget_col,
        "grad noise (early)",
        "noise x B",
        "verdict",
    ]
    cols, rows = seed_table(per_run, ["batch"], columns)
    return Findings(
        checks(s),
        cols,
        rows,
        metrics(s, per_run, budget_col),
        {"batch_size.png": figure(s)},
        notes(s, cfg),
        {"runs.csv": per_run},
    )
