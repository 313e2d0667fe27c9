"""benchmarks/run.py --quick at tiny sizes: the benchmark code runs and writes every key (not the timings).

The tests that run the script or import PyTorch are slow (10 to 60 s each): `make test-slow` runs them."""

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
PER_SHAPE = {
    "engine_vs_torch": ("small", "deep", "wide"),
    "recurrent_vs_torch": ("rnn small", "lstm small", "rnn large", "lstm large"),
    "probes_overhead": ("small", "deep"),
}
TORCH_KEYS = ("engine_vs_torch", "recurrent_vs_torch")


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
            assert key in TORCH_KEYS and "pip install" in result[key]["skipped"]
            assert f"{key} skipped" in done.stderr
            continue
        for case in cases:
            assert positive(result[key][case]["ratio"]) or key == "probes_overhead", (key, case, result[key])
            assert math.isfinite(result[key][case]["ratio"])
    for key in TORCH_KEYS:  # the same update from the same weights: the same loss
        for case in PER_SHAPE[key] if "skipped" not in result[key] else ():
            r = result[key][case]
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


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "benchmarks/run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow  # importing PyTorch and its first step: ~10 s on a busy machine
def test_the_recurrent_rows_at_tiny_size():
    """RNN and LSTM against nn.RNN / nn.LSTM: the same first loss, both timings, every case."""
    pytest.importorskip("torch")
    from benchmarks import recurrent

    with recurrent.torch_threads(1):  # PyTorch's second thread waits long on a busy machine: seconds per step
        result = recurrent.recurrent_vs_torch(recurrent.QUICK_SHAPES, calls=1, repeats=1)
    assert set(result) == set(PER_SHAPE["recurrent_vs_torch"])
    for case, r in result.items():
        assert positive(r["ratio"]) and positive(r["wall_ratio"]), (case, r)
        assert math.isclose(r["first_loss_engine"], r["first_loss_torch"], rel_tol=recurrent.LOSS_RTOL), r
        assert r["shape"].startswith("batch ")


@pytest.mark.slow  # importing PyTorch and its first step: ~10 s on a busy machine
def test_a_wrong_weight_mapping_fails_the_first_loss_check(monkeypatch):
    """The gate blocks copied in the engine's order (i, f, o, g) instead of PyTorch's (i, f, g, o): refused."""
    pytest.importorskip("torch")
    from benchmarks import recurrent

    monkeypatch.setattr(recurrent, "TORCH_GATE_ORDER", (0, 1, 2, 3))
    with pytest.raises(AssertionError, match="lstm .* first losses differ"):
        recurrent.one_case("lstm", recurrent.QUICK_SHAPES["small"], calls=1, repeats=1)


def test_without_torch_the_recurrent_rows_are_skipped_saying_how_to_install(monkeypatch):
    from benchmarks import recurrent

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert "pip install" in recurrent.recurrent_vs_torch(recurrent.QUICK_SHAPES, 1, 1)["skipped"]


@pytest.mark.slow
def test_only_measures_one_figure_and_keeps_the_others(tmp_path):
    """--only recurrent_vs_torch: its rows measured, every other figure as the earlier results have it."""
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    earlier = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    for key in ("recurrent_vs_torch", "measured_alone"):
        earlier.pop(key, None)
    del earlier["gflops"]  # a figure the earlier run did not have yet: its row is left out, not an error
    out.write_text(json.dumps(earlier))
    done = run_script("--quick", "--only", "recurrent_vs_torch", "--out", str(out), "--markdown", str(md))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {k: v for k, v in result.items() if k not in ("recurrent_vs_torch", "measured_alone")} == earlier
    alone = result["measured_alone"]["recurrent_vs_torch"]
    assert alone["seconds"] > 0 and len(alone["load_average"]) == 3
    table = md.read_text()
    assert "`recurrent_vs_torch` measured alone" in table and "| `engine_vs_torch` | small |" in table
    assert "| `gflops` |" not in table
    if "skipped" not in result["recurrent_vs_torch"]:
        assert "| `recurrent_vs_torch` | lstm large |" in table


@pytest.mark.slow
def test_only_without_earlier_results_is_one_line(tmp_path):
    done = run_script("--quick", "--only", "recurrent_vs_torch", "--out", str(tmp_path / "none.json"))
    assert done.returncode == 2
    assert "--only keeps the other figures of an earlier run" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_only_study_efficiency_updates_the_figures_of_its_runs_and_keeps_the_others(tmp_path):
    """--only study_efficiency: the depth study's runs give study_efficiency, the default study's speed-up and
    the memory figure; every other figure stays as the earlier results have it."""
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    earlier = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    ours = ("study_efficiency", "parallel_speedup_default_study", "memory", "measured_alone")
    for key in ours:
        earlier.pop(key, None)
    out.write_text(json.dumps(earlier))
    done = run_script("--quick", "--only", "study_efficiency", "--out", str(out), "--markdown", str(md))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {k: v for k, v in result.items() if k not in ours} == earlier
    assert result["study_efficiency"]["runs"] == 8 and result["study_efficiency"]["ratio"] > 1
    assert set(result["measured_alone"]) == {"study_efficiency", "parallel_speedup_default_study", "memory"}
    assert "| `study_efficiency` |" in md.read_text()
