"""benchmarks/run.py --quick at tiny sizes: the benchmark code runs and writes every key (not the timings).

Slow (about 30 s): `make test-all` runs it."""

import json
import math
import subprocess
import sys

import pytest

from pipeline.harness.paths import ROOT

RATIO_KEYS = (
    "engine_vs_sklearn",
    "tracking_overhead",
    "parallel_speedup",
    "parallel_speedup_default_study",
    "study_efficiency",
    "parallel_speedup_full_study",
    "all_studies_seconds",
    "gflops",
)
PER_SHAPE = {"engine_vs_torch": ("small", "deep", "wide"), "probes_overhead": ("small", "deep")}


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--out", str(out), "--markdown", str(md)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in RATIO_KEYS:
        assert positive(result[key]["ratio"]), (key, result[key])
    for key, cases in PER_SHAPE.items():
        if "skipped" in result[key]:  # PyTorch is an optional extra
            assert key == "engine_vs_torch" and "pip install" in result[key]["skipped"]
            assert "engine_vs_torch skipped" in done.stderr
            continue
        for case in cases:
            assert positive(result[key][case]["ratio"]) or key == "probes_overhead", (key, case, result[key])
            assert math.isfinite(result[key][case]["ratio"])
    if "skipped" not in result["engine_vs_torch"]:  # the same update from the same weights: the same loss
        for case in PER_SHAPE["engine_vs_torch"]:
            r = result["engine_vs_torch"][case]
            assert math.isclose(r["first_loss_engine"], r["first_loss_torch"], rel_tol=1e-4), r
    assert result["tracking_overhead"]["ratio"] < 1.0
    assert result["parallel_speedup"]["runs"] == 2
    efficiency = result["study_efficiency"]  # the floor is read back from the study's own store
    assert efficiency["runs"] == 8 and efficiency["train_seconds"] > 0 and efficiency["import_seconds"] > 0.2
    assert efficiency["ratio"] > 1  # a study cannot take less than its import and its training
    assert set(result["all_studies_seconds"]) == {"ratio", "size", "depth_seconds", "activations_seconds"}
    assert 0 < result["engine_vs_sklearn"]["engine_test_acc"] <= 1
    assert result["memory"]["peak_rss_mib"] > 20  # a Python process with NumPy loaded is never smaller
    table = md.read_text()
    for key in (*RATIO_KEYS, *PER_SHAPE):
        assert f"`{key}`" in table
    assert result["machine"]["numpy"] and result["machine"]["blas"]  # what the figures were measured on
