"""The curated studies: one module per phenomenon (pipeline/studies/<name>.py with `findings(runs, cfg)`),
beside what they share: the runs (base), the checks and verdict (checks), the grid (grid), the report files
(render) and the measures several studies use (measures)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

STUDIES = (
    "activations",
    "depth",
    "init",
    "init_depth",
    "learning_rate",
    "batch_size",
    "regularization",
    "clipping",
    "normalization",
    "dead_relu",
    "optimizers",
    "pretraining",
    "recurrent",
    "rnn_spectral",
)


def findings_for(name: str) -> Callable:
    """The `findings(runs, cfg) -> Findings` of study `name`."""
    if name not in STUDIES:
        raise KeyError(name)
    return importlib.import_module(f"pipeline.studies.{name}").findings
