"""Controlled cost at report time: the best of k interleaved short samples in one process, BLAS on one thread.

A run's own wall clock (time/train_seconds) measures the machine's load as much as the code: on a shared
2-core machine the same full-batch step took 2 ms or 280 ms. Here every timed operation runs in short
samples (~2 ms, so that some fall between two preemptions even under load), all operations interleaved
round by round with the order rotated (a burst of load hits all of them alike), BLAS on one thread (two
threads on a loaded machine wait on each other), and each keeps the minimum over the k rounds: the
estimate least touched by other work (it moved by about 10 % between repeats where medians moved 100x).
Used by the `batch_size` and `activations` studies; the operations must vary their inputs from call to
call (a fixed array lets the CPU's branch predictor learn np.where's sign pattern, which training never
allows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from pipeline.harness.validate import ConfigError

MIN_REPEATS = 15  # below this the best-of-k moved the batch sizes' order on a loaded machine (k=7)


@dataclass(frozen=True)
class Timing:
    """How the report measures: `repeats` rounds, samples of about `sample_seconds`, `blas_threads` threads."""

    repeats: int = MIN_REPEATS
    sample_seconds: float = 0.002
    blas_threads: int = 1

    def describe(self) -> str:
        return (
            f"best of {self.repeats} interleaved samples of ~{1e3 * self.sample_seconds:g} ms each, "
            f"{self.blas_threads} BLAS thread{'s' if self.blas_threads != 1 else ''}, in the report's process"
        )


def settings(cfg) -> Timing:
    """study.timing from the study's YAML (repeats >= 15; a missing block is a ConfigError)."""
    found = OmegaConf.select(cfg, "study.timing", default=None) if cfg is not None else None
    if found is None:
        raise ConfigError("study.timing: missing; allowed: {repeats: >= 15, sample_seconds: > 0, blas_threads: >= 1}")
    timing = Timing(
        int(found.get("repeats", MIN_REPEATS)),
        float(found.get("sample_seconds", 0.002)),
        int(found.get("blas_threads", 1)),
    )
    if timing.repeats < MIN_REPEATS or timing.sample_seconds <= 0 or timing.blas_threads < 1:
        raise ConfigError(
            f"study.timing: got {dict(found)}; allowed: repeats >= {MIN_REPEATS}, sample_seconds > 0, blas_threads >= 1"
        )
    return timing


def _seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def best_of_interleaved(
    fns: dict[str, Callable[[], object]], timing: Timing, reset: dict[str, Callable[[], None]] | None = None
) -> dict[str, float]:
    """Seconds per call of each zero-argument `fns[name]`: the minimum over `timing.repeats` rounds.

    Each round runs every name once, in an order rotated by one per round; a sample is as many calls as
    fill about `timing.sample_seconds` (calibrated first). `reset[name]()` runs before each sample, outside
    the timing (to restore the weights a training step changes).
    """
    names = list(fns)
    reset = reset or {}
    with threadpool_limits(limits=timing.blas_threads, user_api="blas"), np.errstate(all="ignore"):
        calls = {}
        for name in names:  # calibrate after a warm-up call: calls per sample
            reset.get(name, lambda: None)()
            fns[name]()
            one = min(_seconds_per_call(fns[name], 3) for _ in range(3))
            calls[name] = max(1, int(timing.sample_seconds / max(one, 1e-9)))
        best = dict.fromkeys(names, np.inf)
        for r in range(timing.repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                reset.get(name, lambda: None)()
                best[name] = min(best[name], _seconds_per_call(fns[name], calls[name]))
    return best


def cycling_step(trainer, x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> tuple[Callable, Callable]:
    """(one training step on the next of `batches`, a reset of the weights and the batch counter).

    The step is what time/train_seconds times in training (indexing included); the reset keeps every sample
    at the same weights.
    """
    state = {"i": 0}
    start = {k: v.copy() for k, v in trainer.net.params.items()}

    def step():
        idx = batches[state["i"] % len(batches)]
        state["i"] += 1
        return trainer.step(x[idx], y[idx])

    def reset():
        for k, v in start.items():
            np.copyto(trainer.net.params[k], v)
        state["i"] = 0

    return step, reset
