import tempfile
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import StepPatch

from pipeline.harness import plots
from pipeline.harness.paths import ROOT

N_LAYERS, N_STEPS = 5, 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_warnings():
    # every figure must build without a single warning (numpy or matplotlib), not only RuntimeWarnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def vanishing_history(n_layers=N_LAYERS, n_steps=N_STEPS):
    """Gradients decaying as 0.25**layer (vanishing), dead-ReLU shares growing with depth, loss and accuracy."""
    steps = range(n_steps)
    h = {
        f"grad_norm/layer_{layer:02d}": [(s, 0.25**layer * (1 + 0.01 * s)) for s in steps]
        for layer in range(1, n_layers + 1)
    }
    h["grad_norm/total"] = [(s, 1.0) for s in steps]
    h.update(
        {
            f"dead_relu/layer_{layer:02d}": [(s, 0.04 * layer * s / n_steps) for s in steps]
            for layer in range(1, n_layers + 1)
        }
    )
    h["dead_relu/total"] = [(s, 0.1) for s in steps]
    h["train/loss"] = [(s, 2.0 * 0.9**s) for s in steps]
    h["val/loss"] = [(s, 2.2 * 0.9**s) for s in steps[::5]]
    h["train/acc"] = [(s, s / n_steps) for s in steps]
    h["val/acc"] = [(s, 0.9 * s / n_steps) for s in steps[::5]]
    h["epoch"] = [(s, s // 5) for s in steps]
    return h


def labels(ax):
    return ax.get_legend_handles_labels()[1]


def text_of(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


# ---------- layer_series


def test_layer_series_picks_only_per_layer_keys_sorted_by_layer():
    h = {
        "grad_norm/layer_10": [(0, 1.0)],
        "grad_norm/layer_02": [(0, 2.0)],
        "grad_norm/total": [(0, 3.0)],
        "grad_norm/layer_01": [(0, 4.0)],
        "grad_std/layer_01": [(0, 5.0)],
        "xgrad_norm/layer_03": [(0, 6.0)],
    }
    series = plots.layer_series(h, "grad_norm")
    assert list(series) == [1, 2, 10]
    assert series[2] == [(0, 2.0)]
    assert plots.layer_series(h, "grad_norm/") == series
    assert plots.layer_series(h, "dead_relu") == {}


# ---------- loss_curves


def test_loss_curves_two_panels_with_train_val_lines():
    fig = plots.loss_curves(vanishing_history(), title="run 1")
    assert isinstance(fig, Figure)
    loss, acc = fig.axes
    assert loss.get_ylabel() == "loss" and acc.get_ylabel() == "accuracy" and acc.get_xlabel() == "step"
    assert fig.get_suptitle() == "run 1"
    assert labels(loss) == ["train", "val"] and labels(acc) == ["train", "val"]
    np.testing.assert_allclose(loss.lines[0].get_ydata(), [2.0 * 0.9**s for s in range(N_STEPS)])
    np.testing.assert_array_equal(loss.lines[1].get_xdata(), [0, 5, 10, 15])
    assert loss.get_yscale() == "linear"  # 2 * 0.9**19 ~ 0.27: one decade, not more than two
    assert acc.get_ylim() == pytest.approx((-0.02, 1.02))


def test_loss_curves_log_scale_when_loss_spans_more_than_two_decades():
    h = {"train/loss": [(s, 10.0 * 0.5**s) for s in range(20)]}  # 10 .. 2e-5
    assert plots.loss_curves(h).axes[0].get_yscale() == "log"
    h["train/loss"].append((20, 0.0))  # a zero forbids the log axis
    assert plots.loss_curves(h).axes[0].get_yscale() == "linear"


def test_loss_curves_test_markers_and_divergence_line():
    h = vanishing_history()
    h["test/loss"] = [(19, 0.3)]
    h["test/acc"] = [(19, 0.85)]
    h["train/loss"][-3:] = [(17, 1e6), (18, float("inf")), (19, float("nan"))]
    h["diverged_at_step"] = [(18, 18.0)]
    loss, acc = plots.loss_curves(h).axes
    assert labels(loss) == ["train", "val", "test", "diverged"]
    assert labels(acc) == ["train", "val", "test", "diverged"]
    test_marker = loss.lines[2]
    assert test_marker.get_linestyle() == "None" and test_marker.get_marker() == "*"
    assert list(test_marker.get_xdata()) == [19] and list(test_marker.get_ydata()) == [0.3]
    diverged = loss.lines[3]
    assert list(diverged.get_xdata()) == [18, 18]
    assert diverged.get_color() == "red" and diverged.get_linestyle() == "--"
    # only the finite part of the diverged loss curve is drawn
    train = loss.lines[0].get_ydata()
    assert len(train) == 18 and np.all(np.isfinite(train))


def test_loss_curves_empty_history_and_single_step():
    fig = plots.loss_curves({})
    assert len(fig.axes) == 2 and all(not ax.lines for ax in fig.axes)
    assert "no loss logged" in text_of(fig) and "no accuracy logged" in text_of(fig)

    loss, acc = plots.loss_curves({"train/loss": [(0, 0.7)], "train/acc": [(0, 0.5)]}).axes
    assert loss.lines[0].get_marker() == "o"  # a lone point must stay visible


def test_loss_curves_all_non_finite_does_not_crash():
    h = {"train/loss": [(0, float("nan")), (1, float("inf"))], "diverged_at_step": [(1, float("nan"))]}
    loss, _ = plots.loss_curves(h).axes
    assert labels(loss) == ["diverged"]  # NaN value: falls back to the logged step
    assert list(loss.lines[0].get_xdata()) == [1, 1]


# ---------- grad_norm_heatmap


def test_heatmap_rows_are_layers_with_log10_values():
    fig = plots.grad_norm_heatmap(vanishing_history(), title="vanishing")
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (N_LAYERS, N_STEPS)
    expected = np.log10([[0.25**layer * (1 + 0.01 * s) for s in range(N_STEPS)] for layer in range(1, N_LAYERS + 1)])
    np.testing.assert_allclose(image, expected)
    assert image[0, 0] > image[-1, 0]  # layer 1 (largest gradient) in the first row
    assert not np.ma.is_masked(image)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"layer {layer:02d}" for layer in range(1, 6)]
    xt = [int(t.get_text()) for t in ax.get_xticklabels()]
    assert xt[0] == 0 and set(xt) <= set(range(N_STEPS)) and len(xt) <= plots.MAX_TICKS
    colourbar = fig.axes[1]
    assert colourbar.get_ylabel() == "log10 ||dL/dW||"
    assert ax.images[0].origin == "upper"


def test_heatmap_masks_nan_zero_and_missing_steps():
    h = vanishing_history()
    h["grad_norm/layer_02"][3] = (3, float("nan"))
    h["grad_norm/layer_03"][4] = (4, 0.0)
    h["grad_norm/layer_04"][5] = (5, float("inf"))
    h["grad_norm/layer_05"][6] = (6, -1.0)
    h["grad_norm/layer_01"].append((25, 0.5))  # a step only layer 1 logged
    ax = plots.grad_norm_heatmap(h).axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (N_LAYERS, N_STEPS + 1)  # union of steps
    masked = set(zip(*np.nonzero(np.ma.getmaskarray(image))))
    assert masked == {(1, 3), (2, 4), (3, 5), (4, 6), (1, 20), (2, 20), (3, 20), (4, 20)}
    assert image[0, 20] == pytest.approx(np.log10(0.5))
    assert "grey" in ax.get_xlabel()


def test_heatmap_all_masked_and_single_step():
    image = plots.grad_norm_heatmap({"grad_norm/layer_01": [(0, float("nan"))]}).axes[0].images[0]
    assert np.ma.getmaskarray(image.get_array()).all()
    image = plots.grad_norm_heatmap({"grad_norm/layer_01": [(7, 100.0)], "grad_norm/layer_02": [(7, 100.0)]})
    ax = image.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[2.0], [2.0]])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["7"]


def test_heatmap_without_probes_says_so():
    fig = plots.grad_norm_heatmap({"train/loss": [(0, 1.0)], "grad_norm/total": [(0, 1.0)]})
    assert "no gradient-norm probes in this run" in text_of(fig)
    assert not any(ax.images for ax in fig.axes)


# ---------- activation_histograms


def hist_counts(ax) -> list[float]:
    """Total count of each histogram drawn on `ax` (one StepPatch per series)."""
    return [float(p.get_data().values.sum()) for p in ax.patches if isinstance(p, StepPatch)]


def test_activation_histograms_one_panel_per_layer_with_start_end_overlay(rng):
    start = {layer: rng.standard_normal((32, 16)) for layer in range(1, 7)}
    end = {layer: np.maximum(rng.standard_normal((32, 16)), 0) for layer in range(1, 7)}
    fig = plots.activation_histograms(start, end, title="relu")
    used = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 8 and len(used) == 6  # a 2 x 4 grid, two cells unused
    assert [ax.get_title() for ax in used] == [f"layer {layer:02d}" for layer in range(1, 7)]
    for ax in used:
        assert labels(ax) == ["start", "end"]
        assert hist_counts(ax) == [32 * 16, 32 * 16]  # every value lands in the shared bins
    assert fig.get_suptitle() == "relu"


def test_activation_histograms_constant_and_non_finite_layers():
    start = {
        1: np.zeros((8, 4)),
        2: np.full(10, 3.5),
        3: np.array([1.0, np.nan, np.inf, 2.0]),
        4: np.full(5, np.nan),
        5: np.array([1e308, -1e308]),
    }
    fig = plots.activation_histograms(start)
    assert len([ax for ax in fig.axes if ax.axison]) == 5
    zero, const, mixed, empty, huge = fig.axes[:5]
    assert hist_counts(zero) == [32]
    lo, hi = zero.get_xlim()
    assert lo < 0 < hi
    assert hist_counts(const) == [10]
    assert hist_counts(mixed) == [2]  # NaN and inf ignored
    assert not hist_counts(empty) and "no finite values" in [t.get_text() for t in empty.texts]
    assert hist_counts(huge) == [2]
    assert zero.get_legend() is None  # no end given -> no legend


def test_activation_histograms_end_missing_for_a_layer_and_empty():
    fig = plots.activation_histograms({1: np.arange(5.0)}, {1: np.full(3, np.nan)})
    assert labels(fig.axes[0]) == ["start", "end (no finite values)"]
    fig = plots.activation_histograms({})
    assert "no activations given" in text_of(fig)


# ---------- unit_health


def test_unit_health_one_line_per_layer_on_zero_to_one():
    fig = plots.unit_health(vanishing_history(), title="relu")
    (ax,) = fig.axes
    assert ax.get_ylabel() == "dead ReLU share" and ax.get_xlabel() == "step"
    assert len(ax.lines) == N_LAYERS  # per layer only, not the total
    assert labels(ax) == [f"layer {layer:02d}" for layer in range(1, N_LAYERS + 1)]
    lo, hi = ax.get_ylim()
    assert lo <= 0 and 1 <= hi < 1.1
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [0.12 * s / N_STEPS for s in range(N_STEPS)])


def test_unit_health_both_families_and_non_finite():
    h = {f"saturation/layer_{layer:02d}": [(0, 0.5), (1, float("nan")), (2, 0.7)] for layer in (1, 2)}
    h["dead_relu/layer_01"] = [(0, 0.1)]
    fig = plots.unit_health(h)
    dead, sat = fig.axes
    assert dead.get_ylabel() == "dead ReLU share" and sat.get_ylabel() == "saturated share"
    assert len(dead.lines) == 1 and len(sat.lines) == 2
    assert dead.lines[0].get_marker() == "o"  # single step
    assert list(sat.lines[0].get_ydata()) == [0.5, 0.7]


def test_unit_health_without_probes_says_so():
    fig = plots.unit_health({"train/loss": [(0, 1.0)], "dead_relu/total": [(0, 0.2)]})
    assert "no dead-ReLU or saturation probes in this run" in text_of(fig)
    assert not any(ax.lines for ax in fig.axes)


# ---------- depth_profile


def test_depth_profile_log_axis_series_and_theory():
    act = [0.5**layer for layer in range(1, 11)]
    grad = [2.0**-layer for layer in range(10, 0, -1)]
    fig = plots.depth_profile({"activation std": act, "gradient std": grad}, theory=act, title="xavier")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "layer" and ax.get_ylabel() == "std"
    assert ax.get_title() == "xavier"
    assert labels(ax) == ["activation std", "gradient std", "theory"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(1, 11))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), act)
    assert ax.lines[0].get_marker() == "o" and ax.lines[2].get_linestyle() == "--"


def test_depth_profile_leaves_out_non_positive_and_notes_empty_series():
    fig = plots.depth_profile({"a": [1.0, 0.0, -1.0, np.nan, np.inf, 1e-3], "b": [0.0, -2.0]}, ylabel="gain")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "gain"
    assert labels(ax) == ["a", "b (no positive values)"]
    y = np.asarray(ax.lines[0].get_ydata(), dtype=float)
    np.testing.assert_allclose(y[np.isfinite(y)], [1.0, 1e-3])
    assert np.all(y[np.isfinite(y)] > 0)
    assert len(ax.lines[1].get_xdata()) == 0


def test_depth_profile_with_nothing_positive_stays_linear():
    (ax,) = plots.depth_profile({"a": [0.0, 0.0]}).axes
    assert ax.get_yscale() == "linear" and "no positive values to plot" in [t.get_text() for t in ax.texts]


# ---------- save


@pytest.mark.parametrize(
    "build",
    [
        lambda: plots.loss_curves(vanishing_history()),
        lambda: plots.grad_norm_heatmap(vanishing_history()),
        lambda: plots.grad_norm_heatmap({}),
        lambda: plots.activation_histograms({1: np.zeros(4), 2: np.arange(4.0)}, {1: np.ones(4)}),
        lambda: plots.unit_health(vanishing_history()),
        lambda: plots.depth_profile({"a": [1.0, 0.1]}, theory=[1.0, 0.5]),
    ],
    ids=["loss", "heatmap", "heatmap-empty", "hist", "health", "depth"],
)
def test_save_writes_a_png_into_new_folders(tmp_path, build):
    path = plots.save(build(), tmp_path / "a" / "b" / "fig.png")
    assert path == tmp_path / "a" / "b" / "fig.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_figures_do_not_touch_pyplot_state():
    """Figures use matplotlib's object API: plots never imports pyplot, and no figure enters its registry."""
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.harness import plots; "
        "plots.save(plots.loss_curves({'train/loss': [(1, 1.0), (2, 0.5)]}), sys.argv[1]); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", code, f"{tmp}/fig.png"], capture_output=True, text=True, cwd=ROOT, timeout=120
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots.loss_curves(vanishing_history())
    assert plt.get_fignums() == before
