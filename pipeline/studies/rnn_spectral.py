"""Study `rnn_spectral`: Pascanu et al.'s condition on a vanilla RNN's spectral radius, and clipping's rescue.

Per run the per-step factor of the gradient through time at init (grad_time_factor at step 0: ||dL/dh_t|| ~
r^(T-t) fitted over t on the fixed probe batch), against the spectral radius rho of W_hh (orthogonal, scaled)
for linear, relu and tanh cells; beside it what theory predicts from the same activations, sigma_max(W_hh) x
rms f'(z) (grad_time_theory). Then the IRNN trained with and without gradient-norm clipping.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every
from pipeline.studies.measures import at_init, off_one, thresholds

SWEPT = {"linear": "linear", "relu": "relu", "tanh": "tanh (He input)", "tanh small input": "tanh (small input)"}
CLIPPING = {"irnn": "IRNN, no clipping", "irnn clipped": "IRNN, clipped at norm 1"}
LIMITS = ("theory_tol", "saturated_factor_max")


def case_of(run: StudyRun) -> str:
    return run.case or ""


def rho(run: StudyRun) -> float:
    return float(run.values.get("init.recurrent_gain", 1.0))


def factor(run: StudyRun) -> float:
    """The measured per-step factor of the gradient through time at init (step 0)."""
    return at_init(run, "grad_time_factor")


def theory(run: StudyRun) -> float:
    """sigma_max(W_hh) x rms f'(z) over the probe batch's steps at init."""
    return at_init(run, "grad_time_theory")


def of_case(runs: list[StudyRun], case: str) -> list[StudyRun]:
    return [r for r in runs if case_of(r) == case]


def per_seed(runs: list[StudyRun], cases, keep, measure, fold=max) -> dict[str, float]:
    """{seed: `fold` of `measure` over the runs of `cases` whose rho passes `keep`}; nan when one is missing."""
    out = {}
    for seed in seeds(runs):
        mine = [r for r in runs if r.seed == seed and case_of(r) in cases and keep(rho(r))]
        values = [measure(r) if r.ok else math.nan for r in mine]
        out[seed_label(seed)] = fold(values) if values and all(math.isfinite(v) for v in values) else math.nan
    return out


def largest_rho(runs: list[StudyRun]) -> float:
    return max((rho(r) for r in runs if case_of(r) in SWEPT), default=math.nan)


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/rnn_spectral.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    top = largest_rho(runs)
    cells = [c for c in SWEPT if of_case(runs, c)]
    out = [
        compare(
            "rho < 1: the gradient vanishes for every cell (largest per-step factor at init over the cells, rho < 1)",
            per_seed(runs, cells, lambda x: x < 1, factor),
            "<",
            1.0,
            scale="log",
        ),
        compare(
            f"relu's zeros hold its factor down (about rho / sqrt 2), yet at rho = {top:g} it explodes",
            per_seed(runs, ["relu"], lambda x: x == top, factor),
            ">",
            1.0,
            scale="log",
        ),
        compare(
            "the linear cell explodes at every rho > 1 (smallest factor there)",
            per_seed(runs, ["linear"], lambda x: x > 1, factor, fold=min),
            ">",
            1.0,
            scale="log",
        ),
        compare(
            "tanh with unsaturated units (small input weights) explodes at every rho > 1 (smallest factor there)",
            per_seed(runs, ["tanh small input"], lambda x: x > 1, factor, fold=min),
            ">",
            1.0,
            scale="log",
        ),
        compare(
            f"tanh with saturated units (He input weights) does not explode: its factor at rho = {top:g}",
            per_seed(runs, ["tanh"], lambda x: x == top, factor),
            "<=",
            lim["saturated_factor_max"],
            scale="log",
        ),
        compare(
            "the measured factor is sigma_max(W_hh) x rms f'(z): how far off, at worst over every cell and rho",
            per_seed(runs, cells, lambda x: True, lambda r: off_one(factor(r) / theory(r))),
            "<=",
            lim["theory_tol"],
            scale="log",
        ),
    ]
    plain, clipped = of_case(runs, "irnn"), of_case(runs, "irnn clipped")
    out.append(
        every(
            "without clipping the IRNN's training diverges",
            {seed_label(r.seed): (r.diverged if r.ok else None) for r in plain},
            measured=", ".join(diverged_at(r) for r in sorted(plain, key=lambda r: r.seed)),
            expected="diverged on every seed",
        )
    )
    out.append(
        every(
            "clipping the gradient's norm at 1 turns it into a converging one that learns",
            {seed_label(r.seed): (r.learned if r.ok else None) for r in clipped},
            measured="test MSE / constant's "
            + ", ".join(f"{relative_loss(r):.2f}" for r in sorted(clipped, key=lambda r: r.seed)),
            expected="learns on every seed",
        )
    )
    return out


def diverged_at(run: StudyRun) -> str:
    step = run.get("diverged_at_step")
    return f"diverged at step {step:g}" if math.isfinite(step) else f"test MSE / constant's {relative_loss(run):.2f}"


def relative_loss(run: StudyRun) -> float:
    constant = run.get("data/chance_loss")
    return run.get("test/loss") / constant if constant > 0 else math.nan


def curve(runs: list[StudyRun], case: str, measure) -> tuple[list[float], list[float]]:
    """(rho, the measure's geometric mean over seeds) of one case's finished runs."""
    by_rho: dict[float, list[float]] = {}
    for r in finished(of_case(runs, case)):
        v = measure(r)
        if math.isfinite(v) and v > 0:
            by_rho.setdefault(rho(r), []).append(v)
    xs = sorted(by_rho)
    return xs, [float(np.exp(np.mean(np.log(by_rho[x])))) for x in xs]


def figure(runs: list[StudyRun]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    rho_ax, clip_ax = fig.subplots(1, 2)
    colours = dict(zip(SWEPT, ("black", "tab:orange", "tab:red", "tab:purple")))
    for case, label in SWEPT.items():
        xs, ys = curve(runs, case, factor)
        if xs:
            rho_ax.loglog(xs, ys, marker="o", color=colours[case], label=f"{label}, measured")
            rho_ax.loglog(*curve(runs, case, theory), ls=":", color=colours[case], label=f"{label}, sigma_max rms f'")
    rho_ax.axhline(1.0, color="grey", lw=1, ls="--")
    rho_ax.set(
        xlabel="spectral radius rho of W_hh (orthogonal, scaled)",
        ylabel="per-step gradient factor at init (seeds: geometric mean)",
        title="< 1 vanishes, > 1 explodes (T = 20)",
    )
    rhos = sorted({rho(r) for r in finished(runs) if case_of(r) in SWEPT})
    if rhos:
        rho_ax.set_xticks(rhos, [f"{x:g}" for x in rhos])
        rho_ax.set_xticks([], minor=True)
        rho_ax.yaxis.set_major_formatter(ScalarFormatter())
        rho_ax.yaxis.set_minor_formatter(NullFormatter())
    colour = {"irnn": "tab:red", "irnn clipped": "tab:blue"}
    for case, label in CLIPPING.items():
        for i, r in enumerate(sorted(of_case(runs, case), key=lambda r: r.seed)):
            steps, loss = r.series("train/loss")
            steps, loss = np.r_[0, steps], np.r_[r.get("train/initial_loss"), loss]  # from the loss before step 1
            ok = np.isfinite(loss)
            if r.diverged:
                shown = f"{label}: diverged at step {r.get('diverged_at_step'):g}" if i == 0 else None
                clip_ax.semilogy(steps[ok], loss[ok], color=colour[case], marker="o", label=shown)
                clip_ax.axvline(r.get("diverged_at_step"), color=colour[case], lw=0.8, ls=":")
            elif ok.any():
                clip_ax.semilogy(steps[ok], loss[ok], color=colour[case], alpha=0.8, label=label if i == 0 else None)
    constant = [r.get("data/chance_loss") for r in finished(runs) if math.isfinite(r.get("data/chance_loss"))]
    if constant:
        clip_ax.axhline(float(np.mean(constant)), color="grey", ls="--", lw=1, label="constant predictor")
    clip_ax.set(
        xlabel="training step",
        ylabel="training loss (MSE)",
        title="IRNN (relu, W_hh = I), SGD lr 0.05: clipping rescues",
    )
    for ax in (rho_ax, clip_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return fig


COLUMNS = [
    "case",
    "rho",
    "seed",
    "factor at init",
    "theory at init",
    "saturation at init",
    "test MSE / constant",
    "verdict",
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    names = {**SWEPT, **CLIPPING}
    per_run = [
        {
            "case": names.get(case_of(r), case_of(r)),
            "rho": rho(r),
            "seed": r.seed,
            "factor at init": factor(r),
            "theory at init": theory(r),
            "saturation at init": at_init(r, "saturation/layer_01"),
            "test MSE / constant": relative_loss(r),
            "verdict": ",".join(r.verdict) or r.status,
        }
        for r in finished(runs)
    ]
    order = list(names.values())
    columns, rows = seed_table(
        sorted(per_run, key=lambda x: (order.index(x["case"]) if x["case"] in order else 9, x["rho"])),
        ["case", "rho"],
        COLUMNS,
    )
    metrics: dict[str, float] = {}
    for case in SWEPT:
        for x, y in zip(*curve(runs, case, factor)):
            metrics[f"factor_at_init/{case.replace(' ', '_')}/rho_{x:g}"] = y
    for case in CLIPPING:
        done = finished(of_case(runs, case))
        if done:
            metrics[f"diverged_share/{case.replace(' ', '_')}"] = float(np.mean([r.diverged for r in done]))
    notes = [
        "Each row folds the seeds: mean (min..max). factor at init: the per-step factor r of ||dL/dh_t|| ~ r^(T-t) "
        "fitted over the 20 steps on the fixed probe batch before any update (grad_time_factor at step 0); theory: "
        "sigma_max(W_hh) x rms f'(z) over the same batch's steps (grad_time_theory); saturation: share of the "
        "tanh units' step values with tanh' < 0.1 (|h| > 0.95). The swept cases train one epoch (only their "
        "step 0 is used: a linear cell at rho > 1 overflows and is labelled diverged); the IRNN cases train "
        "20 epochs. test MSE / constant: 1 = the constant predictor.",
    ]
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        metrics,
        {"rnn_spectral.png": figure(runs)},
        notes,
        {"runs.csv": per_run},
    )
