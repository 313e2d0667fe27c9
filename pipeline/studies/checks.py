"""A claim as named checks: each measured on every seed, compared with its expectation, and decided.

A check holds when it holds on every seed and its effect (the mean margin from the expectation) is
larger than the seeds' spread (the standard deviation of that margin); it fails when it fails on every
seed with the same condition on the effect; anything else is undecided, with the reason: runs missing,
seeds that disagree, or an effect within the spread. A study's verdict follows from its checks alone
(`verdict`). See docs/ARCHITECTURE.md, "Studies".
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"
OUTCOMES = (HOLDS, FAILS, UNDECIDED)

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
SIGNS = {"<": -1, "<=": -1, ">": 1, ">=": 1}  # margin = sign * (value - limit): positive where it holds

Values = Mapping[str, float]  # per seed (or per run): label -> measured value; nan = the run is missing


@dataclass
class Check:
    """One named, decided part of a claim: what was measured, what was expected, the outcome and why."""

    name: str
    outcome: str  # holds | fails | undecided
    measured: str  # rendered: "0.24 (0.23..0.25, 3 seeds)"
    expected: str  # rendered: "<= 0.5"
    values: dict[str, float] = field(default_factory=dict)  # label -> value (seeds or runs), for summary.json
    why: str = ""  # the reason of an undecided outcome (or a failing detail)

    def as_json(self) -> dict:
        """The check as summary.json lists it (non-finite numbers as strings: JSON has none)."""
        return {
            "name": self.name,
            "outcome": self.outcome,
            "measured": self.measured,
            "expected": self.expected,
            "values": {k: _json_number(v) for k, v in self.values.items()},
            "why": self.why,
        }


def _json_number(v: float) -> float | str:
    return float(v) if math.isfinite(v) else str(v)


def number(v: float, digits: int = 3) -> str:
    """A value for a check's text: compact, inf and nan spelled out."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}" if v == 0 or 1e-3 <= abs(v) < 1e4 else f"{v:.2e}"


def _scaled(v: float, scale: str) -> float:
    """A value on the scale the check compares on (log10 for ratios; 0 -> -inf)."""
    if scale == "log":
        if v < 0 or math.isnan(v):
            return math.nan
        return -math.inf if v == 0 else math.log10(v)
    return v


def summarize(values: Values, scale: str = "linear") -> str:
    """Mean (geometric on a log scale) and the range over the labels: "0.24 (0.23..0.25, 3 seeds)"."""
    vals = [v for v in values.values() if not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return number(vals[0])
    return f"{number(centre(vals, scale))} ({number(min(vals))}..{number(max(vals))}, {len(vals)} seeds)"


def centre(vals: list[float], scale: str = "linear") -> float:
    """The mean on the check's scale (geometric mean for log), inf kept."""
    if scale == "log":
        logs = [_scaled(v, "log") for v in vals]
        return 10 ** float(np.mean(logs)) if all(math.isfinite(x) for x in logs) else float(np.mean(vals))
    return float(np.mean(vals))


def _decide(margins: list[float], holds: list[bool]) -> tuple[str, str]:
    """Outcome from per-seed margins (positive = holds) and per-seed results; see the module docstring."""
    n, k = len(holds), sum(holds)
    if 0 < k < n:
        return UNDECIDED, f"seeds disagree: holds on {k} of {n}"
    outcome = HOLDS if k == n else FAILS
    finite = [m for m in margins if math.isfinite(m)]
    if n < 2 or len(finite) < len(margins):  # one seed: no spread to weigh; an infinite margin is decisive
        return outcome, "" if n >= 2 else "one seed: no spread to weigh the effect against"
    effect, spread = abs(float(np.mean(finite))), float(np.std(finite, ddof=1))
    if effect <= spread:
        return UNDECIDED, f"effect {number(effect)} within the seeds' spread {number(spread)}"
    return outcome, ""


def compare(
    name: str,
    values: Values,
    op: str,
    limit: float | Values,
    *,
    times: float = 1.0,
    scale: str = "linear",
    limit_name: str = "",
) -> Check:
    """Decide `value op times * limit` on every label (seed) of `values`.

    `limit` is a number or, paired by label, another measure (`limit_name` says which: "tanh's factor").
    `scale="log"` compares ratios on a log scale (the margin and spread are in decades).
    """
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}; allowed: {', '.join(OPS)}")
    if isinstance(limit, Mapping):
        limits = {k: times * limit.get(k, math.nan) for k in values}
        shown_limit = (
            f"{'' if times == 1 else number(times) + ' x '}{limit_name or 'the paired value'} "
            f"({summarize(dict(limit), scale)})"
        )
    else:
        limits = {k: times * limit for k in values}
        shown_limit = number(times * limit)
    expected = f"{op} {shown_limit}".replace(" ()", "")
    missing = sorted(k for k in values if math.isnan(values[k]) or math.isnan(limits[k]))
    if not values or missing:
        why = "runs missing: " + (", ".join(missing) if missing else "no run")
        return Check(name, UNDECIDED, summarize(values, scale), expected, dict(values), why)
    holds = [OPS[op](values[k], limits[k]) for k in values]
    with np.errstate(invalid="ignore"):
        margins = [SIGNS[op] * (_scaled(values[k], scale) - _scaled(limits[k], scale)) for k in values]
    margins = [m if not math.isnan(m) else (math.inf if h else -math.inf) for m, h in zip(margins, holds)]
    outcome, why = _decide(margins, holds)
    return Check(name, outcome, summarize(values, scale), expected, dict(values), why)


def every(name: str, flags: Mapping[str, bool | None], measured: str = "", expected: str = "") -> Check:
    """A property every labelled run (or seed) should have: holds if all have it, fails if none has.

    None marks a run that is missing (undecided). Mixed results are undecided, naming the exceptions.
    """
    missing = sorted(k for k, f in flags.items() if f is None)
    n, k = len(flags), sum(1 for f in flags.values() if f)
    text = measured or f"{k} of {n}"
    values = {key: float(bool(f)) if f is not None else math.nan for key, f in flags.items()}
    expected = expected or f"all {n}"
    if not flags or missing:
        return Check(name, UNDECIDED, text, expected, values, "runs missing: " + (", ".join(missing) or "no run"))
    if k == n:
        return Check(name, HOLDS, text, expected, values)
    if k == 0:
        return Check(name, FAILS, text, expected, values)
    exceptions = sorted(key for key, f in flags.items() if not f)
    return Check(name, UNDECIDED, text, expected, values, "not on " + ", ".join(exceptions))


def missing(name: str, expected: str, why: str) -> Check:
    """A check that cannot be measured at all (its runs are not in this study's size)."""
    return Check(name, UNDECIDED, "-", expected, {}, why)


# --- the study's verdict -----------------------------------------------------------------------------

SUPPORTED, PARTLY, NOT_SUPPORTED = "supported", "partly supported", "not supported"
VERDICTS = (SUPPORTED, PARTLY, NOT_SUPPORTED, UNDECIDED)


@dataclass
class Verdict:
    """supported (all hold), partly supported (k of n), not supported (none holds, some fail), undecided."""

    verdict: str
    holds: int
    fails: int
    undecided: int

    @property
    def total(self) -> int:
        return self.holds + self.fails + self.undecided

    def __str__(self) -> str:
        return f"{PARTLY} ({self.holds} of {self.total})" if self.verdict == PARTLY else self.verdict


def verdict(checks: list[Check]) -> Verdict:
    """The study's verdict from its checks alone."""
    counts = {o: sum(c.outcome == o for c in checks) for o in OUTCOMES}
    holds, fails, undecided = counts[HOLDS], counts[FAILS], counts[UNDECIDED]
    if checks and holds == len(checks):
        name = SUPPORTED
    elif holds == 0:
        name = NOT_SUPPORTED if fails else UNDECIDED
    else:
        name = PARTLY
    return Verdict(name, holds, fails, undecided)


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell (a `|`, as in |mean|, would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def checks_table(checks: list[Check]) -> str:
    """The checks as a Markdown table, in the claim's order."""
    lines = ["| check | measured | expected | outcome |", "|---|---|---|---|"]
    for c in checks:
        outcome = f"**{c.outcome}**" + (f" ({c.why})" if c.why else "")
        lines.append("| " + " | ".join(cell(x) for x in (c.name, c.measured, c.expected, outcome)) + " |")
    return "\n".join(lines) + "\n"
