"""A recurrent run's gradient-through-time table and heat map (pipeline/harness/through_time.py)."""

import math

import numpy as np

from pipeline.harness import through_time
from pipeline.probes.recurrent import GradientThroughTime


class Probes:
    def __init__(self, rows):
        probe = GradientThroughTime()
        probe.trace = [np.asarray(r, dtype=float) for r in rows]
        self.probes = [probe]


def test_the_table_pairs_each_row_with_its_step_and_round_trips():
    rows = [[1e-6, 1e-3, 1.0], [0.0, 2e-2, 0.5], [math.inf, 1.0, 2.0]]
    history = {"grad_time_factor": [(0, 0.1), (20, 0.2), (40, 0.3)]}
    steps, norms = through_time.trace(Probes(rows), history)
    assert steps.tolist() == [0, 20, 40] and norms.shape == (3, 3)
    back_steps, back = through_time.decode(through_time.encode(steps, norms))
    assert back_steps.tolist() == [0, 20, 40]
    np.testing.assert_allclose(back, norms, rtol=1e-6)


def test_no_measurement_no_table():
    assert through_time.trace(None, {}) is None
    assert through_time.trace(Probes([]), {}) is None


def test_the_heat_map_is_one_image_time_down_steps_across_on_a_log_scale():
    norms = np.array([[0.5 ** (9 - t) for t in range(10)]] * 4)  # (measurements, time)
    norms[1, :3] = 0.0  # not reached (a truncated backward): masked grey, not a value
    fig = through_time.heatmap(np.array([0, 5, 10, 15]), norms)
    (image,) = fig.axes[0].get_images()
    data = image.get_array()
    assert data.shape == (10, 4) and data.mask[:3, 1].all() and not data.mask[:, 0].any()
    assert np.isclose(data[9, 0], 0.0) and np.isclose(data[0, 0], 9 * np.log10(0.5))  # log10 of the norms
    assert "not reached" in fig.axes[0].get_xlabel()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "5", "10", "15"]
