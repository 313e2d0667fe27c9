"""Study `init`: zeros, constant, small and large normal, standard, Xavier and He on tanh and ReLU nets."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.base import StudyReport, StudyRun, finished, fmt

ACTIVATIONS = ("tanh", "relu")
VANISHED = 1e-3  # act std last hidden / first hidden below this: vanished (the README's verdict threshold)
EXPLODED = 1e3  # above this: exploded
SATURATED = 0.5  # mean share of saturated tanh units: saturated (the README's verdict threshold)
KEPT = 5.0  # a scheme keeps the scale when the last / first hidden act std is within a factor of this
NO_LEARNING_ACC = 1.5  # zeros + ReLU "stays at chance": test acc below 1.5 x chance
ACT_RANGE = (1e-8, 1e6)  # y range of the act std panels: an exploding net leaves it (its label says how far)
LOSS_TOP = 30.0  # loss panels stop here: a diverging net's loss would flatten every other curve


def scheme(run: StudyRun) -> str:
    """The init scheme of a run: its init name, with normal's std, Xavier and He variants folded."""
    name = str(run.values.get("init", ""))
    if name == "normal":
        return f"normal {float(run.values.get('init.std', math.nan)):g}"
    if name.startswith("xavier"):
        return "xavier"
    if name.startswith("he_"):
        return "he"
    return name


def normal_stds(runs: list[StudyRun]) -> list[str]:
    """The normal schemes present, from the smallest std to the largest."""
    names = {scheme(r) for r in runs if scheme(r).startswith("normal ")}
    return sorted(names, key=lambda s: float(s.split()[1]))


def first_values(run: StudyRun, prefix: str) -> list[float]:
    """First measured value of prefix/layer_01, layer_02, ... (output layer last): the net at init (step 0)."""
    keys = sorted(k for k in run.history if k.startswith(prefix + "/layer_"))
    return [float(run.series(k)[1][0]) if len(run.series(k)[1]) else math.nan for k in keys]


def act_ratio(run: StudyRun, deepest: bool = False) -> float:
    """Act std of the last (`deepest`: the smallest) hidden layer / the first's, at the first measurement.

    nan when undefined: zero init has no scale to compare.
    """
    hidden = first_values(run, "act_std")[:-1]
    if len(hidden) < 2 or not (math.isfinite(hidden[0]) and hidden[0] > 0) or not all(map(math.isfinite, hidden)):
        return math.nan
    return (min(hidden) if deepest else hidden[-1]) / hidden[0]


def first_saturation(run: StudyRun) -> float:
    """Mean saturated share over the hidden layers at the first measurement (nan without saturation probes)."""
    values = [v for v in first_values(run, "saturation")[:-1] if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def losses(run: StudyRun) -> tuple[float, float]:
    """(first, last) finite train/loss."""
    values = run.series("train/loss")[1]
    values = values[np.isfinite(values)]
    return (float(values[0]), float(values[-1])) if len(values) else (math.nan, math.nan)


def max_weight_grad(run: StudyRun) -> float:
    """Largest ||dL/dW|| of any layer at any measurement: exactly 0 when no weight ever gets a gradient."""
    values = [v for k in run.history if k.startswith("grad_norm/layer_") for v in run.series(k)[1]]
    return float(np.max(values)) if values else math.nan


def row(run: StudyRun) -> dict:
    """One table row: the run's near-init scale, its learning and its verdict."""
    first, last = losses(run)
    return {"activation": run.values.get("model.activation"), "init": scheme(run),
            "seed": run.values.get("seed", "0"),
            "act std L1 (first)": (first_values(run, "act_std") or [math.nan])[0],
            "act std last/first": act_ratio(run), "act std min/first": act_ratio(run, deepest=True),
            "saturation (first)": first_saturation(run), "max ||dL/dW||": max_weight_grad(run),
            "loss first": first, "loss last": last, "test acc": run.get("test/acc"),
            "verdict": ",".join(run.verdict) or run.status}


def geo_mean(values: list[float]) -> float:
    """Geometric mean of the finite positive values (ratios multiply), nan when none."""
    ok = [v for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(ok)))) if ok else math.nan


def group(runs: list[StudyRun], activation: str, name: str) -> list[StudyRun]:
    """The finished runs (every seed) of one activation and scheme."""
    return [r for r in finished(runs) if r.values.get("model.activation") == activation and scheme(r) == name]


def check_symmetric(runs: list[StudyRun]) -> bool | None:
    """Zeros and constant leave units symmetric: every such run ends with the `symmetric` verdict."""
    chosen = [r for a in ACTIVATIONS for n in ("zeros", "constant") for r in group(runs, a, n)]
    needed = all(group(runs, a, n) for a in ACTIVATIONS for n in ("zeros", "constant"))
    return all("symmetric" in r.verdict for r in chosen) if needed else None


def check_zeros_relu(runs: list[StudyRun]) -> bool | None:
    """Zeros + ReLU never learns: no weight ever gets a gradient, test acc stays near chance (1 / e^loss_0)."""
    chosen = group(runs, "relu", "zeros")
    if not chosen:
        return None
    # zero logits give loss ln(classes) at the start, so chance = exp(-first loss)
    return all(max_weight_grad(r) == 0.0 and r.get("test/acc") < NO_LEARNING_ACC * math.exp(-losses(r)[0])
               for r in chosen)


def check_small(runs: list[StudyRun], small: str | None) -> bool | None:
    """Too small an init vanishes with depth for both activations: the last hidden layer's act std at
    initialization (the step-0 measurement, before any update) is < 1e-3 of the first's."""
    if small is None:
        return None
    ratios = [geo_mean([act_ratio(r) for r in group(runs, a, small)]) for a in ACTIVATIONS]
    if not all(math.isfinite(v) for v in ratios):
        return None
    return all(v < VANISHED for v in ratios)


def explodes(run: StudyRun) -> bool:
    """Diverged, or its activations grew more than EXPLODED-fold over depth."""
    return run.diverged or "exploding" in run.verdict or act_ratio(run) > EXPLODED


def check_large(runs: list[StudyRun], large: str | None) -> bool | None:
    """Too large an init saturates tanh and explodes ReLU (diverges, or act std grows > 1e3 over depth)."""
    if large is None:
        return None
    tanh, relu = (group(runs, a, large) for a in ACTIVATIONS)
    saturation = float(np.mean([first_saturation(r) for r in tanh])) if tanh else math.nan
    if not relu or not math.isfinite(saturation):
        return None
    return saturation > SATURATED and all(explodes(r) for r in relu)


def check_kept(runs: list[StudyRun], activation: str, name: str) -> bool | None:
    """The scheme keeps the activation scale: last / first hidden act std within a factor KEPT of 1."""
    ratio = geo_mean([act_ratio(r) for r in group(runs, activation, name)])
    return 1 / KEPT <= ratio <= KEPT if math.isfinite(ratio) else None


def off_chart(values: np.ndarray, top: float) -> str:
    """' (up to 1e+35)' when finite values exceed the panel's top, else ''."""
    values = values[np.isfinite(values)]
    return f" (up to {values.max():.0e})" if len(values) and values.max() > top else ""


def plot_profile(ax, run: StudyRun, name: str) -> None:
    """Act std per hidden layer at the first measurement (zeros cannot go on a log axis)."""
    stds = np.array(first_values(run, "act_std")[:-1])  # (hidden layers,)
    keep = np.isfinite(stds) & (stds > 0)
    label = name + (off_chart(stds, ACT_RANGE[1]) if keep.any() else " (all zero)")
    ax.plot(np.arange(1, len(stds) + 1), np.where(keep, stds, np.nan), marker="o", label=label)


def plot_loss(ax, run: StudyRun, name: str) -> None:
    """Training loss against step; a diverged run is marked and its few points drawn as dots."""
    steps, loss = run.series("train/loss")
    label = name + (" (diverged)" if run.diverged else "") + off_chart(loss, LOSS_TOP)
    ax.plot(steps, loss, marker="o" if len(steps) < 5 else None, label=label)


def figure(runs: list[StudyRun]) -> Figure:
    """Act std per layer at the first measurement (top) and training loss (bottom), per activation."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    for col, activation in enumerate(ACTIVATIONS):
        shown: set[str] = set()
        for run in finished(runs):
            name = scheme(run)
            if run.values.get("model.activation") != activation or name in shown:
                continue  # one seed per scheme keeps the picture readable
            shown.add(name)
            plot_profile(axes[0, col], run, name)
            plot_loss(axes[1, col], run, name)
        axes[0, col].set(yscale="log", ylim=ACT_RANGE, xlabel="hidden layer",
                         ylabel="act std at the first probe (after one step)",
                         title=f"{activation}: activation scale across layers")
        axes[1, col].set(yscale="log", xlabel="step", ylabel="train loss", title=f"{activation}: training loss")
        axes[1, col].set_ylim(top=min(axes[1, col].get_ylim()[1], LOSS_TOP))
        for ax in axes[:, col]:
            ax.grid(alpha=0.3, which="both")
            if ax.get_legend_handles_labels()[0]:  # no runs of this activation: no legend
                ax.legend(fontsize=8)
    return fig


def summary_figures(runs: list[StudyRun], activation: str, name: str,
                    deepest: bool = False) -> tuple[float, float]:
    """(act std last/first, or min/first with `deepest`; test acc) of one activation and scheme, seeds pooled."""
    chosen = group(runs, activation, name)
    accs = [r.get("test/acc") for r in chosen if math.isfinite(r.get("test/acc"))]
    return geo_mean([act_ratio(r, deepest) for r in chosen]), float(np.mean(accs)) if accs else math.nan


def report(runs: list[StudyRun], cfg) -> StudyReport:
    """The table, the act-std and loss figure, and the claim's six checks."""
    rows = [row(r) for r in finished(runs)]
    columns = ["activation", "init", "seed", "act std L1 (first)", "act std last/first", "act std min/first",
               "saturation (first)", "max ||dL/dW||", "loss first", "loss last", "test acc", "verdict"]
    stds = normal_stds(finished(runs))
    # the smallest and the largest std of normal stand for "too small" and "too large"
    small, large = (stds[0], stds[-1]) if len(stds) >= 2 else (None, None)
    names = ["zeros", "constant", *stds, "standard", "xavier", "he"]
    metrics = {}
    for a in ACTIVATIONS:
        for n in names:
            ratio, acc = summary_figures(runs, a, n)
            key = n.replace(" ", "_")
            metrics.update({f"act_ratio/{a}_{key}": ratio, f"test_acc/{a}_{key}": acc,
                            f"act_ratio_min/{a}_{key}": summary_figures(runs, a, n, deepest=True)[0]})
    checks = {
        "zeros and constant leave every unit of a layer symmetric (verdict `symmetric`)": check_symmetric(runs),
        "zeros + ReLU: every weight gradient exactly 0 and test acc near chance": check_zeros_relu(runs),
        f"too small ({small or 'no two normal stds'}): act std last/first < {VANISHED:g} for tanh and relu":
            check_small(runs, small),
        f"too large ({large or 'no two normal stds'}): tanh saturation > {SATURATED} and relu explodes "
        f"(diverged or ratio > {EXPLODED:g})": check_large(runs, large),
        f"xavier keeps tanh's scale (ratio within x{KEPT:g} of 1)": check_kept(runs, "tanh", "xavier"),
        f"he keeps relu's scale (ratio within x{KEPT:g} of 1)": check_kept(runs, "relu", "he"),
    }
    supported = None if any(v is None for v in checks.values()) else all(checks.values())
    notes = [f"- {k}: {'undecided (runs missing)' if v is None else 'yes' if v else 'no'}" for k, v in checks.items()]
    notes.append("- act std values are the first probe measurement (after one SGD step), standing for the init.")
    return StudyReport(columns, rows, conclusion(runs, checks, small, large, supported), supported, metrics,
                       {"init.png": figure(runs)}, notes)


def conclusion(runs: list[StudyRun], checks: dict, small: str | None, large: str | None,
               supported: bool | None) -> str:
    """One line with the deciding figures."""
    def ratio(a: str, n: str | None, deepest: bool = False) -> str:
        return fmt(summary_figures(runs, a, n, deepest)[0]) if n else "-"

    def acc(a: str, n: str) -> str:
        return fmt(summary_figures(runs, a, n)[1])

    relu_large = group(runs, "relu", large) if large else []
    large_relu = "diverged" if relu_large and all(r.diverged for r in relu_large) else ratio("relu", large)
    saturations = [first_saturation(r) for r in group(runs, "tanh", large)] if large else []
    saturation = float(np.mean(saturations)) if saturations else math.nan
    zero_grad = max((max_weight_grad(r) for r in group(runs, "relu", "zeros")), default=math.nan)
    head = {True: "Supported", False: "Not supported", None: "Undecided (runs missing)"}[supported]
    failed = [k for k, v in checks.items() if v is False]
    parts = [f"{small or 'small normal'} (last/first at init): tanh {ratio('tanh', small)}, "
             f"relu {ratio('relu', small)}",
             f"{large or 'large normal'}: tanh saturation {fmt(saturation)}, relu {large_relu}",
             f"standard: tanh {ratio('tanh', 'standard')}, relu {ratio('relu', 'standard')}",
             f"xavier: tanh {ratio('tanh', 'xavier')} (test acc {acc('tanh', 'xavier')}), "
             f"relu {ratio('relu', 'xavier')}",
             f"he: relu {ratio('relu', 'he')} (test acc {acc('relu', 'he')})",
             f"zeros + relu: max weight gradient {fmt(zero_grad)}, test acc {acc('relu', 'zeros')}"]
    return (f"{head}: act std last/first hidden layer near init — {'; '.join(parts)}."
            + (f" Failed: {'; '.join(failed)}." if failed else ""))
