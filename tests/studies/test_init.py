"""Study `init`: the smoke study end to end, and the report's checks on hand-built runs."""

import json
import math

import pytest

from pipeline.studies import init as study
from pipeline.studies.base import StudyRun
from tests.helpers import run_study

DEPTH = 8


def profile(first: float, factor: float) -> list[float]:
    """Act std per layer (hidden layers, then the output) falling or growing by `factor` per layer."""
    return [first * factor ** i for i in range(DEPTH)] + [1.0]


def fake(activation: str, init: str, acts: list[float], std: str | None = None, saturation: float | None = None,
         grad: float = 1.0, loss: tuple[float, float] = (2.3, 0.1), acc: float = 0.9,
         verdict: tuple[str, ...] = ("healthy",), diverged: bool = False) -> StudyRun:
    """A finished train run whose first probe saw `acts` and whose weights got gradients of size `grad`."""
    layers = [f"layer_{i:02d}" for i in range(1, len(acts) + 1)]
    history = {f"act_std/{k}": [(1, a), (200, 0.5)] for k, a in zip(layers, acts)}
    history |= {f"grad_norm/{k}": [(1, grad), (200, grad)] for k in layers}
    history["train/loss"] = [(1, loss[0]), (200, loss[1])]
    if saturation is not None:
        history |= {f"saturation/{k}": [(1, saturation), (200, 0.0)] for k in layers}
    values = {"init": init, "model.activation": activation, **({"init.std": std} if std else {})}
    metrics = {k: pts[-1][1] for k, pts in history.items()}
    if not diverged:
        metrics["test/acc"] = acc
    labels = list(verdict) + (["diverged"] if diverged else [])
    return StudyRun(f"{init} {activation}", values, "FINISHED", "id", labels, metrics, history)


def textbook() -> list[StudyRun]:
    """Fourteen runs whose numbers follow the claim."""
    runs = []
    for a in ("tanh", "relu"):
        sat = 0.0 if a == "tanh" else None
        runs += [fake(a, "zeros", [0.0] * (DEPTH + 1), saturation=sat, grad=0.0, loss=(2.3026, 2.3020), acc=0.1,
                      verdict=("symmetric",)),
                 fake(a, "constant", profile(0.1, 1.0), saturation=sat, verdict=("symmetric",), acc=0.25),
                 fake(a, "normal", profile(0.07, 0.08), std="0.01", saturation=sat, acc=0.1, verdict=("vanishing",)),
                 fake(a, "standard", profile(0.4, 0.6), saturation=sat),
                 fake(a, "xavier_normal", profile(0.5, 0.95), saturation=sat),
                 fake(a, "he_normal", profile(0.8, 1.0 if a == "relu" else 1.05), saturation=sat)]
    runs.append(fake("tanh", "normal", profile(0.96, 1.0), std="1.0", saturation=0.85, verdict=("saturated",)))
    runs.append(fake("relu", "normal", profile(3e4, 1e4), std="1.0", diverged=True, loss=(8e6, math.inf)))
    return runs


def test_textbook_numbers_support_the_claim():
    result = study.report(textbook(), None)
    assert result.supported is True, result.notes
    assert len(result.rows) == 14 and "init.png" in result.figures
    assert sum(line.endswith(": yes") for line in result.notes) == 6
    assert result.metrics["act_ratio/relu_he"] == pytest.approx(1.0)


def replace(runs: list[StudyRun], activation: str, init: str, new: StudyRun) -> list[StudyRun]:
    return [new if r.values["model.activation"] == activation and r.values["init"] == init else r for r in runs]


@pytest.mark.parametrize("activation, init, new, failed", [
    # He's init letting ReLU's activations vanish: the claim fails
    ("relu", "he_normal", fake("relu", "he_normal", profile(0.8, 0.3)), "he keeps relu's scale"),
    # a zeros + ReLU net whose weights do get a gradient
    ("relu", "zeros", fake("relu", "zeros", [0.0] * 9, grad=1e-3, acc=0.1, verdict=("symmetric",)), "zeros + ReLU"),
    # constant init that did not stay symmetric
    ("tanh", "constant", fake("tanh", "constant", profile(0.1, 1.0), saturation=0.0), "symmetric"),
    # Xavier shrinking tanh's activations like the standard init
    ("tanh", "xavier_normal", fake("tanh", "xavier_normal", profile(0.5, 0.5), saturation=0.0), "xavier keeps"),
])
def test_contrary_numbers_refute_the_claim(activation, init, new, failed):
    result = study.report(replace(textbook(), activation, init, new), None)
    assert result.supported is False
    assert any(failed in line and line.endswith(": no") for line in result.notes), result.notes
    assert "Failed" in result.conclusion


def test_too_small_and_too_large_checks():
    runs = [r for r in textbook() if r.values["init"] != "normal"]
    runs += [fake(a, "normal", profile(0.5, 0.9), std="0.01", saturation=0.0 if a == "tanh" else None)
             for a in ("tanh", "relu")]  # "too small" that does not vanish
    runs += [fake("tanh", "normal", profile(0.9, 1.0), std="1.0", saturation=0.1),  # nor saturates
             fake("relu", "normal", profile(0.9, 1.0), std="1.0")]  # nor explodes
    result = study.report(runs, None)
    assert result.supported is False
    assert sum(line.endswith(": no") for line in result.notes) == 2


def test_missing_failed_and_diverged_runs_leave_it_undecided():
    runs = [r for r in textbook() if r.values["init"] != "he_normal"]
    runs.append(StudyRun("he relu", {"init": "he_normal", "model.activation": "relu"}, "FAILED", error="boom"))
    result = study.report(runs, None)
    assert result.supported is None and "Undecided" in result.conclusion
    assert study.report([], None).supported is None  # nothing at all: no crash either


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("init")
    return tmp_path, run_study("init", tmp_path)


def test_smoke_study_end_to_end(smoke):
    tmp_path, result = smoke
    folder = tmp_path / "reports" / "init"
    assert result["runs"] == 6 and result["failed"] == 0  # 3 smoke cases x tanh, relu; a diverged run is FINISHED
    assert (folder / "init.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["runs"] == 6 and metrics["finished"] == 6
    assert metrics["supported"] == -1  # the smoke cases leave out constant, small normal and xavier
    summary = (folder / "summary.md").read_text()
    assert "| activation | init | seed | act std L1 (first) |" in summary
    assert "| relu | zeros | 0 | 0 |" in summary and "dead,symmetric" in summary
    assert "- zeros + ReLU: every weight gradient exactly 0 and test acc near chance: yes" in summary
