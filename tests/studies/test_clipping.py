"""Study `clipping`: its checks on hand-built runs (per seed), and the smoke study end to end (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.analysis.diagnosis import diagnose
from pipeline.studies import clipping as clip
from pipeline.studies.base import StudyRun
from pipeline.studies.checks import FAILS, HOLDS, PARTLY, SUPPORTED, UNDECIDED, verdict
from pipeline.studies.measures import thresholds
from tests.helpers import config, run_study

LR = 0.1
STEPS = 30
LAYER_SIZES = (400, 100, 10)  # weights per layer: value clipping caps a layer's norm at max_value * sqrt(size)
SEEDS = (0, 1, 2)
CHANCE_ACC, CHANCE_LOSS = 0.1, math.log(10)
MOMENTUM = {"init.std": "0.177", "optimizer": "momentum", "optimizer.lr": "0.12"}  # the L2 cases' common part


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


def fake(
    max_norm: float | None = None,
    max_value: float | None = None,
    *,
    diverge_at: int | None = None,
    final_loss: float = 0.05,
    post: np.ndarray | None = None,
    status: str = "FINISHED",
    seed: int = 0,
) -> StudyRun:
    """A run with per-step histories: loss, pre-clip norms, and the update ratios plain SGD would log."""
    values = {"seed": str(seed)}
    if max_norm is not None:
        values["train.clip.max_norm"] = str(max_norm)
    if max_value is not None:
        values["train.clip.max_value"] = str(max_value)
    pre = raw_gradients(int(seed))
    post = applied(pre, max_norm, max_value) if post is None else post
    n = STEPS if diverge_at is None else diverge_at
    weights = 10.0 + np.arange(STEPS + 1)[:, None] * np.ones(len(LAYER_SIZES))  # (steps + 1, layers): W(t)
    history = {
        "train/loss": [(t, float(v)) for t, v in zip(range(1, n + 1), np.geomspace(60, final_loss, n))],
        "grad_norm/total": [(t, float(np.linalg.norm(pre[t - 1]))) for t in range(1, n + 1)],
        "lr": [(t, LR) for t in range(10, n + 1, 10)],
    }
    for i in range(len(LAYER_SIZES)):
        name = f"layer_{i + 1:02d}"
        history[f"grad_norm/{name}"] = [(t, float(pre[t - 1, i])) for t in range(1, n + 1)]
        history[f"weight_norm/{name}"] = [(t, float(weights[t, i])) for t in range(1, n + 1)]
        history[f"update_ratio/{name}"] = [(t, float(LR * post[t - 1, i] / weights[t - 1, i])) for t in range(1, n + 1)]
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
    return StudyRun(
        " ".join(f"{k}={v}" for k, v in values.items()),
        values,
        status,
        verdict=verdict,
        metrics=metrics,
        history=history,
    )


def fake_l2(
    l2: bool, seed: int, weight_end: float, grad_end: float, acc: float | None, status: str = "FINISHED"
) -> StudyRun:
    """A momentum run, `momentum L2` or `momentum no L2`: its total weight norm goes geometrically from 28 at step 0
    to weight_end x that, its gradient norm from 4 at step 1 to grad_end x that; acc None = diverged after."""
    values = {**MOMENTUM, **({"regularizer": "l2", "regularizer.strength": "0.01"} if l2 else {}), "seed": str(seed)}
    n = STEPS
    steps = np.arange(n + 1)  # (steps + 1,): 0 is the network before any update
    weights = 28.0 * weight_end ** (steps / n)  # (steps + 1,)
    history = {
        f"weight_norm/layer_{i + 1:02d}": [(int(t), float(w / math.sqrt(3))) for t, w in zip(steps, weights)]
        for i in range(3)
    }  # three equal layers: the total is `weights`
    history["grad_norm/total"] = [(int(t), float(4.0 * grad_end ** ((t - 1) / (n - 1)))) for t in steps[1:]]
    history["train/loss"] = [(int(t), 2.3) for t in steps[1:]]
    metrics = {"data/chance_acc": CHANCE_ACC, "data/chance_loss": CHANCE_LOSS}
    if acc is None:
        history["grad_norm/total"].append((n + 1, math.inf))
        metrics["diverged_at_step"] = float(n + 1)
    else:
        metrics.update({"test/acc": acc, "train/final_loss": CHANCE_LOSS if acc <= 0.15 else 1 - acc})
    name = "momentum L2" if l2 else "momentum no L2"
    if status != "FINISHED":
        history, metrics = {}, {}
    return StudyRun(
        f"{name} seed={seed}", values, status, "id", diagnose(metrics, None, acc is None), metrics, history, case=name
    )


def clipping_runs(seeds=SEEDS) -> list[StudyRun]:
    """The clipping settings as the claim has them: unclipped diverges, the lowest max_norm is slow."""
    return [
        run
        for s in seeds
        for run in (
            fake(diverge_at=5 + s, seed=s),
            fake(max_norm=0.1, final_loss=10.0, seed=s),
            fake(max_norm=1, final_loss=0.1, seed=s),
            fake(max_norm=10, final_loss=0.01, seed=s),
            fake(max_value=0.01, final_loss=0.5, seed=s),
            fake(max_value=0.1, final_loss=0.01, seed=s),
        )
    ]


def l2_runs(seeds=SEEDS) -> list[StudyRun]:
    """Without L2 the norms grow and the run diverges or collapses to chance; with L2 they stay bounded, it learns."""
    out = []
    for s in seeds:
        out.append(fake_l2(False, s, weight_end=400.0 * 10**s, grad_end=3e3 * 10**s, acc=0.10 if s == 1 else None))
        out.append(fake_l2(True, s, weight_end=0.4, grad_end=1.2 + s, acc=0.93 + 0.01 * s))
    return out


def textbook() -> list[StudyRun]:
    return clipping_runs() + l2_runs()


@pytest.fixture(scope="module")
def cfg():
    return config("study=clipping", hydra=True)


@pytest.fixture(scope="module")
def lim(cfg):
    return thresholds(cfg, *clip.CLIP_LIMITS, *clip.L2_LIMITS)


def outcome(found, start: str) -> str:
    """The outcome of the one check whose name starts with `start`."""
    mine = [c for c in found.checks if c.name.startswith(start)]
    assert len(mine) == 1, [c.name for c in found.checks]
    return mine[0].outcome


def replaced(runs: list[StudyRun], new: list[StudyRun]) -> list[StudyRun]:
    """`runs` with each run of the same setting and seed as one of `new` swapped for it."""

    def key(r: StudyRun) -> tuple:
        return r.case, r.values.get("train.clip.max_norm"), r.values.get("train.clip.max_value"), r.seed

    swap = {key(r): r for r in new}
    return [swap.get(key(r), r) for r in runs]


def test_textbook_numbers_support_every_check(cfg):
    found = clip.findings(textbook(), cfg)
    assert {c.outcome for c in found.checks} == {HOLDS}, [(c.name, c.measured, c.why) for c in found.checks]
    assert verdict(found.checks).verdict == SUPPORTED and len(found.checks) == 7 + 6
    assert [r["setting"] for r in found.rows][-2:] == ["momentum no L2", "momentum L2"]
    assert len(found.rows) == 8 and {r["seeds"] for r in found.rows} == {3}
    assert len(found.series["runs.csv"]) == len(textbook()) and "clipping.png" in found.figures
    assert found.metrics["diverged/none"] == 1.0 and found.metrics["final_loss/norm_10"] == pytest.approx(0.01)
    assert found.metrics["diverged/momentum_L2"] == 0.0 and found.metrics["weight_growth/momentum_L2"] == 1.0


def test_the_unclipped_l2_cases_stay_out_of_the_clipping_checks(cfg):
    found = clip.findings(textbook(), cfg)
    unclipped = next(c for c in found.checks if c.name == "without clipping the run diverges")
    # the momentum L2 runs are unclipped and survive: counted here they would make this check undecided
    assert unclipped.outcome == HOLDS and unclipped.measured == "diverged at step 5, 6, 7"
    assert [clip.l2_role(r) for r in l2_runs(seeds=(0,))] == [clip.NO_L2, clip.L2]
    assert clip.l2_role(fake(max_norm=1)) is None
    decay = StudyRun("x", {"optimizer": "momentum", "optimizer.weight_decay": "0.01"}, "FINISHED")
    assert clip.l2_role(decay) == clip.L2 and not clip.plain_sgd(decay, cfg) and clip.plain_sgd(fake(), cfg)


def test_an_unclipped_run_that_survives_fails_that_part(cfg):
    runs = replaced(textbook(), [fake(final_loss=0.05, seed=s) for s in SEEDS])
    found = clip.findings(runs, cfg)
    assert outcome(found, "without clipping the run diverges") == FAILS
    assert str(verdict(found.checks)) == f"{PARTLY} (12 of 13)"


def test_a_step_above_max_norm_fails_the_bound(cfg):
    longer = []
    for s in SEEDS:
        post = applied(raw_gradients(s), 1, None)
        post[10] *= 3  # one step three times longer than the threshold allows
        longer.append(fake(max_norm=1, final_loss=0.1, post=post, seed=s))
    found = clip.findings(replaced(textbook(), longer), cfg)
    assert outcome(found, "norm clipping bounds every step") == FAILS


def test_value_clipping_that_keeps_the_direction_fails_that_part(cfg):
    same = [
        fake(max_value=v, final_loss=loss, post=applied(raw_gradients(s), 1, None), seed=s)  # scaled as by norm
        for s in SEEDS
        for v, loss in ((0.01, 0.5), (0.1, 0.01))
    ]
    found = clip.findings(replaced(textbook(), same), cfg)
    assert outcome(found, "value clipping turns the update") == FAILS
    assert outcome(found, "norm clipping keeps the update's direction") == HOLDS


def test_a_low_threshold_that_is_not_slower_fails_that_part(cfg):
    fast = [fake(max_norm=0.1, final_loss=0.01, seed=s) for s in SEEDS]
    found = clip.findings(replaced(textbook(), fast), cfg)
    assert outcome(found, "a very low threshold slows training") == FAILS


def test_l2_that_does_not_bound_the_weights_fails_its_parts(cfg, lim):
    grown = [
        fake_l2(True, s, weight_end=10 * lim["weight_grown"], grad_end=10 * lim["grad_grown"], acc=None) for s in SEEDS
    ]
    found = clip.findings(replaced(textbook(), grown), cfg)
    assert outcome(found, "with L2 the weight norm stays bounded") == FAILS
    assert outcome(found, "... so does the gradient norm") == FAILS
    assert outcome(found, "... and the net learns") == FAILS
    assert outcome(found, "without L2 (momentum SGD) the weights grow") == HOLDS
    assert str(verdict(found.checks)) == f"{PARTLY} (10 of 13)"


def test_momentum_without_l2_that_stays_bounded_fails_its_parts(cfg):
    tame = [fake_l2(False, s, weight_end=0.9, grad_end=1.5, acc=0.93) for s in SEEDS]
    found = clip.findings(replaced(textbook(), tame), cfg)
    assert outcome(found, "without L2 (momentum SGD) the weights grow") == FAILS
    assert outcome(found, "... its gradients explode") == FAILS
    assert outcome(found, "... and the run diverges or does not learn") == FAILS


def test_seeds_that_disagree_leave_it_undecided(cfg):
    found = clip.findings(replaced(textbook(), [fake_l2(True, 1, weight_end=0.4, grad_end=2, acc=None)]), cfg)
    learns = next(c for c in found.checks if c.name == "... and the net learns")
    assert learns.outcome == UNDECIDED and learns.why == "not on seed 1"


def test_missing_and_failed_runs_leave_their_checks_undecided(cfg):
    runs = replaced(
        textbook(), [fake(max_value=0.1, status="FAILED", seed=1), fake_l2(True, 2, 0.4, 2, 0.9, status="KILLED")]
    )
    found = clip.findings(runs, cfg)
    assert outcome(found, "every value-clipped run survives") == UNDECIDED
    assert outcome(found, "value clipping turns the update") == UNDECIDED
    assert outcome(found, "with L2 the weight norm stays bounded") == UNDECIDED
    assert outcome(found, "every norm-clipped run survives") == HOLDS
    assert len(found.rows) == 8 and len(found.series["runs.csv"]) == len(runs) - 2


def test_a_size_without_the_l2_cases_leaves_that_part_undecided(cfg):
    found = clip.findings(clipping_runs(), cfg)
    assert found.checks[-1].outcome == UNDECIDED and "no no L2 and no L2 case" in found.checks[-1].why
    assert verdict(found.checks).verdict == PARTLY
    assert verdict(clip.findings([], cfg).checks).verdict == UNDECIDED


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


def test_norm_growth_is_measured_from_the_start():
    run = fake_l2(False, 0, weight_end=50.0, grad_end=20.0, acc=None)
    assert clip.weight_growth(run) == pytest.approx(50.0) and clip.grad_growth(run) == pytest.approx(20.0)
    assert clip.weight_growth(fake_l2(True, 0, weight_end=0.4, grad_end=1.0, acc=0.9)) == pytest.approx(1.0)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    result = run_study("clipping", tmp_path)
    folder = tmp_path / "reports" / "clipping"
    assert result["runs"] == 3 and result["failed"] == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verdict"] == result["verdict"] and summary["finished"] == 3
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["without clipping the run diverges"]["outcome"] == HOLDS
    # probes every step: the applied step is recovered exactly, and norm clipping bounds it
    bound = next(c for name, c in checks.items() if name.startswith("norm clipping bounds every step"))
    assert bound["outcome"] == HOLDS and all(v <= 1.01 for v in bound["values"].values())
    assert summary["checks"][-1]["outcome"] == UNDECIDED  # the smoke size runs no L2 case
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["diverged/none"] == 1.0 and metrics["diverged/norm_1"] == 0.0 and metrics["diverged/value_0.01"] == 0
