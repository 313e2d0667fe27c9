"""Study `clipping`: an exploding net without clipping, clipped by global norm and by value."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from pipeline.studies.base import StudyReport, StudyRun

BOUND_TOL = 1e-2  # float32 rounding of W_after - W_before when the step is tiny next to W
SLOWER = 2.0  # the lowest norm threshold "slows" training: final loss this many times the best one
BENT_DEG = 5.0  # value clipping turns the weights' update at least this far from their gradient...
KEPT_DEG = 1.0  # ...while norm clipping keeps it within this (0 in exact arithmetic)


@dataclass(frozen=True)
class Clip:
    """A run's clipping: kind (none, norm, value, norm+value) and its threshold(s)."""

    max_norm: float | None
    max_value: float | None

    @property
    def kind(self) -> str:
        on = [k for k, v in (("norm", self.max_norm), ("value", self.max_value)) if v is not None]
        return "+".join(on) or "none"

    @property
    def label(self) -> str:
        parts = [f"{k} <= {v:g}" for k, v in (("norm", self.max_norm), ("value", self.max_value)) if v is not None]
        return ", ".join(parts) or "no clipping"


def _threshold(text) -> float | None:
    """A swept threshold ("1", "null") as a number or None."""
    if text is None or str(text).lower() in ("null", "none", ""):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def clip_of(run: StudyRun, cfg=None) -> Clip:
    """The run's clipping from its swept values; the study's config fills what was not swept."""
    base = OmegaConf.select(cfg, "train.clip", default=None) if cfg is not None else None

    def value(key):
        full = f"train.clip.{key}"
        return _threshold(run.values[full]) if full in run.values else \
            _threshold(base.get(key)) if base is not None else None
    return Clip(value("max_norm"), value("max_value"))


def _finite(values: np.ndarray) -> np.ndarray:
    """The finite entries."""
    return values[np.isfinite(values)]


def loss_ends(run: StudyRun) -> tuple[float, float]:
    """First and last finite train/loss (a diverged run's last is its last finite one)."""
    _, loss = run.series("train/loss")
    loss = _finite(loss)
    return (float(loss[0]), float(loss[-1])) if len(loss) else (math.nan, math.nan)


def _layer_series(run: StudyRun, prefix: str) -> dict[int, dict[int, float]]:
    """layer -> {step: value} for prefix/layer_XX."""
    out = {}
    for key in run.history:
        if key.startswith(prefix + "/layer_"):
            out[int(key.rsplit("_", 1)[1])] = dict(run.history[key])
    return out


def _lr_at(run: StudyRun, steps: np.ndarray) -> np.ndarray:
    """The learning rate in force at each step (logged at epoch ends: the next epoch-end value)."""
    lr_steps, lr = run.series("lr")
    if not len(lr):
        return np.full(len(steps), math.nan)
    idx = np.minimum(np.searchsorted(lr_steps, steps), len(lr) - 1)  # (steps,)
    return lr[idx]


def step_profiles(run: StudyRun) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, pre-clip per-layer gradient norms, applied per-layer gradient norms), weights only.

    With plain SGD the step on W_l is lr * (clipped gradient), so its norm is
    update_ratio_l(t) * ||W_l before step t|| / lr, and ||W_l before step t|| is weight_norm_l(t - 1):
    exact wherever step t - 1 was measured too (probes every step). Returns arrays (steps,) and
    (steps, layers) twice; empty when the run lacks those probes.
    """
    grads, ratios, weights = (_layer_series(run, p) for p in ("grad_norm", "update_ratio", "weight_norm"))
    layers = sorted(set(grads) & set(ratios) & set(weights))
    if not layers:
        return np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0))
    steps = sorted(t for t in ratios[layers[0]] if all(t in grads[l] and t in ratios[l] and t - 1 in weights[l]
                                                     for l in layers))
    steps_arr = np.array(steps, dtype=float)  # (steps,)
    pre = np.array([[grads[l][t] for l in layers] for t in steps], dtype=float).reshape(len(steps), len(layers))
    moved = np.array([[ratios[l][t] * weights[l][t - 1] for l in layers] for t in steps],
                     dtype=float).reshape(len(steps), len(layers))  # (steps, layers): ||W(t) - W(t-1)||
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        post = moved / _lr_at(run, steps_arr)[:, None]
    return steps_arr, pre, post


def step_norms(post: np.ndarray) -> np.ndarray:
    """Global norm of the applied (clipped) weight gradient per step, shape (steps,)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt((post ** 2).sum(axis=1)) if post.size else np.zeros(0)


def bend_angles(steps: np.ndarray, pre: np.ndarray, post: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(steps, degrees): per step a lower bound on the angle between the weights' gradient and their update.

    Clipping keeps every entry's sign and shrinks it, so <g_l, c_l> <= ||g_l|| ||c_l|| per layer and the
    true cosine is at most that of the per-layer norm profiles. Norm clipping scales every layer alike
    (angle 0); value clipping shrinks the layers with large entries more, which tilts the profile.
    """
    if not pre.size:
        return np.zeros(0), np.zeros(0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cos = (pre * post).sum(axis=1) / (np.linalg.norm(pre, axis=1) * np.linalg.norm(post, axis=1))  # (steps,)
    ok = np.isfinite(cos)
    return steps[ok], np.degrees(np.arccos(np.clip(cos[ok], -1.0, 1.0)))


def _max(values: np.ndarray) -> float:
    """Largest finite value, NaN when there is none."""
    values = _finite(np.asarray(values, dtype=float))
    return float(values.max()) if len(values) else math.nan


def plain_sgd(cfg) -> bool:
    """Whether the update is lr * gradient (what step_profiles assumes)."""
    opt = OmegaConf.select(cfg, "optimizer", default=None) if cfg is not None else None
    if opt is None:
        return True
    return (opt.get("name") == "sgd" and not opt.get("momentum", 0.0) and not opt.get("weight_decay", 0.0))


def profiles(run: StudyRun, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """step_profiles where the update is lr * gradient, else empty arrays."""
    return step_profiles(run) if plain_sgd(cfg) else (np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))


def run_stats(run: StudyRun, cfg) -> dict:
    """The numbers the claim is about, for one run."""
    first, last = loss_ends(run)
    _, gnorm = run.series("grad_norm/total")
    steps, pre, post = profiles(run, cfg)
    return {"diverged": run.diverged, "diverged at": run.get("diverged_at_step"), "first loss": first,
            "final loss": last, "test acc": run.get("test/acc"), "max pre-clip norm": _max(gnorm),
            "max step norm": _max(step_norms(post)), "max bend°": _max(bend_angles(steps, pre, post)[1])}


def row(run: StudyRun, cfg) -> dict:
    """A table row for one finished run."""
    clip, st = clip_of(run, cfg), run_stats(run, cfg)
    return {"clipping": clip.kind, "threshold": clip.max_norm if clip.max_norm is not None else clip.max_value,
            "seed": run.values.get("seed", "0"), **{k: v for k, v in st.items() if k != "diverged"},
            "verdict": ",".join(run.verdict) or run.status}


def _survived(st: dict) -> bool:
    """Finished without diverging and ended below its first loss."""
    return not st["diverged"] and math.isfinite(st["final loss"]) and st["final loss"] < st["first loss"]


Outcome = tuple[bool | None, str]  # None: the runs the check needs are missing


def check_diverges(none: list[dict]) -> Outcome:
    """Every unclipped run diverges."""
    if not none:
        return None, "needs the unclipped run"
    steps = [f"{st['diverged at']:g}" for st in none if st["diverged"]]
    return len(steps) == len(none), ("no clipping: diverged at step " + ", ".join(steps) if steps
                                     else "no clipping: did not diverge")


def check_survive(runs: list[tuple[float, dict]], kind: str) -> Outcome:
    """Every run clipped this way survives and learns."""
    if not runs:
        return None, f"needs a {kind}-clipped run"
    return all(_survived(st) for _, st in runs), (
        f"by {kind}, final loss " + ", ".join(f"{t:g}: {st['final loss']:.3g}" for t, st in runs))


def check_bounded(norm: list[tuple[float, dict]]) -> Outcome:
    """No norm-clipped step applies a weight gradient longer than max_norm."""
    ratios = [st["max step norm"] / t for t, st in norm if math.isfinite(st["max step norm"])]
    if not ratios:
        return None, "needs norm-clipped runs probed every step"
    return max(ratios) <= 1 + BOUND_TOL, f"largest applied weight-gradient norm / max_norm {max(ratios):.4f}"


def check_slowest(norm: list[tuple[float, dict]]) -> Outcome:
    """The lowest threshold's final loss (seeds averaged) against the best other threshold's."""
    by_threshold: dict[float, list[float]] = {}
    for t, st in norm:
        if _survived(st):
            by_threshold.setdefault(t, []).append(st["final loss"])
    if len(by_threshold) < 2:
        return None, "needs two surviving norm thresholds"
    means = {t: float(np.mean(losses)) for t, losses in by_threshold.items()}
    low = min(means)
    best = min(v for t, v in means.items() if t != low)
    return means[low] > SLOWER * best, f"max_norm {low:g} ends at loss {means[low]:.3g} vs {best:.3g} at best"


def check_bends(value: list[tuple[float, dict]], norm: list[tuple[float, dict]]) -> Outcome:
    """Every value-clipped run turns its update at some step; no norm-clipped run does."""
    bent = [st["max bend°"] for _, st in value if math.isfinite(st["max bend°"])]
    kept = [st["max bend°"] for _, st in norm if math.isfinite(st["max bend°"])]
    if not bent or not kept:
        return None, "needs value- and norm-clipped runs probed every step"
    return (min(bent) > BENT_DEG and max(kept) < KEPT_DEG,
            f"largest turn of the update from the gradient: by value {min(bent):.1f}°..{max(bent):.1f}° per run, "
            f"by norm at most {max(kept):.2g}°")


def checks(per_run: list[tuple[Clip, dict]]) -> list[tuple[str, bool | None, str]]:
    """The claim's checks over every finished run (seeds included)."""
    none = [st for c, st in per_run if c.kind == "none"]
    norm = sorted(((c.max_norm, st) for c, st in per_run if c.kind == "norm"), key=lambda p: p[0])
    value = sorted(((c.max_value, st) for c, st in per_run if c.kind == "value"), key=lambda p: p[0])
    return [
        ("without clipping the run diverges", *check_diverges(none)),
        ("every norm-clipped run survives and its loss falls", *check_survive(norm, "norm")),
        ("norm clipping bounds every step (applied weight gradient <= max_norm)", *check_bounded(norm)),
        (f"the lowest max_norm ends over {SLOWER:g}x the best clipped loss", *check_slowest(norm)),
        ("every value-clipped run survives and its loss falls", *check_survive(value, "value")),
        (f"each value-clipped run turns its update (> {BENT_DEG:g}°), norm clipping does not (< {KEPT_DEG:g}°)",
         *check_bends(value, norm)),
    ]


KIND_ORDER = {"none": 0, "norm": 1, "value": 2}


def _order(clip: Clip) -> tuple:
    """none first, then norm and value clipping by rising threshold."""
    return KIND_ORDER.get(clip.kind, 3), clip.max_norm or 0.0, clip.max_value or 0.0


def _colour(clip: Clip, rank: float):
    """Black for none; blues for norm, oranges for value, darker for higher thresholds (rank in [0, 1])."""
    from matplotlib import colormaps

    if clip.kind == "none":
        return "black"
    return colormaps["Blues" if clip.kind == "norm" else "Oranges"](0.35 + 0.6 * rank)


def _shown(runs: list[StudyRun], cfg) -> dict[Clip, StudyRun]:
    """One run per setting (the first finished seed), in the table's order."""
    shown: dict[Clip, StudyRun] = {}
    for run in runs:
        if run.ok:
            shown.setdefault(clip_of(run, cfg), run)
    return dict(sorted(shown.items(), key=lambda kv: _order(kv[0])))


def _trace(ax, run: StudyRun, key: str, colour, label: str) -> tuple[float, float]:
    """Plot a positive metric against step; mark divergence; return its smallest and largest finite value."""
    steps, vals = run.series(key)
    ok = np.isfinite(vals) & (vals > 0)
    if not ok.any():
        return math.nan, math.nan
    ax.plot(steps[ok], vals[ok], color=colour, lw=1.2, label=label)
    if run.diverged:
        ax.plot(steps[ok][-1], vals[ok][-1], "x", color="red", ms=10, mew=2)
    return float(vals[ok].min()), float(vals[ok].max())


def figure(runs: list[StudyRun], cfg) -> Figure:
    """Train loss, pre-clip gradient norm and the update's turn from the gradient against step, per setting."""
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    loss_ax, grad_ax, bend_ax = fig.subplots(1, 3)
    shown = _shown(runs, cfg)
    surviving = []  # (min, max) of each surviving loss curve
    for clip, run in shown.items():
        same = sorted({_order(c) for c in shown if c.kind == clip.kind})
        colour = _colour(clip, same.index(_order(clip)) / max(len(same) - 1, 1))
        low, high = _trace(loss_ax, run, "train/loss", colour, clip.label)
        if not run.diverged and math.isfinite(high):
            surviving.append((low, high))
        _trace(grad_ax, run, "grad_norm/total", colour, clip.label)
        steps, angles = bend_angles(*profiles(run, cfg))
        if len(steps) and clip.kind != "none":
            bend_ax.plot(steps, angles, color=colour, lw=1, label=clip.label)
    loss_ax.set(yscale="log", xlabel="step", ylabel="train loss", title="train loss (x: diverged, off the top)")
    if surviving:  # a diverged loss (1e27...) would flatten every other curve: let it leave the top
        loss_ax.set_ylim(0.5 * min(lo for lo, _ in surviving), 100 * max(hi for _, hi in surviving))
    grad_ax.set(yscale="log", xlabel="step", ylabel="||g|| before clipping", title="pre-clip gradient norm")
    bend_ax.set(xlabel="step", ylabel="degrees (lower bound)", title="angle between the weights' gradient and update")
    for ax in (loss_ax, grad_ax, bend_ax):
        ax.grid(alpha=0.3)
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize=7)
    return fig


def _combine(results: list[bool | None]) -> bool | None:
    """False if any check failed, None if one could not be decided, else True."""
    return False if False in results else None if None in results or not results else True


def report(runs: list[StudyRun], cfg) -> StudyReport:
    columns = ["clipping", "threshold", "seed", "diverged at", "first loss", "final loss", "test acc",
               "max pre-clip norm", "max step norm", "max bend°", "verdict"]
    finished = [r for r in runs if r.ok]
    per_run = [(clip_of(r, cfg), run_stats(r, cfg)) for r in finished]
    rows = [row(r, cfg) for r in sorted(finished, key=lambda r: (_order(clip_of(r, cfg)), str(r.values.get("seed"))))]
    outcomes = checks(per_run)
    supported = _combine([ok for _, ok, _ in outcomes])
    decided = [f"{detail} ({'yes' if ok else 'NO'})" for _, ok, detail in outcomes if ok is not None]
    conclusion = ("; ".join(decided) + "." if decided else
                  "not enough finished runs to decide (needs the unclipped run and clipped ones)")
    notes = [f"- {name}: {'-' if ok is None else 'yes' if ok else 'no'} ({detail})" for name, ok, detail in outcomes]
    notes += ["", "max step norm: the norm of the gradient actually applied to the weights, recovered as "
              "update_ratio x weight norm before the step / lr (plain SGD, probes every step). max bend°: a lower "
              "bound on the angle between the weights' gradient and that update, from the per-layer norms "
              "(clipping keeps signs, so the true angle is at least this). Biases are left out of both."]
    return StudyReport(columns, rows, conclusion, supported, flat_metrics(per_run), {"clipping.png": figure(runs, cfg)},
                       notes)


def flat_metrics(per_run: list[tuple[Clip, dict]]) -> dict[str, float]:
    """diverged/<setting>, final_loss/<setting>, ... averaged over seeds (setting e.g. norm_1, value_0.01)."""
    groups: dict[Clip, list[dict]] = {}
    for clip, st in per_run:
        groups.setdefault(clip, []).append(st)
    out = {}
    for clip, sts in groups.items():
        name = "+".join(f"{k}_{v:g}" for k, v in (("norm", clip.max_norm), ("value", clip.max_value))
                        if v is not None) or "none"
        out[f"diverged/{name}"] = float(np.mean([st["diverged"] for st in sts]))
        for key in ("final loss", "test acc", "max pre-clip norm", "max bend°"):
            vals = [st[key] for st in sts if math.isfinite(st[key])]
            out[f"{key.replace(' ', '_').replace('°', '_deg')}/{name}"] = float(np.mean(vals)) if vals else math.nan
    return out
