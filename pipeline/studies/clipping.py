"""Study `clipping`: an exploding net without clipping, clipped by global norm and by value; and weight
regularization (L2) against weights and gradients that grow under momentum SGD.

The clipping runs (plain SGD, the study's base) are decided per seed: the unclipped run diverges, every clipped
run survives, norm clipping bounds the applied step and keeps its direction, value clipping turns it, the lowest
max_norm is slow. The two cases that change the update rule (momentum, without and with L2) are left out of
those checks and decided on their own: the weight and gradient norms' growth, and whether the net learns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing
from pipeline.studies.measures import thresholds

CLIP_LIMITS = ("bound_tol", "slower", "bent_deg", "kept_deg")
L2_LIMITS = ("weight_grown", "weight_kept", "grad_grown", "grad_kept")
NO_L2, L2 = "no L2", "L2"  # the two roles of the weight-regularization cases


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
        return (
            _threshold(run.values[full])
            if full in run.values
            else _threshold(base.get(key))
            if base is not None
            else None
        )

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
    steps = sorted(
        t for t in ratios[layers[0]] if all(t in grads[k] and t in ratios[k] and t - 1 in weights[k] for k in layers)
    )
    steps_arr = np.array(steps, dtype=float)  # (steps,)
    pre = np.array([[grads[k][t] for k in layers] for t in steps], dtype=float).reshape(len(steps), len(layers))
    moved = np.array([[ratios[k][t] * weights[k][t - 1] for k in layers] for t in steps], dtype=float).reshape(
        len(steps), len(layers)
    )  # (steps, layers): ||W(t) - W(t-1)||
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        post = moved / _lr_at(run, steps_arr)[:, None]
    return steps_arr, pre, post


def step_norms(post: np.ndarray) -> np.ndarray:
    """Global norm of the applied (clipped) weight gradient per step, shape (steps,)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt((post**2).sum(axis=1)) if post.size else np.zeros(0)


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


def changes_update(run: StudyRun) -> bool:
    """The run's case changes the update rule (optimizer or regularizer): an L2 case, not a clipping one."""
    return any(k == "optimizer" or k.startswith(("optimizer.", "regularizer")) for k in run.values)


def l2_role(run: StudyRun) -> str | None:
    """NO_L2 or L2 for a case that changes the update rule (L2 penalty or weight decay on), None otherwise."""
    if not changes_update(run):
        return None
    decay = _threshold(run.values.get("optimizer.weight_decay")) or 0.0
    return L2 if str(run.values.get("regularizer", "none")) != "none" or decay > 0 else NO_L2


def plain_sgd(run: StudyRun, cfg) -> bool:
    """Whether the run's update is lr * gradient (what step_profiles assumes): the study's plain SGD, unchanged."""
    if changes_update(run):
        return False
    opt = OmegaConf.select(cfg, "optimizer", default=None) if cfg is not None else None
    if opt is None:
        return True
    return opt.get("name") == "sgd" and not opt.get("momentum", 0.0) and not opt.get("weight_decay", 0.0)


def profiles(run: StudyRun, cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """step_profiles where the update is lr * gradient, else empty arrays."""
    return step_profiles(run) if plain_sgd(run, cfg) else (np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))


def weight_norms(run: StudyRun) -> tuple[np.ndarray, np.ndarray]:
    """(steps, total weight norm sqrt(sum_l ||W_l||^2)) at the steps where every layer was measured."""
    layers = _layer_series(run, "weight_norm")
    if not layers:
        return np.zeros(0), np.zeros(0)
    steps = sorted(set.intersection(*(set(v) for v in layers.values())))
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.sqrt(
            np.array([[layers[k][t] ** 2 for k in sorted(layers)] for t in steps], dtype=float)
            .reshape(len(steps), len(layers))
            .sum(axis=1)
        )  # (steps,)
    return np.array(steps, dtype=float), total


def weight_growth(run: StudyRun) -> float:
    """Largest finite total weight norm over training / its value at step 0 (before any update)."""
    steps, total = weight_norms(run)
    start = total[steps == 0]
    return _max(total) / float(start[0]) if len(start) and start[0] > 0 else math.nan


def grad_growth(run: StudyRun) -> float:
    """Largest finite pre-clip gradient norm (grad_norm/total) / its first measurement (step 1)."""
    _, norm = run.series("grad_norm/total")
    norm = _finite(norm)
    return _max(norm) / float(norm[0]) if len(norm) and norm[0] > 0 else math.nan


def run_stats(run: StudyRun, cfg) -> dict:
    """The numbers the claim is about, for one run."""
    first, last = loss_ends(run)
    _, gnorm = run.series("grad_norm/total")
    steps, pre, post = profiles(run, cfg)
    return {
        "diverged": run.diverged,
        "diverged at": run.get("diverged_at_step"),
        "first loss": first,
        "final loss": last,
        "test acc": run.get("test/acc"),
        "max pre-clip norm": _max(gnorm),
        "max step norm": _max(step_norms(post)),
        "max bend°": _max(bend_angles(steps, pre, post)[1]),
        "max weight norm / initial": weight_growth(run),
        "max grad norm / first": grad_growth(run),
    }


def setting(run: StudyRun, cfg=None) -> str:
    """What the table and figure call the run's case: its name, else its clipping ("norm <= 1")."""
    return run.case or clip_of(run, cfg).label


def _survived(st: dict) -> bool:
    """Finished without diverging and ended below its first loss."""
    return not st["diverged"] and math.isfinite(st["final loss"]) and st["final loss"] < st["first loss"]


# --- the claim, check by check -----------------------------------------------------------------------

Stats = dict | None  # run_stats of a run, None when it did not finish
PerSeed = dict[str, list[tuple[Clip, Stats]]]  # "seed s" -> (clipping, stats) of its clipping runs


def clipping_runs(runs: list[StudyRun], cfg) -> PerSeed:
    """The plain-SGD clipping runs per seed, each as (clipping, stats)."""
    out: PerSeed = {seed_label(s): [] for s in seeds(runs)}
    for r in runs:
        if l2_role(r) is None:
            out[seed_label(r.seed)].append((clip_of(r, cfg), run_stats(r, cfg) if r.ok else None))
    return out


def of_kind(pairs: list[tuple[Clip, Stats]], kind: str) -> list[tuple[float, Stats]]:
    """(threshold, stats) of one kind of clipping (norm or value), by rising threshold."""
    mine = [(c.max_norm if kind == "norm" else c.max_value, st) for c, st in pairs if c.kind == kind]
    return sorted(((t, st) for t, st in mine if t is not None), key=lambda p: p[0])


def complete(pairs: list[tuple[float, Stats]]) -> list[tuple[float, dict]] | None:
    """The pairs when there are some and every run finished, else None (the check cannot be decided)."""
    done = [(t, st) for t, st in pairs if st is not None]
    return done if pairs and len(done) == len(pairs) else None


def survive_flags(per_seed: PerSeed, kind: str) -> dict[str, bool | None]:
    """{seed: every run clipped this way survived (None: one did not finish, or none in the grid)}."""
    flags: dict[str, bool | None] = {}
    for key, pairs in per_seed.items():
        mine = complete(of_kind(pairs, kind))
        flags[key] = None if mine is None else all(_survived(st) for _, st in mine)
    return flags


def failed_settings(per_seed: PerSeed, kind: str) -> str:
    """How many runs clipped this way survived, and which did not: "11 of 12 survived; not: norm <= 100 (seed 1)"."""
    bad = [
        f"{kind} <= {t:g} ({key})"
        for key, pairs in per_seed.items()
        for t, st in of_kind(pairs, kind)
        if st is not None and not _survived(st)
    ]
    n = sum(len(of_kind(pairs, kind)) for pairs in per_seed.values())
    return f"{n - len(bad)} of {n} runs survived" + (f"; not: {', '.join(bad)}" if bad else "")


def per_seed_value(per_seed: PerSeed, kind: str, measure, pick) -> dict[str, float]:
    """{seed: pick(measure(threshold, stats) over its runs of this kind)}; nan when one did not finish or none."""
    out = {}
    for key, pairs in per_seed.items():
        mine = complete(of_kind(pairs, kind))
        vals = [measure(t, st) for t, st in mine] if mine is not None else [math.nan]
        # a run without the measure (no per-step probes) makes it undecided: max/min would skip a nan not first
        out[key] = math.nan if any(math.isnan(v) for v in vals) else pick(vals)
    return out


def slow_values(per_seed: PerSeed) -> tuple[dict[str, float], dict[str, float], str]:
    """Per seed: the lowest max_norm's final loss and the best other max_norm's; and the lowest's threshold."""
    low, best = {}, {}
    lowest = ""
    for key, pairs in per_seed.items():
        norm = complete(of_kind(pairs, "norm"))
        if norm is None or len(norm) < 2:
            low[key] = best[key] = math.nan
            continue
        lowest = f"{norm[0][0]:g}"
        # a run that did not survive has no final loss to compare: its own check fails
        low[key] = norm[0][1]["final loss"] if _survived(norm[0][1]) else math.nan
        others = [st["final loss"] for _, st in norm[1:] if _survived(st)]
        best[key] = min(others) if others else math.nan
    return low, best, lowest


def clipping_checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The clipping part of the claim, per seed over the plain-SGD runs (thresholds from study.checks)."""
    lim = thresholds(cfg, *CLIP_LIMITS)
    per_seed = clipping_runs(runs, cfg)
    none = {key: [st for c, st in pairs if c.kind == "none"] for key, pairs in per_seed.items()}
    diverged: dict[str, bool | None] = {}
    for key, sts in none.items():
        done = [st for st in sts if st is not None]
        diverged[key] = all(st["diverged"] for st in done) if sts and len(done) == len(sts) else None
    steps = ", ".join(
        f"{st['diverged at']:g}" if st["diverged"] else "survived"
        for sts in none.values()
        for st in sts
        if st is not None
    )
    out = [
        every(
            "without clipping the run diverges",
            diverged,
            measured=f"diverged at step {steps}" if steps else "",
            expected="diverged on every seed",
        )
    ]
    out.append(
        every(
            "every norm-clipped run survives and its loss falls",
            survive_flags(per_seed, "norm"),
            measured=failed_settings(per_seed, "norm"),
            expected="on every seed",
        )
    )
    bound = per_seed_value(per_seed, "norm", lambda t, st: st["max step norm"] / t, max)
    out.append(
        compare(
            "norm clipping bounds every step: largest applied weight-gradient norm / max_norm",
            bound,
            "<=",
            1 + lim["bound_tol"],
        )
    )
    low, best, lowest = slow_values(per_seed)
    out.append(
        compare(
            f"a very low threshold slows training: max_norm {lowest or 'lowest'} ends at a final loss over "
            f"{lim['slower']:g} x the best other max_norm's",
            low,
            ">",
            best,
            times=lim["slower"],
            scale="log",
            limit_name="the best other max_norm's final loss",
        )
    )
    out.append(
        every(
            "every value-clipped run survives and its loss falls",
            survive_flags(per_seed, "value"),
            measured=failed_settings(per_seed, "value"),
            expected="on every seed",
        )
    )
    bent = per_seed_value(per_seed, "value", lambda t, st: st["max bend°"], min)
    out.append(
        compare(
            "value clipping turns the update from the gradient: the least-turned value-clipped run's "
            "largest angle (degrees)",
            bent,
            ">",
            lim["bent_deg"],
        )
    )
    kept = per_seed_value(per_seed, "norm", lambda t, st: st["max bend°"], max)
    out.append(
        compare(
            "norm clipping keeps the update's direction: the most-turned norm-clipped run's largest angle (degrees)",
            kept,
            "<",
            lim["kept_deg"],
        )
    )
    return out


def role_runs(runs: list[StudyRun], role: str) -> dict[str, StudyRun | None]:
    """{"seed s": the run of this role} (None: not finished); empty when the grid has no such case."""
    mine = [r for r in runs if l2_role(r) == role]
    return {seed_label(r.seed): (r if r.ok else None) for r in sorted(mine, key=lambda r: r.seed)}


def per_role(by_seed: dict[str, StudyRun | None], measure) -> dict[str, float]:
    return {key: (measure(r) if r is not None else math.nan) for key, r in by_seed.items()}


def outcomes(by_seed: dict[str, StudyRun | None]) -> str:
    """ "test acc diverged (step 73), 0.10, 0.93" in seed order."""

    def text(r: StudyRun | None) -> str:
        if r is None:
            return "missing"
        return f"diverged (step {r.get('diverged_at_step'):g})" if r.diverged else f"{r.get('test/acc'):.2f}"

    return "test acc " + ", ".join(text(r) for r in by_seed.values())


def l2_checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The weight-regularization part, per seed: without L2 weights and gradients grow and the run fails;
    with L2 both stay bounded and the net learns."""
    lim = thresholds(cfg, *L2_LIMITS)
    without, with_l2 = role_runs(runs, NO_L2), role_runs(runs, L2)
    if not without or not with_l2:
        return [
            missing(
                "weight regularization limits exploding gradients",
                "a case without and one with L2",
                "this size runs no "
                + " and no ".join(n for n, c in ((NO_L2, without), (L2, with_l2)) if not c)
                + " case",
            )
        ]
    return [
        compare(
            "without L2 (momentum SGD) the weights grow: max total weight norm / initial",
            per_role(without, weight_growth),
            ">",
            lim["weight_grown"],
            scale="log",
        ),
        compare(
            "... its gradients explode: max pre-clip gradient norm / the first",
            per_role(without, grad_growth),
            ">",
            lim["grad_grown"],
            scale="log",
        ),
        every(
            "... and the run diverges or does not learn",
            {k: (not r.learned if r is not None else None) for k, r in without.items()},
            measured=outcomes(without),
            expected="on every seed",
        ),
        compare(
            "with L2 the weight norm stays bounded: max total weight norm / initial",
            per_role(with_l2, weight_growth),
            "<=",
            lim["weight_kept"],
            scale="log",
        ),
        compare(
            "... so does the gradient norm: max pre-clip gradient norm / the first",
            per_role(with_l2, grad_growth),
            "<=",
            lim["grad_kept"],
            scale="log",
        ),
        every(
            "... and the net learns",
            {k: (r.learned if r is not None else None) for k, r in with_l2.items()},
            measured=outcomes(with_l2),
            expected="learns on every seed",
        ),
    ]


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/clipping.yaml)."""
    return clipping_checks(runs, cfg) + l2_checks(runs, cfg)


# --- table, figure, metrics --------------------------------------------------------------------------

KIND_ORDER = {"none": 0, "norm": 1, "value": 2}
ROLE_COLOURS = {NO_L2: "tab:red", L2: "tab:green"}


def _order(clip: Clip) -> tuple:
    """none first, then norm and value clipping by rising threshold."""
    return KIND_ORDER.get(clip.kind, 3), clip.max_norm or 0.0, clip.max_value or 0.0


def run_order(run: StudyRun, cfg) -> tuple:
    """The table's order: the clipping runs (none, norm, value by threshold), then no L2, L2; seeds within."""
    role = l2_role(run)
    return (role is not None, (NO_L2, L2).index(role) if role else 0, _order(clip_of(run, cfg)), run.seed)


def _colour(clip: Clip, rank: float):
    """Black for none; blues for norm, oranges for value, darker for higher thresholds (rank in [0, 1])."""
    from matplotlib import colormaps

    if clip.kind == "none":
        return "black"
    return colormaps["Blues" if clip.kind == "norm" else "Oranges"](0.35 + 0.6 * rank)


def _shown(runs: list[StudyRun], cfg) -> dict[Clip, StudyRun]:
    """One clipping run per setting (the lowest finished seed), in the table's order."""
    shown: dict[Clip, StudyRun] = {}
    for run in sorted(runs, key=lambda r: r.seed):
        if run.ok and l2_role(run) is None:
            shown.setdefault(clip_of(run, cfg), run)
    return dict(sorted(shown.items(), key=lambda kv: _order(kv[0])))


def _trace(
    ax, steps: np.ndarray, vals: np.ndarray, diverged: bool, colour, label: str | None, lw: float = 1.2
) -> tuple[float, float]:
    """Plot a positive series against step; mark divergence; return its smallest and largest finite value."""
    ok = np.isfinite(vals) & (vals > 0)
    if not ok.any():
        return math.nan, math.nan
    ax.plot(steps[ok], vals[ok], color=colour, lw=lw, label=label)
    if diverged:
        ax.plot(steps[ok][-1], vals[ok][-1], "x", color="red", ms=8, mew=2)
    return float(vals[ok].min()), float(vals[ok].max())


def clipping_panels(axes, runs: list[StudyRun], cfg) -> None:
    """Train loss, pre-clip gradient norm and the update's turn from the gradient per clipping setting (one seed)."""
    loss_ax, grad_ax, bend_ax = axes
    shown = _shown(runs, cfg)
    surviving = []  # (min, max) of each surviving loss curve
    for clip, run in shown.items():
        same = sorted({_order(c) for c in shown if c.kind == clip.kind})
        colour = _colour(clip, same.index(_order(clip)) / max(len(same) - 1, 1))
        low, high = _trace(loss_ax, *run.series("train/loss"), run.diverged, colour, clip.label)
        if not run.diverged and math.isfinite(high):
            surviving.append((low, high))
        _trace(grad_ax, *run.series("grad_norm/total"), run.diverged, colour, clip.label)
        steps, angles = bend_angles(*profiles(run, cfg))
        if len(steps) and clip.kind != "none":
            bend_ax.plot(steps, angles, color=colour, lw=1, label=clip.label)
    seed = next(iter(shown.values())).seed if shown else "-"
    loss_ax.set(
        yscale="log",
        xlabel="step",
        ylabel="train loss",
        title=f"clipping: train loss (seed {seed}; x: diverged, off the top)",
    )
    if surviving:  # a diverged loss (1e27...) would flatten every other curve: let it leave the top
        loss_ax.set_ylim(0.5 * min(lo for lo, _ in surviving), 100 * max(hi for _, hi in surviving))
    grad_ax.set(
        yscale="log", xlabel="step", ylabel="||g|| before clipping", title=f"pre-clip gradient norm (seed {seed})"
    )
    bend_ax.set(
        xlabel="step",
        ylabel="degrees (lower bound)",
        title=f"angle between the weights' gradient and update (seed {seed})",
    )
    if loss_ax.get_legend_handles_labels()[0]:
        loss_ax.legend(fontsize=7)


def l2_panels(axes, runs: list[StudyRun]) -> None:
    """Total weight norm / initial, pre-clip gradient norm and train loss of the L2 cases, every seed."""
    weight_ax, grad_ax, loss_ax = axes
    for role, colour in ROLE_COLOURS.items():
        mine = [r for r in finished(runs) if l2_role(r) == role]
        for k, run in enumerate(sorted(mine, key=lambda r: r.seed)):
            name = (run.case or role) if k == 0 else None
            steps, total = weight_norms(run)
            start = total[steps == 0]
            if len(start) and start[0] > 0:
                _trace(weight_ax, steps, total / start[0], run.diverged, colour, name, lw=1)
            _trace(grad_ax, *run.series("grad_norm/total"), run.diverged, colour, name, lw=1)
            _trace(loss_ax, *run.series("train/loss"), run.diverged, colour, name, lw=1)
    weight_ax.set(
        yscale="log",
        xlabel="step",
        ylabel="||W|| / ||W|| at step 0 (all layers)",
        title="momentum SGD: weight norm (every seed; x: diverged)",
    )
    grad_ax.set(yscale="log", xlabel="step", ylabel="||g||", title="momentum SGD: gradient norm (every seed)")
    loss_ax.set(yscale="log", xlabel="step", ylabel="train loss", title="momentum SGD: train loss (every seed)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)


def figure(runs: list[StudyRun], cfg) -> Figure:
    """Top: the clipping settings (one seed each); bottom: the L2 cases (every seed)."""
    fig = Figure(figsize=(16, 9), layout="constrained")
    top, bottom = fig.subplots(2, 3)
    clipping_panels(top, runs, cfg)
    l2_panels(bottom, runs)
    for ax in (*top, *bottom):
        ax.grid(alpha=0.3)
    return fig


def metric_name(run: StudyRun, cfg) -> str:
    """A run's setting in metric keys: none, norm_1, value_0.01, or the L2 case's name (momentum_no_L2)."""
    if l2_role(run) is not None:
        return setting(run, cfg).replace(" ", "_")
    clip = clip_of(run, cfg)
    return (
        "+".join(f"{k}_{v:g}" for k, v in (("norm", clip.max_norm), ("value", clip.max_value)) if v is not None)
        or "none"
    )


METRIC_KEYS = {
    "final loss": "final_loss",
    "test acc": "test_acc",
    "max pre-clip norm": "max_pre-clip_norm",
    "max bend°": "max_bend_deg",
    "max weight norm / initial": "weight_growth",
    "max grad norm / first": "grad_growth",
}


def flat_metrics(runs: list[StudyRun], cfg) -> dict[str, float]:
    """diverged/<setting>, final_loss/<setting>, ... averaged over seeds (setting e.g. norm_1, value_0.01)."""
    groups: dict[str, list[dict]] = {}
    for run in finished(runs):
        groups.setdefault(metric_name(run, cfg), []).append(run_stats(run, cfg))
    out = {}
    for name, sts in groups.items():
        out[f"diverged/{name}"] = float(np.mean([st["diverged"] for st in sts]))
        for key, short in METRIC_KEYS.items():
            vals = [st[key] for st in sts if math.isfinite(st[key])]
            out[f"{short}/{name}"] = float(np.mean(vals)) if vals else math.nan
    return out


COLUMNS = [
    "setting",
    "seed",
    "diverged at",
    "first loss",
    "final loss",
    "test acc",
    "max pre-clip norm",
    "max step norm",
    "max bend°",
    "max weight norm / initial",
    "max grad norm / first",
    "learned",
    "verdict",
]

NOTES = [
    " ".join(
        [
            "Each row folds the seeds: mean (min..max). The clipping settings run plain SGD on the N(0, 0.3^2) net;",
            "`momentum no L2` and `momentum L2` run momentum SGD from He's scale, unclipped, and are left out of the",
            "clipping checks. first / final loss: the first and last logged training loss (the running mean over the",
            "steps since the previous log, the L2 penalty included; a diverged run's last finite one). max step norm:",
            "the norm of the gradient actually applied to the weights, recovered as update_ratio x weight norm before",
            "the step / lr (plain SGD, probes every step). max bend°: a lower bound on the angle between the weights'",
            "gradient and that update, from the per-layer norms (clipping keeps signs, so the true angle is at least",
            "this). Biases are left out of both. max weight norm / initial: the largest finite total weight norm",
            "sqrt(sum_l ||W_l||^2) over training, over its value before any update. max grad norm / first: the largest",
            "finite pre-clip gradient norm (grad_norm/total, the L2 penalty's gradient included) "
            "over the first one, at",
            "step 1. learned: not `not_learning` (final training loss below 0.99 x a constant predictor's, and test",
            "accuracy more than a quarter of the way from chance to 1) and not diverged.",
        ]
    )
]


def row(run: StudyRun, cfg) -> dict:
    """A table row for one finished run."""
    st = run_stats(run, cfg)
    return {
        "setting": setting(run, cfg),
        "seed": run.seed,
        **{k: v for k, v in st.items() if k != "diverged"},
        "learned": run.learned,
        "verdict": ",".join(run.verdict) or run.status,
    }


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = [row(r, cfg) for r in sorted(finished(runs), key=lambda r: run_order(r, cfg))]
    columns, rows = seed_table(per_run, ["setting"], COLUMNS)
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        flat_metrics(runs, cfg),
        {"clipping.png": figure(runs, cfg)},
        list(NOTES),
        {"runs.csv": per_run},
    )
