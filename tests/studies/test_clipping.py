"""Study `clipping`: the smoke study end to end, and the report's checks on hand-built runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.studies import clipping as clip
from pipeline.studies.base import StudyRun
from tests.helpers import config, run_study

LR = 0.1
STEPS = 30
LAYER_SIZES = (400, 100, 10)  # weights per layer: value clipping caps a layer's norm at max_value * sqrt(size)


def raw_gradients(seed: int = 0) -> np.ndarray:
    """Per-layer pre-clip gradient norms over the steps, exploding early, shape (steps, layers)."""
    rng = np.random.default_rng(seed)
    scale = 200.0 * np.exp(-np.arange(STEPS) / 5.0) + 1.0  # (steps,)
    return scale[:, None] * rng.uniform(0.5, 1.5, (STEPS, len(LAYER_SIZES))) * np.array([0.2, 0.5, 1.0])


def applied(pre: np.ndarray, max_norm: float | None, max_value: float | None) -> np.ndarray:
    """What clipping leaves of each layer's gradient norm (value: the cap falls hardest on big layers)."""
    post = pre.copy()
    if max_value is not None:
        post = np.minimum(post, max_value * np.sqrt(LAYER_SIZES))
    if max_norm is not None:
        post = post * np.minimum(1.0, max_norm / np.linalg.norm(post, axis=1, keepdims=True))
    return post


def fake(max_norm: float | None = None, max_value: float | None = None, *, diverge_at: int | None = None,
         final_loss: float = 0.05, post: np.ndarray | None = None, status: str = "FINISHED",
         seed: str = "0") -> StudyRun:
    """A run with per-step histories: loss, pre-clip norms, and the update ratios plain SGD would log."""
    values = {"seed": seed}
    if max_norm is not None:
        values["train.clip.max_norm"] = str(max_norm)
    if max_value is not None:
        values["train.clip.max_value"] = str(max_value)
    pre = raw_gradients()
    post = applied(pre, max_norm, max_value) if post is None else post
    n = STEPS if diverge_at is None else diverge_at
    weights = 10.0 + np.arange(STEPS + 1)[:, None] * np.ones(len(LAYER_SIZES))  # (steps + 1, layers): W(t)
    history = {"train/loss": [(t, float(v)) for t, v in zip(range(1, n + 1), np.geomspace(60, final_loss, n))],
               "grad_norm/total": [(t, float(np.linalg.norm(pre[t - 1]))) for t in range(1, n + 1)],
               "lr": [(t, LR) for t in range(10, n + 1, 10)]}
    for i in range(len(LAYER_SIZES)):
        name = f"layer_{i + 1:02d}"
        history[f"grad_norm/{name}"] = [(t, float(pre[t - 1, i])) for t in range(1, n + 1)]
        history[f"weight_norm/{name}"] = [(t, float(weights[t, i])) for t in range(1, n + 1)]
        history[f"update_ratio/{name}"] = [(t, float(LR * post[t - 1, i] / weights[t - 1, i]))
                                           for t in range(1, n + 1)]
    if diverge_at is not None:
        history["train/loss"].append((n, math.inf))
        history["grad_norm/total"].append((n, math.inf))
    metrics = {k: v[-1][1] for k, v in history.items() if v}
    verdict = ["diverged"] if diverge_at is not None else ["healthy"]
    if diverge_at is None:
        metrics["test/acc"] = 0.9
    else:
        metrics["diverged_at_step"] = float(diverge_at)
    if status != "FINISHED":
        history, metrics = {}, {}
    return StudyRun(" ".join(f"{k}={v}" for k, v in values.items()), values, status, verdict=verdict,
                    metrics=metrics, history=history)


def textbook() -> list[StudyRun]:
    return [fake(diverge_at=5), fake(max_norm=0.1, final_loss=10.0), fake(max_norm=1, final_loss=0.1),
            fake(max_norm=10, final_loss=0.01), fake(max_value=0.01, final_loss=0.5),
            fake(max_value=0.1, final_loss=0.01)]


def note(result, name_start: str) -> str:
    lines = [n for n in result.notes if n.startswith("- " + name_start)]
    assert len(lines) == 1, result.notes
    return lines[0]


@pytest.fixture(scope="module")
def cfg():
    return config("study=clipping")


def test_smoke_study_end_to_end(tmp_path):
    result = run_study("clipping", tmp_path)
    folder = tmp_path / "reports" / "clipping"
    for name in ("summary.md", "metrics.json", "clipping.png"):
        assert (folder / name).is_file()
    assert result["runs"] == 3 and result["failed"] == 0
    summary = (folder / "summary.md").read_text()
    assert "| clipping | threshold | seed | diverged at |" in summary
    rows = [line for line in summary.splitlines() if line.startswith(("| none |", "| norm |", "| value |"))]
    assert len(rows) == 3
    assert rows[0].endswith("| diverged |") and not any("diverged" in r for r in rows[1:])
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["diverged/none"] == 1.0 and metrics["diverged/norm_1"] == 0.0 and metrics["diverged/value_0.01"] == 0
    # probes every step: the applied step is recovered exactly, and norm clipping bounds it
    assert "- norm clipping bounds every step (applied weight gradient <= max_norm): yes" in summary


def test_clip_of_reads_values_and_config(cfg):
    assert clip.clip_of(fake(max_norm=1), cfg) == clip.Clip(1.0, None)
    assert clip.clip_of(fake(max_value=0.01), cfg).kind == "value"
    assert clip.clip_of(StudyRun("x", {"train.clip.max_norm": "null"}, "FINISHED"), cfg).kind == "none"
    assert clip.clip_of(StudyRun("x", {}, "FINISHED")).label == "no clipping"


def test_step_profiles_recover_the_applied_gradient():
    pre = raw_gradients()
    steps, got_pre, got_post = clip.step_profiles(fake(max_norm=1))
    assert list(steps) == list(range(2, STEPS + 1))  # step 1 has no measured weights before it
    np.testing.assert_allclose(got_pre, pre[1:])
    np.testing.assert_allclose(got_post, applied(pre, 1, None)[1:], rtol=1e-9)
    assert clip.bend_angles(steps, got_pre, got_post)[1].max() < 1e-5  # norm clipping: same direction
    assert clip.bend_angles(*clip.step_profiles(fake(max_value=0.01)))[1].max() > 5


def test_textbook_numbers_are_supported(cfg):
    result = clip.report(textbook(), cfg)
    assert result.supported is True, result.notes
    assert len(result.rows) == 6 and "clipping.png" in result.figures
    assert result.metrics["diverged/none"] == 1.0 and result.metrics["final_loss/norm_10"] == pytest.approx(0.01)


def test_an_unclipped_run_that_survives_is_not_supported(cfg):
    runs = [fake(final_loss=0.05)] + textbook()[1:]
    result = clip.report(runs, cfg)
    assert result.supported is False and ": no (" in note(result, "without clipping the run diverges")


def test_a_step_above_max_norm_is_not_supported(cfg):
    post = applied(raw_gradients(), 1, None)
    post[10] *= 3  # one step three times longer than the threshold allows
    runs = textbook()[:2] + [fake(max_norm=1, final_loss=0.1, post=post)] + textbook()[3:]
    result = clip.report(runs, cfg)
    assert result.supported is False and ": no (" in note(result, "norm clipping bounds every step")


def test_value_clipping_that_keeps_the_direction_is_not_supported(cfg):
    same_direction = applied(raw_gradients(), 1, None)  # value runs scaled uniformly, as norm clipping does
    runs = textbook()[:4] + [fake(max_value=0.01, final_loss=0.5, post=same_direction),
                             fake(max_value=0.1, final_loss=0.01, post=same_direction)]
    result = clip.report(runs, cfg)
    assert result.supported is False and ": no (" in note(result, "each value-clipped run turns")


def test_a_low_threshold_that_is_not_slower_is_not_supported(cfg):
    runs = [fake(diverge_at=5), fake(max_norm=0.1, final_loss=0.01)] + textbook()[2:]
    result = clip.report(runs, cfg)
    assert result.supported is False and ": no (" in note(result, "the lowest max_norm")


def test_missing_and_failed_runs_leave_checks_undecided(cfg):
    runs = [fake(diverge_at=5), fake(max_norm=1, final_loss=0.1), fake(max_value=0.1, status="FAILED"),
            fake(max_norm=1, final_loss=0.2, seed="1")]
    result = clip.report(runs, cfg)
    assert result.supported is None
    assert ": - (" in note(result, "the lowest max_norm") and ": - (" in note(result, "every value-clipped run")
    assert len(result.rows) == 3
    assert clip.report([], cfg).supported is None
    assert clip.report([fake(diverge_at=3)], None).supported is None
