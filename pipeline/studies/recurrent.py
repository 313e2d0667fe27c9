"""Study `recurrent`: a vanilla tanh RNN against an LSTM on the adding problem over sequence lengths T.

Per run the gradient reaching the first step, grad_time_ratio = ||dL/dh_1|| / ||dL/dh_T|| on the fixed probe
batch, at the end of training (and at init, for the figure); per seed and cell the per-step factor is fitted to
its log against T. Learning is the test MSE against the constant predictor's (`not_learning`, README "Verdicts").
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from pipeline.analysis.diagnosis import ABOVE_CHANCE, NOT_LEARNING_RULE
from pipeline.studies.base import Findings, StudyRun, finished, seed_label, seed_table, seeds
from pipeline.studies.checks import Check, compare, every
from pipeline.studies.measures import at_init, geo_mean, per_layer_factor, thresholds

CASES = {"rnn": "tanh RNN", "lstm": "LSTM"}
LIMITS = ("rnn_factor_max", "vanishing_ratio", "lstm_factor_min", "factor_gap")


def case_of(run: StudyRun) -> str:
    return run.case or str(run.values.get("model", ""))


def length(run: StudyRun) -> int:
    return int(run.values["data.seq_len"])


def of_case(runs: list[StudyRun], case: str) -> list[StudyRun]:
    return [r for r in runs if case_of(r) == case]


def ratio(run: StudyRun, when: str = "end") -> float:
    """||dL/dh_1|| / ||dL/dh_T|| at the end of training (the last measurement) or at init (step 0)."""
    return run.get("grad_time_ratio") if when == "end" else at_init(run, "grad_time_ratio")


def relative_loss(run: StudyRun) -> float:
    """Test MSE over the constant predictor's (1 = learned nothing; the adding problem's constant: ~0.167)."""
    constant = run.get("data/chance_loss")
    return run.get("test/loss") / constant if constant > 0 else math.nan


def factor_per_seed(runs: list[StudyRun], case: str) -> dict[str, float]:
    """{seed: the per-step factor fitted to log grad_time_ratio against T}; nan when a length did not finish."""
    out = {}
    for seed in seeds(runs):
        mine = [r for r in of_case(runs, case) if r.seed == seed]
        ok = bool(mine) and all(r.ok for r in mine)
        out[seed_label(seed)] = (
            per_layer_factor([length(r) for r in mine], [ratio(r) for r in mine]) if ok else math.nan
        )
    return out


def at_length(runs: list[StudyRun], case: str, pick=max) -> list[StudyRun]:
    """The case's runs at the longest (or, with pick=min, the shortest) T of the grid, one per seed."""
    mine = of_case(runs, case)
    if not mine:
        return []
    t = pick(length(r) for r in mine)
    return [r for r in mine if length(r) == t]


def learning_flags(runs: list[StudyRun], learned: bool, by_length: bool = False) -> dict[str, bool | None]:
    """{seed (and T): learned (or not, as asked)}; None for a run that did not finish."""
    return {
        (f"T={length(r)} " if by_length else "") + seed_label(r.seed): (r.learned == learned if r.ok else None)
        for r in runs
    }


def losses(runs: list[StudyRun]) -> str:
    return ", ".join(f"{relative_loss(r):.2f}" if r.ok else r.status for r in sorted(runs, key=lambda r: r.seed))


def checks(runs: list[StudyRun], cfg) -> list[Check]:
    """The claim, check by check (thresholds from study.checks in conf/study/recurrent.yaml)."""
    lim = thresholds(cfg, *LIMITS)
    factor = {case: factor_per_seed(runs, case) for case in CASES}
    longest = {case: at_length(runs, case) for case in CASES}
    shortest = at_length(runs, "rnn", min)
    t_max = max((length(r) for r in runs), default=0)
    t_min = min((length(r) for r in runs), default=0)
    return [
        compare(
            "the RNN's gradient reaching step 1 shrinks geometrically with T: per-step factor fitted to "
            "log(||dL/dh_1|| / ||dL/dh_T||) against T, end of training",
            factor["rnn"],
            "<=",
            lim["rnn_factor_max"],
            scale="log",
        ),
        compare(
            f"at T = {t_max} the RNN's gradient reaching step 1 has vanished (||dL/dh_1|| / ||dL/dh_T||)",
            {seed_label(r.seed): ratio(r) if r.ok else math.nan for r in longest["rnn"]},
            "<",
            lim["vanishing_ratio"],
            scale="log",
        ),
        compare(
            "the LSTM's does not: its fitted per-step factor stays near 1",
            factor["lstm"],
            ">=",
            lim["lstm_factor_min"],
            scale="log",
        ),
        compare(
            f"the RNN's per-step factor is below {lim['factor_gap']:g} x the LSTM's",
            factor["rnn"],
            "<",
            factor["lstm"],
            times=lim["factor_gap"],
            scale="log",
            limit_name="the LSTM's factor",
        ),
        every(
            f"the RNN learns the short sequences (T = {t_min}): its failure below is the length's",
            learning_flags(shortest, True),
            measured=f"test MSE / constant's {losses(shortest)}",
            expected="learns on every seed",
        ),
        every(
            f"the RNN's loss falls to the constant predictor's at T = {t_max}",
            learning_flags(longest["rnn"], False),
            measured=f"test MSE / constant's {losses(longest['rnn'])}",
            expected=f"not_learning on every seed (above {1 - ABOVE_CHANCE:g})",
        ),
        every(
            f"the LSTM learns at every T up to {t_max}, on the same budget",
            learning_flags(of_case(runs, "lstm"), True, by_length=True),
            measured=f"test MSE / constant's at T = {t_max}: {losses(longest['lstm'])}",
            expected="learns at every T on every seed",
        ),
    ]


def series(runs: list[StudyRun], case: str, measure) -> tuple[list[int], list[float]]:
    """(lengths, the measure folded over seeds: geometric mean for ratios) of one case's finished runs."""
    by_t: dict[int, list[float]] = {}
    for r in finished(of_case(runs, case)):
        by_t.setdefault(length(r), []).append(measure(r))
    ts = sorted(by_t)
    return ts, [geo_mean(by_t[t]) for t in ts]


def theory_line(runs: list[StudyRun]) -> tuple[list[int], list[float]]:
    """(T, (sigma_max(W_hh) x rms tanh')^(T-1)) from the RNN's grad_time_theory at init: Pascanu et al.'s factor."""
    return series(runs, "rnn", lambda r: at_init(r, "grad_time_theory") ** (length(r) - 1))


def figure(runs: list[StudyRun]) -> Figure:
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    grad_ax, loss_ax = fig.subplots(1, 2)
    colours = {"rnn": "tab:red", "lstm": "tab:blue"}
    for case, label in CASES.items():
        ts, end = series(runs, case, ratio)
        if not ts:
            continue
        grad_ax.semilogy(ts, end, marker="o", color=colours[case], label=f"{label}, end of training")
        grad_ax.semilogy(
            *series(runs, case, lambda r: ratio(r, "init")),
            ls=":",
            marker=".",
            color=colours[case],
            label=f"{label}, at init",
        )
        loss_ax.plot(*series(runs, case, relative_loss), marker="o", color=colours[case], label=label)
    ts, line = theory_line(runs)
    if ts:
        grad_ax.semilogy(ts, line, "k--", lw=1, label="theory: (sigma_max(W_hh) rms tanh')^(T-1), init")
    loss_ax.axhline(1.0, color="grey", ls=":", lw=1, label="constant predictor")
    loss_ax.axhline(1 - ABOVE_CHANCE, color="grey", ls="--", lw=0.8, label="not_learning above")
    grad_ax.set(
        xlabel="sequence length T",
        ylabel="||dL/dh_1|| / ||dL/dh_T|| (seeds: geometric mean)",
        title="gradient reaching step 1",
    )
    loss_ax.set(
        xlabel="sequence length T",
        ylabel="test MSE / constant predictor's (seeds: geometric mean)",
        title="adding problem: does it learn?",
        ylim=(0, None),
    )
    for ax in (grad_ax, loss_ax):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


COLUMNS = [
    "case",
    "T",
    "seed",
    "grad ratio at init",
    "grad ratio end",
    "per-step factor end",
    "theory factor at init",
    "forget gate end",
    "test MSE / constant",
    "verdict",
]


def findings(runs: list[StudyRun], cfg) -> Findings:
    per_run = [
        {
            "case": CASES.get(case_of(r), case_of(r)),
            "T": length(r),
            "seed": r.seed,
            "grad ratio at init": ratio(r, "init"),
            "grad ratio end": ratio(r),
            "per-step factor end": r.get("grad_time_factor"),
            "theory factor at init": at_init(r, "grad_time_theory"),
            "forget gate end": r.get("forget_gate/mean"),
            "test MSE / constant": relative_loss(r),
            "verdict": ",".join(r.verdict) or r.status,
        }
        for r in finished(runs)
    ]
    order = list(CASES.values())
    columns, rows = seed_table(
        sorted(per_run, key=lambda x: (order.index(x["case"]) if x["case"] in order else 9, x["T"])),
        ["case", "T"],
        COLUMNS,
    )
    metrics: dict[str, float] = {}
    for case in CASES:
        factors = [f for f in factor_per_seed(runs, case).values() if math.isfinite(f)]
        if factors:
            metrics[f"per_step_factor/{case}"] = geo_mean(factors)
        ts, end = series(runs, case, ratio)
        if ts:
            metrics[f"grad_ratio_longest/{case}"] = end[-1]
            metrics[f"test_loss_rel_longest/{case}"] = series(runs, case, relative_loss)[1][-1]
    notes = [
        "Each row folds the seeds: mean (min..max). grad ratio: ||dL/dh_1|| / ||dL/dh_T|| on the fixed probe "
        "batch (256 training sequences), at step 0 and at the last measurement; the per-step factor of a row is "
        "fitted to ||dL/dh_t|| against t within the run (grad_time_factor), the checks' factor to the ratio "
        "against T across runs, per seed. theory factor: sigma_max(W_hh) x rms tanh'(z) over the probe batch's "
        "steps at init (grad_time_theory; the LSTM has none). test MSE / constant: 1 = the constant predictor "
        "(the targets' mean). " + NOT_LEARNING_RULE,
        "Every run's ||dL/dh_t|| for every t and probe step is its artifact grad_time.json, drawn in "
        "plots/grad_time_heatmap.png.",
    ]
    return Findings(
        checks(runs, cfg),
        columns,
        rows,
        metrics,
        {"recurrent.png": figure(runs)},
        notes,
        {"grad_ratio.csv": ratio_table(runs), "runs.csv": per_run},
    )


def ratio_table(runs: list[StudyRun]) -> list[dict]:
    """Wide rows for `dvc plots`: T, log10 of the end-of-training ratio per cell (DVC draws linear axes)."""
    by_case = {case: dict(zip(*series(runs, case, ratio))) for case in CASES}
    table = []
    for t in sorted({length(r) for r in finished(runs)}):
        row: dict = {"T": t}
        for case, values in by_case.items():
            v = values.get(t, math.nan)
            row[f"log10_ratio_{case}"] = math.log10(v) if v > 0 and math.isfinite(v) else ""
        table.append(row)
    return table
