"""The curated studies: one module per phenomenon (pipeline/studies/<name>.py with a `report`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

STUDIES = ("activations", "depth", "init", "init_depth", "learning_rate", "batch_size", "regularization",
           "clipping", "normalization", "dead_relu", "optimizers")


def report_for(name: str) -> Callable:
    """The `report(runs, cfg) -> StudyReport` of study `name`."""
    if name not in STUDIES:
        raise KeyError(name)
    return importlib.import_module(f"pipeline.studies.{name}").report
