"""The prepare stage: saved once, reused while intact, rebuilt when damaged."""

import json

import numpy as np

from pipeline.data import prepared
from tests.helpers import config


def test_built_then_reused_with_a_complete_sidecar(tmp_path):
    data = config("data=moons", "data.n_samples=200").data
    split, meta = prepared.load_or_build(data, tmp_path)
    assert meta["reused"] is False
    again, meta2 = prepared.load_or_build(data, tmp_path)
    assert meta2["reused"] is True
    np.testing.assert_array_equal(split.x_train, again.x_train)
    sidecar = json.loads(prepared.paths(data, tmp_path)[1].read_text())
    assert sidecar["split_sizes"] == {"train": 140, "val": 20, "test": 40}
    assert sidecar["class_counts"]["test"] == [20, 20] and sidecar["shapes"]["x_train"] == [140, 2]
    assert sidecar["seed"] == 0 and len(sidecar["sha256"]) == 64
    # standardization fitted on train only
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-12)
    assert np.abs(split.x_test.mean(axis=0)).max() > 1e-6


def test_a_changed_config_gets_its_own_files(tmp_path):
    a = prepared.paths(config("data=moons").data, tmp_path)[0]
    b = prepared.paths(config("data=moons", "data.noise=0.3").data, tmp_path)[0]
    assert a != b


def test_truncated_or_tampered_data_is_rebuilt(tmp_path, caplog):
    data = config("data=spiral", "data.n_samples=150").data
    split, _ = prepared.load_or_build(data, tmp_path)
    npz, sidecar = prepared.paths(data, tmp_path)
    npz.write_bytes(npz.read_bytes()[:100])  # truncated
    rebuilt, meta = prepared.load_or_build(data, tmp_path)
    assert meta["reused"] is False and "unreadable" in meta["rebuilt_because"]
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(rebuilt.x_train, split.x_train)
    doc = json.loads(sidecar.read_text())
    doc["sha256"] = "0" * 64  # a sidecar that does not match the content
    sidecar.write_text(json.dumps(doc))
    _, meta = prepared.load_or_build(data, tmp_path)
    assert meta["rebuilt_because"] == "sha256 of its content does not match its sidecar"
    assert prepared.load_or_build(data, tmp_path)[1]["reused"] is True
