"""What a run sends to MLflow: every value into history.json, the dense series (loss, probes) thinned to at
most tracking.max_points points each, the last one always."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from pipeline import train
from pipeline.harness.loop import Loop
from pipeline.harness.recording import HISTORY_FILE, Recorder, dense_stride
from tests.helpers import config, tmp_store


class FakeRun:
    """Collects what would go to MLflow."""

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step):
        self.logged.append((step, dict(metrics)))


def test_dense_series_keep_every_stride_th_step_and_the_last():
    run = FakeRun()
    rec = Recorder(run, stride=3)
    rec.log({"train/initial_loss": 2.3}, 0)  # not dense: always sent
    for step in range(1, 11):
        rec.log({"train/loss": 1.0 / step}, step, dense=True)
        rec.log({"grad_norm/total": float(step)}, step, dense=True)  # a second series at the same step
    rec.close()
    rec.close()  # once
    sent = [(s, sorted(m)) for s, m in run.logged]
    assert sent[0] == (0, ["train/initial_loss"])
    dense_steps = [s for s, _ in sent[1:]]
    # steps 1, 4, 7, 10 on the stride (both series each), the last (10) not again
    assert dense_steps == [1, 1, 4, 4, 7, 7, 10, 10]
    assert len(rec.history["train/loss"]) == 10 and rec.latest["grad_norm/total"] == 10.0


def test_close_sends_the_last_step_when_the_stride_skipped_it():
    run = FakeRun()
    rec = Recorder(run, stride=4)
    for step in range(1, 7):
        rec.log({"train/loss": float(step), "time/train_seconds": 0.1 * step}, step, dense=True)
    rec.close()
    assert [s for s, _ in run.logged] == [1, 5, 6] and run.logged[-1][1]["train/loss"] == 6.0


@pytest.mark.parametrize(
    "n,max_points,stride", [(100, 500, 1), (500, 500, 1), (501, 500, 2), (5060, 500, 11), (5060, None, 1)]
)
def test_dense_stride(n, max_points, stride):
    assert dense_stride(n, max_points) == stride
    assert stride == 1 or n / stride <= max_points


def test_dense_measurements_counts_the_loops_measurements():
    # 1797 digits * 0.7 train = 1257 examples, batch 64: 20 steps an epoch, every step measured
    assert Loop.dense_measurements(1257, 64, 1, 10) == 200
    assert Loop.dense_measurements(1257, 64, 20, 10) == 20  # an upper bound: 2 an epoch counted, 1 made
    assert Loop.dense_measurements(1257, None, 5, 7) == 7  # full batch: one step an epoch


def test_a_train_run_sends_at_most_max_points_and_keeps_every_value_in_history(tmp_path):
    store = tmp_store(tmp_path)
    cfg = config(
        "data=moons", "model.depth=2", "model.width=8", "train.epochs=6", "probes=full", "tracking.max_points=10",
        f"tracking.uri={store}", "tracking.figures=false",
    )  # fmt: skip
    result = train.run(cfg)
    client = MlflowClient(store)
    sent = client.get_metric_history(result["run_id"], "grad_norm/total")
    history = json.loads(open(client.download_artifacts(result["run_id"], HISTORY_FILE, str(tmp_path))).read())[
        "grad_norm/total"
    ]
    assert len(history) > 40  # every step of 6 epochs measured
    assert 5 <= len(sent) <= 11  # at most max_points on the stride, plus the last
    assert sent[-1].step == history[-1][0] and sent[-1].value == pytest.approx(history[-1][1])
    assert {m.step for m in sent} <= {s for s, _ in history}
    assert result["metrics"]["test/acc"] == client.get_run(result["run_id"]).data.metrics["test/acc"]


def test_a_crashed_run_still_keeps_its_full_history(tmp_path, monkeypatch):
    store = tmp_store(tmp_path)
    cfg = config(
        "data=moons", "model.depth=2", "model.width=8", "train.epochs=5", "probes=full", "tracking.max_points=3",
        f"tracking.uri={store}", "tracking.figures=false",
    )  # fmt: skip
    real = Loop.run_epoch
    calls = []

    def crash_in_epoch_3(self, rng):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(self, rng)

    monkeypatch.setattr(Loop, "run_epoch", crash_in_epoch_3)
    with pytest.raises(RuntimeError, match="boom"):
        train.run(cfg)
    client = MlflowClient(store)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    history = json.loads(open(client.download_artifacts(run.info.run_id, HISTORY_FILE, str(tmp_path))).read())
    sent = client.get_metric_history(run.info.run_id, "grad_norm/total")
    assert len(history["grad_norm/total"]) > len(sent) >= 2  # two epochs measured in full; MLflow thinned
    assert sent[-1].step == history["grad_norm/total"][-1][0]  # the last measurement reached MLflow too


def test_a_run_ended_between_two_series_still_sends_each_series_last_value():
    run = FakeRun()
    rec = Recorder(run, stride=10)
    for step in range(1, 6):
        rec.log({"train/loss": float(step)}, step, dense=True)
        if step < 5:  # interrupted at step 5 after the loss, before the probes were measured
            rec.log({"grad_norm/total": 10.0 * step}, step, dense=True)
    rec.close()
    last = {key: (s, m[key]) for s, m in run.logged for key in m}
    assert last == {"train/loss": (5, 5.0), "grad_norm/total": (4, 40.0)}


def test_pretrain_settings_are_the_pretrain_stages_identity_only():
    from pipeline.harness.recording import config_hash

    a, b = config("pretrain.epochs=3"), config("pretrain.epochs=4")
    assert config_hash(a) == config_hash(b) == config_hash(a, "train")  # training does not read them
    assert config_hash(a, "pretrain") != config_hash(b, "pretrain")


def test_a_train_run_logs_no_pretrain_params(tmp_path):
    store = tmp_store(tmp_path)
    cfg = config("data=xor", "model.depth=1", "model.width=4", "train.epochs=1", f"tracking.uri={store}")
    result = train.run(cfg)
    params = MlflowClient(store).get_run(result["run_id"]).data.params
    assert "model.depth" in params and not [k for k in params if k.startswith("pretrain.")]
