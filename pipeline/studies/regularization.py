"""Study `regularization`: L1 sets weights to zero, L2 shrinks them smoothly, each helps at its own best strength
(chosen on validation) and hurts when too strong; SGD's L2 penalty is its weight decay, Adam's is not AdamW's.

A run's setting (optimizer family, method, strength λ) is read from its swept values, so the study's own cases
and `python -m pipeline.ablate`'s grid (any optimizers, penalties and strengths) are read alike. The penalty
parts are decided under plain SGD, whose step is the penalty's gradient as written; the decoupling part under
Adam. Other optimizers and penalties (elastic) are shown in the table and figure, not decided.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from pipeline.harness.paths import CONF_DIR
from pipeline.probes.weights import SPARSE_BELOW
from pipeline.studies.base import Findings, StudyRun, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every, missing, number
from pipeline.studies.measures import thresholds

METHODS = ("none", "l1", "l2", "elastic", "decay", "coupled decay")
FAMILY_OF = {"sgd": "sgd", "adam": "adam", "adamw": "adam"}  # adamw is Adam with its decay decoupled
DECOUPLED = ("sgd", "adamw")  # plain SGD's coupled decay is the same step as decoupled decay
PENALTIES_UNDER = "sgd"  # the family the penalty parts are decided in: its step is the penalty's gradient as written
DECAY_UNDER = "adam"  # the family the decoupling part is decided in
LIMITS = ("l1_sparse_min", "l2_share_of_l1_max", "help_gain_min", "hurt_loss_min", "same_rel_max", "differ_rel_min")


# --- what a run regularizes with ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """What a run regularizes with: optimizer family, method and its strength λ."""

    family: str  # sgd | adam | another optimizer's name
    method: str  # one of METHODS, or "<penalty>+decay" when both are on
    strength: float  # regularizer.strength or optimizer.weight_decay; 0 for none


@functools.cache  # read once per process: a study asks for every run
def _group_default(group: str, option: str, key: str, fallback: float) -> float:
    """A key's value in conf/<group>/<option>.yaml (the option's own default)."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.exists():
        return fallback
    loaded = OmegaConf.load(path)
    return float(loaded.get(key, fallback)) if isinstance(loaded, DictConfig) else fallback


def _number(text, fallback: float) -> float:
    """A swept value as a number; the fallback for null or text."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return fallback


def _chosen(run: StudyRun, cfg, group: str, key: str) -> tuple[str, float]:
    """A group's option and one of its values for this run: swept value, else the study's, else the option's."""
    base = OmegaConf.select(cfg, group, default=None) if cfg is not None else None
    base_name = str(base.get("name")) if base is not None else ("sgd" if group == "optimizer" else "none")
    name = str(run.values.get(group, base_name))
    fallback = (
        _number(base.get(key), 0.0) if base is not None and name == base_name else _group_default(group, name, key, 0.0)
    )
    return name, _number(run.values.get(f"{group}.{key}"), fallback)


def optimizer_of(run: StudyRun, cfg=None) -> str:
    """The run's optimizer as configured (adamw, not its family)."""
    return _chosen(run, cfg, "optimizer", "weight_decay")[0]


def setting(run: StudyRun, cfg=None) -> Setting:
    """The run's family, method and strength, read from its swept values (the study's config fills gaps)."""
    optimizer, decay = _chosen(run, cfg, "optimizer", "weight_decay")
    penalty, strength = _chosen(run, cfg, "regularizer", "strength")
    family = FAMILY_OF.get(optimizer, optimizer)
    decay_name = "decay" if optimizer in DECOUPLED else "coupled decay"
    penalty_on = penalty != "none" and strength > 0
    if penalty_on and decay > 0:
        return Setting(family, f"{penalty}+{decay_name}", strength)
    if penalty_on:
        return Setting(family, penalty, strength)
    if decay > 0:
        return Setting(family, decay_name, decay)
    return Setting(family, "none", 0.0)


# --- per-run measures ------------------------------------------------------------------------------------------


def weight_norm(run: StudyRun) -> float:
    """Frobenius norm of all weight matrices together, at the end."""
    norms = run.layer_values("weight_norm")
    return math.sqrt(sum(v * v for v in norms)) if norms else math.nan


def sparsity(run: StudyRun) -> float:
    """Share of weights with |w| < SPARSE_BELOW at the end (the sparsity probe)."""
    return run.get("sparsity/total")


def accuracy(run: StudyRun | None, split: str) -> float:
    """Final accuracy on `split` (train, val, test); -inf for a diverged run (it predicts nothing), nan if missing."""
    if run is None or not run.ok:
        return math.nan
    if run.diverged:  # its last val/acc is from before it diverged: not what it ends as
        return -math.inf
    return run.get("train/final_acc" if split == "train" else f"{split}/acc")


def val_loss(run: StudyRun) -> float:
    """Final validation loss; inf for a diverged run or none measured (the worse tie-break)."""
    loss = run.get("val/loss")
    return math.inf if run.diverged or not math.isfinite(loss) else loss


def finished_value(run: StudyRun | None, measure: Callable[[StudyRun], float]) -> float:
    """measure(run) for a finished run, nan for a missing one."""
    return measure(run) if run is not None and run.ok else math.nan


def relative(a: float, b: float) -> float:
    """|a - b| relative to a."""
    return abs(a - b) / max(abs(a), 1e-12)


# --- the runs by setting and seed ------------------------------------------------------------------------------

Conditions = dict[Setting, dict[str, StudyRun]]  # setting -> seed -> its run (the latest attempt, finished or not)


def conditions(runs: list[StudyRun], cfg) -> Conditions:
    """The runs by setting and seed."""
    out: Conditions = {}
    for run in runs:
        out.setdefault(setting(run, cfg), {})[run.seed] = run
    return out


def strengths(conds: Conditions, family: str, method: str) -> list[float]:
    """The strengths a method ran with in a family, ascending."""
    return sorted(s.strength for s in conds if s.family == family and s.method == method)


def at(conds: Conditions, family: str, method: str, lam: float, seed: str) -> StudyRun | None:
    """The run of one setting and seed, None if the grid has none."""
    return conds.get(Setting(family, method, lam), {}).get(seed)


def baseline(conds: Conditions, family: str, seed: str) -> StudyRun | None:
    """The family's unregularized run of one seed."""
    return at(conds, family, "none", 0.0, seed)


def by_seed(seeds: list[str], value: Callable[[str], float]) -> dict[str, float]:
    """{"seed 0": value("0"), ...}: the labels checks compare on."""
    return {seed_label(s): value(s) for s in seeds}


def tuned(conds: Conditions, family: str, method: str, seed: str) -> tuple[float, StudyRun | None]:
    """The method's strength for one seed chosen on validation, never test: the highest val acc, then the lowest
    val loss, then the weaker λ. (nan, None) while one of its strengths did not finish or has no val numbers."""
    lams = strengths(conds, family, method)
    found = [at(conds, family, method, lam, seed) for lam in lams]
    runs = [r for r in found if r is not None and r.ok]
    if not found or len(runs) < len(found):
        return math.nan, None
    scores = [(accuracy(r, "val"), -val_loss(r)) for r in runs]
    if any(math.isnan(acc) for acc, _ in scores):
        return math.nan, None
    best = max(range(len(runs)), key=lambda i: scores[i])  # max keeps the first of equals: the weaker λ
    return lams[best], runs[best]


def sparse_strength(conds: Conditions) -> float:
    """L1's strongest λ under SGD whose zeros the sparsity probe can see, nan if none.

    Subgradient L1 leaves a zeroed weight jittering within about lr·λ of 0 (one step of lr·λ·sign(w)
    overshoots), so it counts as |w| < SPARSE_BELOW only while lr·λ stays below that.
    """
    runs = [r for s, by in conds.items() if s.family == PENALTIES_UNDER for r in by.values() if r.ok]
    lrs = [r.get("lr") for r in runs if math.isfinite(r.get("lr"))]
    if not lrs:
        return math.nan
    lams = [lam for lam in strengths(conds, PENALTIES_UNDER, "l1") if max(lrs) * lam <= SPARSE_BELOW * (1 + 1e-9)]
    return lams[-1] if lams else math.nan


# --- the claim, check by check ---------------------------------------------------------------------------------


def l1_zeros(conds: Conditions, seeds: list[str], lim: dict[str, float]) -> Check:
    """L1's share of weights at zero, at its strongest strength whose zeros can be seen."""
    lam = sparse_strength(conds)
    name = "SGD: l1 sets weights to zero: share of |w| < 1e-3"
    if math.isnan(lam):
        return missing(name, f">= {number(lim['l1_sparse_min'])}", "no finished sgd l1 run with lr·λ <= 1e-3")
    shares = by_seed(seeds, lambda s: finished_value(at(conds, PENALTIES_UNDER, "l1", lam, s), sparsity))
    return compare(f"{name} at λ={lam:g} (its strongest with lr·λ <= 1e-3)", shares, ">=", lim["l1_sparse_min"])


def sparsity_at_norm(points: list[tuple[float, float]], target: float) -> float:
    """The sparsity at weight norm `target` along (norm, sparsity) points ordered by λ, interpolated linearly in
    log(norm) between the first two neighbours that bracket it; nan when no pair does."""
    for (n0, s0), (n1, s1) in itertools.pairwise(points):
        if min(n0, n1) <= target <= max(n0, n1) and min(n0, n1) > 0:
            t = 0.0 if n0 == n1 else (math.log(n0) - math.log(target)) / (math.log(n0) - math.log(n1))
            return s0 + t * (s1 - s0)
    return math.nan


def l2_path(conds: Conditions, seed: str) -> list[StudyRun | None]:
    """One seed's runs along L2's strengths, ascending, from no penalty (λ = 0) where the grid has it."""
    lams = strengths(conds, PENALTIES_UNDER, "l2")
    start = [baseline(conds, PENALTIES_UNDER, seed)] if Setting(PENALTIES_UNDER, "none", 0.0) in conds else []
    return start + [at(conds, PENALTIES_UNDER, "l2", x, seed) for x in lams]


def l2_dense(conds: Conditions, seeds: list[str], lim: dict[str, float]) -> Check:
    """L2's share of weights near zero where it has shrunk the weight norm exactly as far as L1 did (matched
    shrinkage: interpolated between the two l2 strengths around L1's norm, no penalty counting as λ = 0),
    against L1's own share: L2 spreads its shrinkage over every weight, L1 puts it into zeros."""
    lam = sparse_strength(conds)
    lams = strengths(conds, PENALTIES_UNDER, "l2")
    name = "SGD: l2 shrinks without zeroing: share of |w| < 1e-3 at the weight norm l1 ends at"
    if math.isnan(lam) or not lams:
        return missing(
            name,
            f"< {number(lim['l2_share_of_l1_max'])} x l1's share",
            "needs sgd l1 with lr·λ <= 1e-3 and sgd l2 runs",
        )
    short = []

    def share(seed: str) -> float:
        target = finished_value(at(conds, PENALTIES_UNDER, "l1", lam, seed), weight_norm)
        path = l2_path(conds, seed)
        runs = [r for r in path if r is not None and r.ok]
        if math.isnan(target) or len(runs) < len(path):
            return math.nan
        value = sparsity_at_norm([(weight_norm(r), sparsity(r)) for r in runs], target)
        if math.isnan(value):
            short.append(seed)
        return value

    l1_share = by_seed(seeds, lambda s: finished_value(at(conds, PENALTIES_UNDER, "l1", lam, s), sparsity))
    check = compare(
        f"{name} (l1 at λ={lam:g}; l2 interpolated between its strengths)",
        by_seed(seeds, share),
        "<",
        l1_share,
        times=lim["l2_share_of_l1_max"],
        scale="log",
        limit_name="l1's share",
    )
    if short:  # not a missing run: the grid's l2 strengths do not reach l1's weight norm
        check.why = f"the l2 strengths do not bracket l1's weight norm on seed {', '.join(short)}"
    return check


def l2_shrinks(conds: Conditions, seeds: list[str]) -> Check:
    """L2's weight norm falls at every step up in λ, from no penalty on, on every seed."""
    lams = strengths(conds, PENALTIES_UNDER, "l2")
    has_base = Setting(PENALTIES_UNDER, "none", 0.0) in conds
    name = "SGD: l2 shrinks the weight norm smoothly: it falls at every step up in λ"
    expected = "falls at every step on every seed"
    if len(lams) + has_base < 2:
        return missing(name, expected, "needs two sgd l2 strengths, or one and no penalty")
    norms = {s: [finished_value(r, weight_norm) for r in l2_path(conds, s)] for s in seeds}  # seed -> along λ
    flags = {
        seed_label(s): None if any(math.isnan(v) for v in n) else all(b < a for a, b in itertools.pairwise(n))
        for s, n in norms.items()
    }
    means = [
        float(np.nanmean(col)) if not all(math.isnan(v) for v in col) else math.nan for col in zip(*norms.values())
    ]
    steps = ", ".join(["none"] * has_base + [f"{x:g}" for x in lams])
    return every(
        f"{name} (λ = {steps})", flags, measured="mean norm " + " -> ".join(number(m) for m in means), expected=expected
    )


def helps(conds: Conditions, seeds: list[str], lim: dict[str, float], method: str) -> Check:
    """The method at its own best strength (chosen on validation per seed) against no penalty, on test."""
    chosen = {}

    def gain(seed: str) -> float:
        lam, best = tuned(conds, PENALTIES_UNDER, method, seed)
        chosen[seed] = lam
        return accuracy(best, "test") - accuracy(baseline(conds, PENALTIES_UNDER, seed), "test")

    check = compare(
        f"SGD: {method} helps at its own best strength (chosen on validation): test acc gain over no penalty",
        by_seed(seeds, gain),
        ">",
        lim["help_gain_min"],
    )
    check.measured += "; λ chosen " + ", ".join(number(chosen[s]) for s in seeds)
    return check


def hurts(conds: Conditions, seeds: list[str], lim: dict[str, float], method: str) -> Check:
    """Too much of the method: the test accuracy lost against no penalty at the grid's strongest λ."""
    lams = strengths(conds, PENALTIES_UNDER, method)
    name = f"SGD: too much {method} hurts: test acc lost against no penalty at the strongest λ"
    if not lams:
        return missing(name, f"> {number(lim['hurt_loss_min'])}", f"no sgd {method} run")
    top = lams[-1]
    lost = by_seed(
        seeds,
        lambda s: (
            accuracy(baseline(conds, PENALTIES_UNDER, s), "test")
            - accuracy(at(conds, PENALTIES_UNDER, method, top, s), "test")
        ),
    )
    return compare(f"{name}={top:g}", lost, ">", lim["hurt_loss_min"])


def sgd_same(conds: Conditions, seeds: list[str], lim: dict[str, float]) -> Check:
    """Under SGD an l2 penalty of strength λ and weight_decay=λ are one update: the same weights."""
    shared = sorted(set(strengths(conds, "sgd", "l2")) & set(strengths(conds, "sgd", "decay")))
    name = "SGD: an l2 penalty λ and weight_decay=λ end at the same weights: relative weight-norm difference"
    if not shared:
        return missing(name, f"<= {number(lim['same_rel_max'])}", "needs sgd l2 and sgd weight_decay at a shared λ")

    def diff(seed: str) -> float:
        pairs = [(at(conds, "sgd", "l2", x, seed), at(conds, "sgd", "decay", x, seed)) for x in shared]
        return max(relative(finished_value(a, weight_norm), finished_value(b, weight_norm)) for a, b in pairs)

    lams = ", ".join(f"{x:g}" for x in shared)
    return compare(f"{name} (largest over λ = {lams})", by_seed(seeds, diff), "<=", lim["same_rel_max"])


def adam_differs(conds: Conditions, seeds: list[str], lim: dict[str, float]) -> Check:
    """Under Adam an l2 penalty λ and AdamW's decoupled decay λ end elsewhere, where Adam + l2 is tuned to."""
    name = (
        "Adam: an l2 penalty λ and AdamW's decoupled weight_decay=λ end at different weights: relative "
        "weight-norm difference at Adam + l2's best λ (chosen on validation)"
    )
    expected = f"> {number(lim['differ_rel_min'])}"
    if not strengths(conds, DECAY_UNDER, "l2") or not strengths(conds, DECAY_UNDER, "decay"):
        return missing(name, expected, "needs adam + l2 and adamw runs")
    chosen = {}

    def diff(seed: str) -> float:
        lam, coupled = tuned(conds, DECAY_UNDER, "l2", seed)
        chosen[seed] = lam
        decoupled = at(conds, DECAY_UNDER, "decay", lam, seed) if coupled is not None else None
        return relative(finished_value(coupled, weight_norm), finished_value(decoupled, weight_norm))

    check = compare(name, by_seed(seeds, diff), ">", lim["differ_rel_min"])
    check.measured += "; λ chosen " + ", ".join(number(chosen[s]) for s in seeds)
    return check


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/regularization.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    conds, every = conditions(runs, cfg), seeds(runs)
    return [
        l1_zeros(conds, every, lim),
        l2_dense(conds, every, lim),
        l2_shrinks(conds, every),
        helps(conds, every, lim, "l1"),
        helps(conds, every, lim, "l2"),
        hurts(conds, every, lim, "l1"),
        hurts(conds, every, lim, "l2"),
        sgd_same(conds, every, lim),
        adam_differs(conds, every, lim),
    ]


# --- the table, figure and flat metrics ------------------------------------------------------------------------


def row(run: StudyRun, cfg) -> dict:
    """A table row for one finished run."""
    s = setting(run, cfg)
    train, test = accuracy(run, "train"), accuracy(run, "test")
    return {
        "optimizer": optimizer_of(run, cfg),
        "method": s.method,
        "λ": s.strength,
        "seed": run.seed,
        "train acc": train,
        "val acc": accuracy(run, "val"),
        "test acc": test,
        "gap": train - test if math.isfinite(train) and math.isfinite(test) else math.nan,
        "weight norm": weight_norm(run),
        "sparsity": sparsity(run),
        "verdict": ",".join(run.verdict) or run.status,
    }


def _row_order(r: dict) -> tuple:
    """SGD rows first, then by optimizer, method, strength and seed."""
    family = FAMILY_OF.get(r["optimizer"], r["optimizer"])
    seed = int(r["seed"]) if str(r["seed"]).lstrip("-").isdigit() else 0
    return (
        family != "sgd",
        family,
        r["optimizer"],
        METHODS.index(r["method"]) if r["method"] in METHODS else 99,
        r["λ"],
        seed,
        str(r["seed"]),
    )


COLUMNS = [
    "optimizer",
    "method",
    "λ",
    "seed",
    "train acc",
    "val acc",
    "test acc",
    "gap",
    "weight norm",
    "sparsity",
    "verdict",
]
PANELS = ("test acc", "gap", "weight norm", "sparsity")  # the figure's columns, keys of `row`


def spread(rows: list[dict]) -> dict[Setting, dict[str, tuple[float, float, float]]]:
    """Per setting and panel quantity: (mean, min, max) over the seeds' finite values."""
    groups: dict[Setting, list[dict]] = {}
    for r in rows:
        groups.setdefault(Setting(FAMILY_OF.get(r["optimizer"], r["optimizer"]), r["method"], r["λ"]), []).append(r)
    out: dict[Setting, dict] = {}
    for s, group in groups.items():
        out[s] = {}
        for key in PANELS:
            vals = [r[key] for r in group if math.isfinite(r[key])]
            out[s][key] = (float(np.mean(vals)), min(vals), max(vals)) if vals else (math.nan,) * 3
    return out


def families(stats: dict[Setting, dict]) -> list[str]:
    """Families present, sgd and adam first."""
    present = {s.family for s in stats}
    return [f for f in ("sgd", "adam") if f in present] + sorted(present - {"sgd", "adam"})


COLOURS = {
    "l1": "tab:green",
    "l2": "tab:red",
    "elastic": "tab:orange",
    "decay": "tab:blue",
    "coupled decay": "tab:purple",
}


def _method_label(family: str, method: str) -> str:
    """Legend text: which weight decay a "decay" line is."""
    if method == "decay":
        return "decay (adamw)" if family == "adam" else f"decay ({family} weight_decay)"
    return method


def _panel(ax, stats: dict[Setting, dict], family: str, key: str, lr: float) -> None:
    """One quantity against λ: a line per method (mean, min..max band over seeds), no penalty as a level."""
    methods = sorted(
        {s.method for s in stats if s.family == family} - {"none"},
        key=lambda m: (METHODS.index(m) if m in METHODS else 99, m),
    )
    lams = []
    for method in methods:  # decay dashed: under SGD it lies exactly on l2
        pts = sorted(
            (s.strength, *v[key])
            for s, v in stats.items()
            if s.family == family and s.method == method and s.strength > 0 and math.isfinite(v[key][0])
        )
        if pts:
            lam, mean, lo, hi = (np.array(c) for c in zip(*pts))  # (strengths,) each
            ax.plot(
                lam,
                mean,
                "--" if "decay" in method else "-",
                marker="o",
                ms=4,
                color=COLOURS.get(method),
                label=_method_label(family, method),
            )
            ax.fill_between(lam, lo, hi, color=COLOURS.get(method), alpha=0.15, lw=0)
            lams += list(lam)
    base = stats.get(Setting(family, "none", 0.0), {}).get(key)
    if base is not None and math.isfinite(base[0]):
        ax.axhline(base[0], color="grey", ls=":", label="none")
        ax.axhspan(base[1], base[2], color="grey", alpha=0.1, lw=0)
    if key == "sparsity" and family == PENALTIES_UNDER and math.isfinite(lr) and lr > 0:
        limit = ax.axvline(
            SPARSE_BELOW / lr, color="k", lw=0.8, ls="-.", label="lr·λ = 1e-3: l1 zeros counted left of it"
        )
        ax.legend(handles=[limit], fontsize=7, loc="center right")
    if lams:  # limits set first: one λ alone would give a zero-width log axis
        ax.set_xlim(min(lams) / 2, max(lams) * 2)
        ax.set_xscale("log")
    ax.set(xlabel="strength λ", ylabel=key, title=f"{family}: {key}")
    ax.grid(alpha=0.3)


def figure(rows: list[dict], lr: float) -> Figure:
    """Per family (rows): test acc, gap, weight norm and sparsity against λ, seeds as mean and min..max."""
    stats = spread(rows)
    fams = families(stats) or ["sgd"]
    fig = Figure(figsize=(15, 3.6 * len(fams)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(fams), len(PANELS)))  # (families, panels)
    for family, ax_row in zip(fams, axes):
        for ax, key in zip(ax_row, PANELS):
            _panel(ax, stats, family, key, lr)
        if ax_row[0].get_legend_handles_labels()[0]:
            ax_row[0].legend(fontsize=7)
    fig.suptitle(
        "regularization strength: accuracy, train/test gap, weight norm, sparsity (|w| < 1e-3); "
        "lines: mean over seeds, bands: min..max"
    )
    return fig


# flat metric names of the checks' mean values, in the order `checks` returns them
CHECK_METRICS = (
    "l1_sparsity/sgd",
    "l2_sparsity_matched/sgd",
    "l2_norm_falls/sgd",
    "gain/sgd/l1",
    "gain/sgd/l2",
    "loss_strongest/sgd/l1",
    "loss_strongest/sgd/l2",
    "l2_vs_decay_norm_diff/sgd",
    "l2_vs_adamw_norm_diff/adam",
)


def flat_metrics(rows: list[dict], found: list[Check]) -> dict[str, float]:
    """<quantity>/<family>/<method>/<λ> (mean over seeds) and each check's mean over seeds (CHECK_METRICS)."""
    out = {}
    for s, v in spread(rows).items():
        for key in PANELS:
            out[f"{key.replace(' ', '_')}/{s.family}/{s.method.replace(' ', '_')}/{s.strength:g}"] = v[key][0]
    for key, check in zip(CHECK_METRICS, found):
        vals = [v for v in check.values.values() if math.isfinite(v)]
        if vals:
            out[key] = float(np.mean(vals))
    return out


NOTES = [
    (
        "Each row folds the seeds: mean (min..max). train, val and test acc are measured on the whole split at the "
        "end; gap = train acc - test acc. weight norm: the Frobenius norm of all weight matrices together; sparsity: "
        f"the share of weights with |w| < {SPARSE_BELOW:g}. The strength λ is regularizer.strength for a penalty and "
        "optimizer.weight_decay for decay (coupled in sgd, where it is the l2 step; decoupled in adamw, "
        "w -= lr·λ·w)."
    ),
    (
        "The penalty parts are decided under plain SGD. Subgradient L1 leaves a zeroed weight jittering within about "
        f"lr·λ of zero, so its zeros are counted at its strongest λ with lr·λ <= {SPARSE_BELOW:g} (left of the "
        "dash-dotted line). L2's share is read where it has shrunk the weight norm exactly as far as that L1 run: "
        "interpolated in log(norm) between the two L2 strengths around L1's norm (no penalty counts as λ = 0), on "
        "the same seed. L2 multiplies every weight by (1 - lr·λ) a step, so a weight the data does not hold up "
        "also falls below 1e-3 in a long run, but it never reaches 0 while L1's do: the check asks for far fewer "
        "of them, not none."
    ),
    (
        "Helps: per seed, each penalty at the strength with the best validation accuracy (ties: lower validation "
        "loss, then the weaker λ) against the unregularized run of the same seed, on the test split; it holds only "
        "when every seed gains more than the margin and the mean gain exceeds the seeds' spread. A λ chosen at the "
        "weak end of the grid may lie above the best one: the gain is then a lower bound. Hurts: the same "
        "difference at the grid's strongest λ. A diverged run counts as a total loss."
    ),
    (
        "Adam vs AdamW: at the strength Adam + l2 is tuned to on validation (per seed), AdamW with weight_decay of "
        "the same λ. Adam divides the l2 term by its running gradient scale, AdamW shrinks every weight by lr·λ "
        "per step; under SGD the two updates are one (the control check)."
    ),
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = sorted((row(r, cfg) for r in runs if r.ok), key=_row_order)
    columns, rows = seed_table(per_run, ["optimizer", "method", "λ"], COLUMNS)
    found = checks(runs, cfg)
    lrs = [r.get("lr") for r in runs if r.ok and FAMILY_OF.get(optimizer_of(r, cfg)) == PENALTIES_UNDER]
    lr = max((x for x in lrs if math.isfinite(x)), default=math.nan)
    return Findings(
        found,
        columns,
        rows,
        flat_metrics(per_run, found),
        {"regularization.png": figure(per_run, lr)},
        NOTES,
        {"runs.csv": per_run},
    )
