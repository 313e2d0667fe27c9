"""Study `normalization`: deep sigmoid and ReLU nets, plain or with batch norm and/or residual blocks."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from pipeline.studies.activations import grad_ratio
from pipeline.studies.base import StudyReport, StudyRun, finished

ACTIVATIONS = ("sigmoid", "relu")
VARIANTS = ("plain", "res", "bn", "bn+res")
CHANCE = 0.1  # digits: 10 balanced classes
AT_CHANCE = CHANCE + 0.1  # a test accuracy below this learned (almost) nothing
TRAINS_ACC = 0.5  # five times chance: the net clearly learned
MIN_GAIN = 0.3  # how much accuracy a cure must add to the plain net to count as "makes it trainable"


def as_bool(value) -> bool:
    """A swept value ('True', 'false', True) as a bool."""
    return str(value).strip().lower() == "true"


def variant(run: StudyRun) -> str:
    """plain, bn, res or bn+res, from the run's swept model.batch_norm and model.residual."""
    bn, res = as_bool(run.values.get("model.batch_norm")), as_bool(run.values.get("model.residual"))
    return {(False, False): "plain", (True, False): "bn", (False, True): "res", (True, True): "bn+res"}[(bn, res)]


def finite_losses(run: StudyRun) -> tuple[np.ndarray, np.ndarray]:
    """(steps, train losses) with the non-finite points of a diverging run dropped."""
    steps, loss = run.series("train/loss")
    ok = np.isfinite(loss)
    return steps[ok], loss[ok]


def accuracy(run: StudyRun) -> float:
    """Test accuracy; a diverged run (no test/acc) counts as chance: it learned nothing usable."""
    acc = run.get("test/acc")
    return CHANCE if run.diverged or not math.isfinite(acc) else acc


def trains(run: StudyRun) -> bool:
    """It trains at all: not diverged, test accuracy well above chance, and the training loss fell."""
    _, loss = finite_losses(run)
    return (not run.diverged and accuracy(run) >= TRAINS_ACC and len(loss) >= 2
            and bool(loss[-1] < loss[0]))


def first_layer_ratio(run: StudyRun) -> float:
    """grad_ratio, or 0 when the first layer's gradient underflowed to exactly 0 all along."""
    ratio = grad_ratio(run)
    _, first = run.series("grad_norm/layer_01")
    return 0.0 if math.isnan(ratio) and len(first) and not np.any(first) else ratio


def row(run: StudyRun) -> dict:
    _, loss = finite_losses(run)
    return {
        "activation": run.values.get("model.activation"),
        "depth": int(run.values.get("model.depth", 0)),
        "variant": variant(run),
        "seed": run.values.get("seed", "0"),
        "test acc": run.get("test/acc"),
        "first loss": float(loss[0]) if len(loss) else math.nan,
        "final loss": float(loss[-1]) if len(loss) else math.nan,
        "grad ratio first/last": first_layer_ratio(run),
        "trains": trains(run),
        "verdict": ",".join(run.verdict) or run.status,
    }


def cells(runs: list[StudyRun]) -> dict[tuple[str, int, str], list[StudyRun]]:
    """Finished runs grouped by (activation, depth, variant); seeds go together."""
    groups: dict[tuple[str, int, str], list[StudyRun]] = {}
    for r in finished(runs):
        key = (str(r.values.get("model.activation")), int(r.values.get("model.depth", 0)), variant(r))
        groups.setdefault(key, []).append(r)
    return groups


def mean_acc(group: list[StudyRun]) -> float:
    return float(np.mean([accuracy(r) for r in group])) if group else math.nan


def figure(runs: list[StudyRun]) -> Figure:
    """Test accuracy per (activation, depth, variant) as bars; the training loss curves per activation."""
    groups = cells(runs)
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    bars, *curves = fig.subplots(1, 1 + len(ACTIVATIONS))
    keys = sorted({(a, d) for a, d, _ in groups}, key=lambda k: (ACTIVATIONS.index(k[0])
                                                                 if k[0] in ACTIVATIONS else 9, k[1]))
    width = 0.8 / len(VARIANTS)
    for i, name in enumerate(VARIANTS):
        accs = [mean_acc(groups.get((a, d, name), [])) for a, d in keys]
        bars.bar(np.arange(len(keys)) + (i - 1.5) * width, accs, width, label=name, color=f"C{i}")
    bars.axhline(CHANCE, color="k", ls=":", lw=1, label="chance")
    bars.set_xticks(range(len(keys)), [f"{a}\ndepth {d}" for a, d in keys])
    bars.set(ylabel="test accuracy (diverged = chance)", title="which deep nets train", ylim=(0, 1))
    bars.legend(fontsize=8)
    for ax, act in zip(curves, ACTIVATIONS):
        for (a, d, name), group in sorted(groups.items()):
            if a != act:
                continue
            diverged = sum(r.diverged for r in group)
            for k, r in enumerate(group):
                steps, loss = finite_losses(r)
                pos = loss > 0  # a log axis cannot show 0
                ax.semilogy(steps[pos], loss[pos], color=f"C{VARIANTS.index(name)}",
                            ls="-" if d == min(dd for aa, dd, _ in groups if aa == act) else "--", lw=1.2,
                            alpha=0.8, label=(f"{name}, depth {d}" + (f" ({diverged} diverged)" if diverged else ""))
                            if k == 0 else None)
        ax.axhline(math.log(1 / CHANCE), color="k", ls=":", lw=1, label="ln 10 (uniform guess)")
        ax.set(xlabel="step", ylabel="training loss", title=f"{act}: training loss")
        ax.legend(fontsize=7)
    for ax in (bars, *curves):
        ax.grid(alpha=0.3, which="both")
    return fig


def report(runs: list[StudyRun], cfg) -> StudyReport:
    columns = ["activation", "depth", "variant", "seed", "test acc", "first loss", "final loss",
               "grad ratio first/last", "trains", "verdict"]
    rows = [row(r) for r in runs if r.ok]
    groups = cells(runs)
    metrics = {f"test_acc/{a}_d{d}_{v}": mean_acc(g) for (a, d, v), g in groups.items()}
    metrics.update({f"trained_share/{a}_d{d}_{v}": float(np.mean([trains(r) for r in g]))
                    for (a, d, v), g in groups.items()})
    figs = {"normalization.png": figure(runs)}
    settings = sorted({(a, d) for a, d, _ in groups})
    cures = {s: {v: mean_acc(groups[(*s, v)]) for v in VARIANTS[1:] if (*s, v) in groups} for s in settings}
    if not settings or any((*s, "plain") not in groups or not cures[s] for s in settings) or \
            not {a for a, _ in settings} >= set(ACTIVATIONS):
        return StudyReport(columns, rows, "not enough finished runs to decide (each activation and depth needs "
                           "its plain net and at least one cure)", None, metrics, figs)
    plain = {s: mean_acc(groups[(*s, "plain")]) for s in settings}
    best = {s: max(cures[s], key=cures[s].get) for s in settings}  # (activation, depth) -> best cure
    trained = {s: any(trains(r) for r in groups[(*s, best[s])]) for s in settings}
    checks = {
        "plain sigmoid nets stay at chance at every depth (test acc < %.2f)" % AT_CHANCE:
            all(plain[s] < AT_CHANCE for s in settings if s[0] == "sigmoid"),
        "at every activation and depth, the best cure trains (acc >= %.2f, loss falls)" % TRAINS_ACC:
            all(trained.values()),
        "at every activation and depth, the best cure beats the plain net by >= %.2f accuracy" % MIN_GAIN:
            all(cures[s][best[s]] - plain[s] >= MIN_GAIN for s in settings),
    }
    supported = all(checks.values())
    parts = [f"{a} depth {d}: plain {plain[(a, d)]:.2f}, "
             + ", ".join(f"{v} {acc:.2f}" for v, acc in cures[(a, d)].items()) for a, d in settings]
    failing = [f"{a} d{d} {v}" for (a, d, v), g in sorted(groups.items()) if v != "plain" and
               not any(trains(r) for r in g)]
    short = [f"{a} d{d} (plain {plain[(a, d)]:.2f} vs {best[(a, d)]} {cures[(a, d)][best[(a, d)]]:.2f})"
             for a, d in settings if cures[(a, d)][best[(a, d)]] - plain[(a, d)] < MIN_GAIN]
    plain_trained = [f"{a} d{d} ({plain[(a, d)]:.2f})" for a, d in settings if
                     any(trains(r) for r in groups[(a, d, "plain")])]
    conclusion = ("test accuracy " + "; ".join(parts) + ". "
                  + ("Supported: plain sigmoid nets stay at chance, and at every depth a cure trains and beats "
                     "the plain net by a wide margin" if supported
                     else "Not supported: " + "; ".join(k for k, v in checks.items() if not v))
                  + (f". Cure gain under {MIN_GAIN}: {', '.join(short)}" if short else "")
                  + (f". Plain nets that trained anyway: {', '.join(plain_trained)}" if plain_trained else "")
                  + (f". Cures that did not train: {', '.join(failing)}." if failing else "."))
    notes = [f"- {k}: {'yes' if v else 'no'}" for k, v in checks.items()]
    notes += ["", "A diverged run has no test accuracy; it counts as chance (it learned nothing usable). Sigmoid "
              "with residual blocks adds each block's output (mean about 0.5) onto the stream, so the logits and "
              "the first losses are large; ReLU with residual blocks but no batch norm roughly doubles the "
              "activation variance per block under He init and can overflow: a residual net without "
              "normalization needs a smaller init on its branches (Fixup, SkipInit)."]
    return StudyReport(columns, rows, conclusion, supported, metrics, figs, notes)
