"""Study `regularization`: l1, l2, elastic and weight decay over strength, with SGD and with Adam."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from pipeline.harness.paths import CONF_DIR
from pipeline.probes.weights import SPARSE_BELOW
from pipeline.studies.base import StudyReport, StudyRun

METHODS = ("none", "l1", "l2", "elastic", "decay", "coupled decay")
FAMILY_OF = {"sgd": "sgd", "adam": "adam", "adamw": "adam"}  # adamw is Adam with its decay decoupled
DECOUPLED = ("sgd", "adamw")  # plain SGD's coupled decay is the same step as decoupled decay
MAJORITY = 0.5  # share of weights near zero that counts as "sparse"
DENSE_BELOW = 0.1  # share of weights near zero that still counts as "dense"
SAME_TOL = 1e-6  # relative weight-norm difference within which two runs are the same
DIFFERENT = 0.05  # relative weight-norm difference that counts as a different outcome
STATS = ("train acc", "test acc", "gap", "weight norm", "sparsity", "lr")


@dataclass(frozen=True)
class Setting:
    """What a run regularizes with: optimizer family, method and its strength λ."""

    family: str  # sgd | adam | another optimizer's name
    method: str  # one of METHODS, or "<penalty>+decay" when both are on
    strength: float  # regularizer.strength or optimizer.weight_decay; 0 for none


def _group_default(group: str, option: str, key: str, fallback: float) -> float:
    """A key's value in conf/<group>/<option>.yaml (the option's own default)."""
    path = CONF_DIR / group / f"{option}.yaml"
    return float(OmegaConf.load(path).get(key, fallback)) if path.exists() else fallback


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
    fallback = _number(base.get(key), 0.0) if base is not None and name == base_name else \
        _group_default(group, name, key, 0.0)
    return name, _number(run.values.get(f"{group}.{key}"), fallback)


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


def weight_norm(run: StudyRun) -> float:
    """Frobenius norm of all weight matrices together, at the end."""
    norms = run.layer_values("weight_norm")
    return math.sqrt(sum(v * v for v in norms)) if norms else math.nan


def run_stats(run: StudyRun) -> dict[str, float]:
    """The final numbers the claim is about (train acc: running accuracy over the last epoch)."""
    train, test = run.get("train/acc"), run.get("test/acc")
    return {"train acc": train, "test acc": test, "gap": train - test, "weight norm": weight_norm(run),
            "sparsity": run.get("sparsity/total"), "lr": run.get("lr")}


def _mean(values) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def aggregate(runs: list[StudyRun], cfg) -> dict[Setting, dict[str, float]]:
    """Mean over seeds of each finished setting's numbers."""
    groups: dict[Setting, list[dict[str, float]]] = {}
    for run in runs:
        if run.ok:
            groups.setdefault(setting(run, cfg), []).append(run_stats(run))
    return {s: {k: _mean(st[k] for st in stats) for k in STATS} for s, stats in groups.items()}


def curve(stats: dict[Setting, dict], family: str, method: str) -> list[tuple[float, dict]]:
    """(λ, numbers) of one method in one family, by strength."""
    return sorted(((s.strength, v) for s, v in stats.items() if s.family == family and s.method == method),
                  key=lambda p: p[0])


def baseline(stats: dict[Setting, dict], family: str) -> dict | None:
    """The family's unregularized numbers, if that run finished."""
    return stats.get(Setting(family, "none", 0.0))


def resolvable(stats: dict[Setting, dict], family: str, lam: float) -> bool:
    """Whether L1's zeros show in sparsity/total at strength λ.

    Subgradient L1 leaves a zeroed weight jittering within about lr·λ of 0 (one step of lr·λ·sign(w)
    overshoots), so it counts as |w| < SPARSE_BELOW only while lr·λ stays below that.
    """
    lr = _mean(v["lr"] for s, v in stats.items() if s.family == family)
    return math.isfinite(lr) and lr * lam <= SPARSE_BELOW * (1 + 1e-9)


# each check: (stats, family) -> (True/False, or None when the runs it needs are missing; what was measured)
Check = Callable[[dict, str], tuple[bool | None, str]]


def check_l1_sparse(stats, family) -> tuple[bool | None, str]:
    """L1's sparsity rises with λ to a majority of weights (over the λ where zeros are measurable)."""
    base = baseline(stats, family)
    pts = ([(0.0, base["sparsity"])] if base else []) + [
        (lam, v["sparsity"]) for lam, v in curve(stats, family, "l1") if resolvable(stats, family, lam)]
    pts = [(lam, sp) for lam, sp in pts if math.isfinite(sp)]
    if len(pts) < 2 or pts[-1][0] == 0.0:
        return None, "l1 sparsity: needs the baseline or two l1 strengths with lr·λ <= 1e-3"
    sp = [p[1] for p in pts]
    rising = all(b >= a - 0.01 for a, b in zip(sp, sp[1:]))  # 0.01: one seed's wobble is no reversal
    return rising and sp[-1] >= MAJORITY, (f"{family} l1 sparsity {' -> '.join(f'{v:.2f}' for v in sp)} "
                                           f"over λ={pts[0][0]:g}..{pts[-1][0]:g}")


def check_l2_shrinks(stats, family) -> tuple[bool | None, str]:
    """L2's weight norm falls at every step up in λ."""
    base = baseline(stats, family)
    pts = ([(0.0, base["weight norm"])] if base else []) + [(lam, v["weight norm"])
                                                           for lam, v in curve(stats, family, "l2")]
    norms = [n for _, n in pts if math.isfinite(n)]
    if len(norms) < 2:
        return None, "l2 weight norm: needs two finished l2 strengths (or one and the baseline)"
    falling = all(b < a for a, b in zip(norms, norms[1:]))
    return falling, (f"{family} l2 weight norm {' -> '.join(f'{n:.3g}' for n in norms)} "
                     f"over λ={pts[0][0]:g}..{pts[-1][0]:g}")


def check_l2_dense(stats, family) -> tuple[bool | None, str]:
    """L2 leaves (almost) no weight near zero at the λ where L1's zeros are measurable."""
    sp = [v["sparsity"] for lam, v in curve(stats, family, "l2") if resolvable(stats, family, lam)]
    sp = [s for s in sp if math.isfinite(s)]
    if not sp:
        return None, "l2 sparsity: needs an l2 run with lr·λ <= 1e-3"
    return max(sp) < DENSE_BELOW, f"where l1 is measured, l2 sparsity at most {max(sp):.3f}"


def _against_baseline(stats, family, method) -> tuple[dict | None, list[tuple[float, dict]], str]:
    """The baseline and the method's curve, or a reason why they cannot be compared."""
    base, pts = baseline(stats, family), curve(stats, family, method)
    if base is None or not math.isfinite(base["test acc"]) or len(pts) < 2:
        return None, pts, f"{method}: needs a finished baseline and two strengths"
    return base, pts, ""


def _helps(stats, family, method) -> tuple[bool | None, str]:
    """Some λ below the highest shrinks the gap without losing test accuracy."""
    base, pts, missing = _against_baseline(stats, family, method)
    if base is None:
        return None, missing
    good = [(lam, v) for lam, v in pts[:-1] if v["gap"] < base["gap"] and v["test acc"] >= base["test acc"]]
    if not good:
        return False, f"{method}: no λ below {pts[-1][0]:g} shrinks the gap keeping test acc"
    lam, v = max(good, key=lambda p: p[1]["test acc"])
    return True, f"{method} λ={lam:g} test acc {v['test acc']:.3f}, gap {v['gap']:.3f}"


def _hurts(stats, family, method) -> tuple[bool | None, str]:
    """The highest λ loses test accuracy against the baseline (a diverged run, with none, counts as lost)."""
    base, pts, missing = _against_baseline(stats, family, method)
    if base is None:
        return None, missing
    lam, v = pts[-1]
    return not v["test acc"] >= base["test acc"], f"{method} λ={lam:g}: test acc {v['test acc']:.3f}"


def _both(fn) -> Check:
    """A check that must hold for l1 and for l2."""
    def check(stats, family):
        results = [fn(stats, family, m) for m in ("l1", "l2")]
        base = baseline(stats, family)
        ref = f" (none: {base['test acc']:.3f}, gap {base['gap']:.3f})" if base else ""
        return _combine([ok for ok, _ in results]), f"{family} " + "; ".join(d for _, d in results) + ref
    return check


def _relative(a: float, b: float) -> float:
    """|a - b| relative to a."""
    return abs(a - b) / max(abs(a), 1e-12)


def _decay_vs_l2(stats, family) -> tuple[float, float, float]:
    """At the shared λ where l2(λ) and decay(λ) differ most: (λ, relative weight-norm difference, test acc diff)."""
    l2, decay = dict(curve(stats, family, "l2")), dict(curve(stats, family, "decay"))
    shared = [lam for lam in l2 if lam in decay]
    if not shared:
        return math.nan, math.nan, math.nan
    lam = max(shared, key=lambda x: _relative(l2[x]["weight norm"], decay[x]["weight norm"]))
    acc = max(abs(l2[x]["test acc"] - decay[x]["test acc"]) for x in shared)
    return lam, _relative(l2[lam]["weight norm"], decay[lam]["weight norm"]), acc


def _norms_at(stats, family, lam) -> str:
    """l2's and decay's weight norm and test acc at λ, side by side."""
    l2, decay = dict(curve(stats, family, "l2"))[lam], dict(curve(stats, family, "decay"))[lam]
    return (f"weight norm {l2['weight norm']:.3g} vs {decay['weight norm']:.3g}, "
            f"test acc {l2['test acc']:.3f} vs {decay['test acc']:.3f}")


def check_sgd_same(stats, family) -> tuple[bool | None, str]:
    """Under SGD, an l2 penalty and weight decay of the same λ give the same weights."""
    lam, norm, acc = _decay_vs_l2(stats, family)
    if not math.isfinite(norm):
        return None, "sgd l2 = weight decay: needs both at a shared λ"
    return norm <= SAME_TOL and acc <= 1e-9, f"sgd l2 vs weight_decay: largest weight-norm difference {norm:.1e}"


def check_adam_differs(stats, family) -> tuple[bool | None, str]:
    """Under Adam, an l2 penalty and AdamW's decoupled decay of the same λ end at different weights."""
    lam, norm, _ = _decay_vs_l2(stats, family)
    if not math.isfinite(norm):
        return None, "adam l2 vs adamw: needs both at a shared λ"
    return norm > DIFFERENT, f"adam+l2 vs adamw at λ={lam:g}: {_norms_at(stats, family, lam)}"


CHECKS: list[tuple[str, str, Check]] = [
    ("sgd", "SGD: l1's sparsity rises with λ to a majority of weights (lr·λ <= 1e-3)", check_l1_sparse),
    ("sgd", "SGD: l2's weight norm falls at every step up in λ", check_l2_shrinks),
    ("sgd", f"SGD: l2 keeps fewer than {DENSE_BELOW:g} of weights near zero there", check_l2_dense),
    ("sgd", "SGD: l1 and l2 each shrink the gap at a moderate λ without losing test acc", _both(_helps)),
    ("sgd", "SGD: l1 and l2 each lose test acc at the highest λ", _both(_hurts)),
    ("sgd", "SGD: l2(λ) and weight_decay=λ end at the same weights", check_sgd_same),
    ("adam", f"Adam: l2(λ) and AdamW(λ) differ (weight norm by more than {DIFFERENT:.0%})", check_adam_differs),
]


def row(run: StudyRun, cfg) -> dict:
    """A table row for one finished run."""
    s, st = setting(run, cfg), run_stats(run)
    return {"optimizer": run.values.get("optimizer", s.family), "method": s.method, "λ": s.strength,
            "seed": run.values.get("seed", "0"), "train acc": st["train acc"], "test acc": st["test acc"],
            "gap": st["gap"], "weight norm": st["weight norm"], "sparsity": st["sparsity"],
            "verdict": ",".join(run.verdict) or run.status}


def _row_order(r: dict) -> tuple:
    """SGD rows first, then by optimizer, method, strength and seed."""
    family = FAMILY_OF.get(r["optimizer"], r["optimizer"])
    return (family != "sgd", family, r["optimizer"], METHODS.index(r["method"]) if r["method"] in METHODS else 99,
            r["λ"], str(r["seed"]))


def flat_metrics(stats: dict[Setting, dict]) -> dict[str, float]:
    """test_acc/<family>/<method>/<λ> and likewise gap, weight_norm, sparsity (seeds averaged)."""
    out = {}
    for s, v in stats.items():
        for key in ("test acc", "gap", "weight norm", "sparsity"):
            out[f"{key.replace(' ', '_')}/{s.family}/{s.method.replace(' ', '_')}/{s.strength:g}"] = v[key]
    for family in sorted({s.family for s in stats}):
        out[f"l2_vs_decay_norm_diff/{family}"] = _decay_vs_l2(stats, family)[1]
    return out


def families(stats: dict[Setting, dict]) -> list[str]:
    """Families present, sgd and adam first."""
    present = {s.family for s in stats}
    return [f for f in ("sgd", "adam") if f in present] + sorted(present - {"sgd", "adam"})


COLOURS = {"l1": "tab:green", "l2": "tab:red", "elastic": "tab:orange", "decay": "tab:blue",
           "coupled decay": "tab:purple"}


def _method_label(family: str, method: str) -> str:
    """Legend text: which weight decay a "decay" line is."""
    if method == "decay":
        return "decay (adamw)" if family == "adam" else f"decay ({family} weight_decay)"
    return method


def _panel(ax, stats: dict[Setting, dict], family: str, key: str) -> None:
    """One quantity against λ: a line per method, the unregularized run as a dotted level."""
    methods = sorted({s.method for s in stats if s.family == family} - {"none"},
                     key=lambda m: (METHODS.index(m) if m in METHODS else 99, m))
    lams = []
    for method in methods:  # decay last and dashed: under SGD it lies exactly on l2
        pts = [(lam, v[key]) for lam, v in curve(stats, family, method) if lam > 0]
        if pts:
            ax.plot(*zip(*pts), "--" if "decay" in method else "-", marker="o", ms=4,
                    color=COLOURS.get(method), label=_method_label(family, method))
            lams += [lam for lam, _ in pts]
    base = baseline(stats, family)
    if base is not None and math.isfinite(base[key]):
        ax.axhline(base[key], color="grey", ls=":", label="none")
    lrs = [v["lr"] for s, v in stats.items() if s.family == family and v["lr"] > 0]
    if key == "sparsity" and family == "sgd" and lrs:
        limit = ax.axvline(SPARSE_BELOW / max(lrs), color="k", lw=0.8, ls="-.",
                           label="lr·λ = 1e-3: l1 zeros counted left of it")
        ax.legend(handles=[limit], fontsize=7, loc="center right")
    if lams:  # limits set first: one λ alone would give a zero-width log axis
        ax.set_xlim(min(lams) / 2, max(lams) * 2)
        ax.set_xscale("log")
    ax.set(xlabel="strength λ", ylabel=key, title=f"{family}: {key}")
    ax.grid(alpha=0.3)


def figure(stats: dict[Setting, dict]) -> Figure:
    """Per family (rows): test acc, gap, weight norm and sparsity against λ."""
    fams = families(stats) or ["sgd"]
    panels = ("test acc", "gap", "weight norm", "sparsity")
    fig = Figure(figsize=(15, 3.6 * len(fams)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(fams), len(panels)))  # (families, panels)
    for family, ax_row in zip(fams, axes):
        for ax, key in zip(ax_row, panels):
            _panel(ax, stats, family, key)
        if ax_row[0].get_legend_handles_labels()[0]:
            ax_row[0].legend(fontsize=7)
    fig.suptitle("regularization strength: accuracy, train/test gap, weight norm, sparsity (|w| < 1e-3)")
    return fig


def _combine(results: list[bool | None]) -> bool | None:
    """False if any check failed, None if one could not be decided, else True."""
    return False if False in results else None if None in results or not results else True


def conclusion(outcomes: list[tuple[str, bool | None, str]]) -> str:
    """One line of the deciding numbers."""
    decided = [(name, ok, detail) for name, ok, detail in outcomes if ok is not None]
    if not decided:
        return "not enough finished runs to decide (each check needs a baseline and strengths of its method)"
    parts = [f"{detail} ({'yes' if ok else 'NO'})" for _, ok, detail in decided]
    missing = len(outcomes) - len(decided)
    return "; ".join(parts) + (f"; {missing} check(s) undecided for missing runs" if missing else "") + "."


def report(runs: list[StudyRun], cfg) -> StudyReport:
    stats = aggregate(runs, cfg)
    columns = ["optimizer", "method", "λ", "seed", "train acc", "test acc", "gap", "weight norm", "sparsity",
               "verdict"]
    rows = sorted((row(r, cfg) for r in runs if r.ok), key=_row_order)
    outcomes = [(name, *fn(stats, fam)) for fam, name, fn in CHECKS]
    supported = _combine([ok for _, ok, _ in outcomes])
    notes = [f"- {name}: {'-' if ok is None else 'yes' if ok else 'no'} ({detail})" for name, ok, detail in outcomes]
    notes += ["", f"Sparsity counts weights with |w| < {SPARSE_BELOW:g}. Subgradient L1 leaves a zeroed weight "
              "jittering within about lr·λ of zero, so with SGD the sparsity checks use only λ with lr·λ <= "
              f"{SPARSE_BELOW:g} (left of the dash-dotted line); beyond it the jitter of size lr·λ hides the zeros "
              "and even raises the weight norm again. Under Adam the jitter is about lr whatever λ. The gap is the "
              "last epoch's running train accuracy minus test accuracy; the strength λ is regularizer.strength for "
              "a penalty and optimizer.weight_decay for decay (coupled in sgd, the same step; decoupled in adamw)."]
    return StudyReport(columns, rows, conclusion(outcomes), supported, flat_metrics(stats),
                       {"regularization.png": figure(stats)}, notes)
