"""What a study works with: the runs of its grid, and the findings it hands back to be written."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.harness.recording import History
from pipeline.studies.checks import Check, cell

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
    case: str | None = None  # the study case's name (conf/study/<name>.yaml `cases`), when it has one

    @property
    def ok(self) -> bool:
        return self.status == "FINISHED"

    @property
    def diverged(self) -> bool:
        return "diverged" in self.verdict

    @property
    def learned(self) -> bool:
        """Finished and not labelled `not_learning` (nor diverged)."""
        return self.ok and not ({"not_learning", "diverged"} & set(self.verdict))

    @property
    def seed(self) -> str:
        """The run's seed as the grid spelled it ("0" where the study does not sweep seeds)."""
        return str(self.values.get("seed", "0"))

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
class Findings:
    """What a study found: its checks (the verdict follows from them alone), the run table, flat metrics,
    figures, notes on how the numbers were measured, and CSV series for DVC plots."""

    checks: list[Check]
    columns: list[str]
    rows: list[dict[str, Any]]
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
    head = "| " + " | ".join(cell(c) for c in columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(fmt(r.get(c))) for c in columns) + " |\n" for r in rows)


def finished(runs: list[StudyRun]) -> list[StudyRun]:
    return [r for r in runs if r.ok]


def seeds(runs: list[StudyRun]) -> list[str]:
    """The seeds of the runs, in numeric order where they are numbers."""
    return sorted({r.seed for r in runs}, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))


def seed_label(seed: str) -> str:
    """How a check names a seed: "seed 0"."""
    return f"seed {seed}"


def per_seed(
    runs: list[StudyRun], measure: Callable[[StudyRun], float], all_seeds: list[str] | None = None
) -> dict[str, float]:
    """{"seed s": measure(run)} over the runs of one condition, or over `all_seeds` when given; nan where the
    run is missing or did not finish (a check then names it as missing)."""
    by_seed = {r.seed: r for r in runs}
    keys = all_seeds if all_seeds is not None else seeds(runs)
    return {seed_label(s): float(measure(by_seed[s])) if s in by_seed and by_seed[s].ok else math.nan for s in keys}


def seed_table(rows: list[dict[str, Any]], keys: list[str], columns: list[str]) -> tuple[list[str], list[dict]]:
    """Rows of one condition per seed folded into one row: numbers as mean (min..max), labels counted.

    `keys` identify a condition (case, depth); every other column of `columns` is folded over the rows
    sharing those keys, and the "seed" column becomes "seeds", how many rows were folded. Returns the
    folded table's columns and rows, in the order the conditions first appear.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    out = []
    for key, group in groups.items():
        folded: dict[str, Any] = dict(zip(keys, key))
        for col in columns:
            if col == "seed":
                folded["seeds"] = len(group)
            elif col not in keys:
                folded[col] = _fold([r.get(col) for r in group])
        out.append(folded)
    return ["seeds" if c == "seed" else c for c in columns], out


def _fold(cells: list[Any]) -> Any:
    """Numbers: "mean (min..max)"; text: each distinct value with its count."""
    numbers = [float(c) for c in cells if isinstance(c, (int, float, np.number)) and not isinstance(c, bool)]
    if numbers and len(numbers) == len(cells):
        finite = [v for v in numbers if not math.isnan(v)]
        if len(finite) <= 1 or min(finite) == max(finite):
            return finite[0] if finite else math.nan
        return f"{fmt(float(np.mean(finite)))} ({fmt(min(finite))}..{fmt(max(finite))})"
    texts = [fmt(c) for c in cells]
    counts = {t: texts.count(t) for t in dict.fromkeys(texts)}
    return ", ".join(t if n == 1 and len(cells) == 1 else f"{t} x{n}" for t, n in counts.items())


def by(runs: list[StudyRun], **values) -> list[StudyRun]:
    """The runs whose swept values match, with '.' in keys written as '__' (model__activation='relu')."""
    want = {k.replace("__", "."): v for k, v in values.items()}
    return [r for r in runs if all(str(r.values.get(k)) == str(v) for k, v in want.items())]
