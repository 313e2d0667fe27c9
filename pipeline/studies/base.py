"""What a study report works with: the runs of its grid, and what it hands back to be written."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.harness.recording import History

# MLflow stores +-inf as the largest double; read back, that means infinity
_MLFLOW_INF = 1.7976931348623157e308


@dataclass
class StudyRun:
    """One job of a study's grid and what it produced (status FINISHED, FAILED, KILLED or INVALID)."""

    label: str  # "model.activation=relu init=he_normal"
    values: dict[str, Any]  # swept key -> value, e.g. {"model.activation": "relu"}
    status: str
    run_id: str | None = None
    verdict: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # last value of every metric
    history: History = field(default_factory=dict)  # every value (train stage runs)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED"

    @property
    def diverged(self) -> bool:
        return "diverged" in self.verdict

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of a metric's history."""
        pts = self.history.get(key, [])
        return np.array([s for s, _ in pts], dtype=float), np.array([v for _, v in pts], dtype=float)

    def layer_values(self, prefix: str) -> list[float]:
        """Last value of prefix/layer_01, layer_02, ... in layer order."""
        keys = sorted(k for k in self.metrics if k.startswith(prefix + "/layer_"))
        return [self.metrics[k] for k in keys]

    def get(self, key: str, default: float = math.nan) -> float:
        return self.metrics.get(key, default)


def mlflow_value(v: float) -> float:
    """Undo MLflow's storage of infinities as the largest double."""
    return math.copysign(math.inf, v) if abs(v) >= _MLFLOW_INF else v


@dataclass
class StudyReport:
    """A study's answer: the table, a one-line conclusion from the numbers, flat metrics, figures."""

    columns: list[str]
    rows: list[dict[str, Any]]
    conclusion: str
    supported: bool | None  # None: the runs needed to decide are missing
    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)  # file name (.png) -> matplotlib Figure
    notes: list[str] = field(default_factory=list)
    series: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # file name (.csv) -> rows, for DVC plots


def fmt(v: Any) -> str:
    """A table cell: numbers compactly, everything else as text."""
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if math.isnan(v):
            return "-"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.3g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"
    return str(v)


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |\n" for r in rows)


def finished(runs: list[StudyRun]) -> list[StudyRun]:
    return [r for r in runs if r.ok]


def by(runs: list[StudyRun], **values) -> list[StudyRun]:
    """The runs whose swept values match, with '.' in keys written as '__' (model__activation='relu')."""
    want = {k.replace("__", "."): v for k, v in values.items()}
    return [r for r in runs if all(str(r.values.get(k)) == str(v) for k, v in want.items())]
