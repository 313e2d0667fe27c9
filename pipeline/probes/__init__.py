"""Measurements read from the engine after a step: one class per instrument, run together by ProbeSet."""

from __future__ import annotations

import numpy as np

from pipeline.engine import Network, Trainer
from pipeline.probes.activations import ActivationStats, DeadUnits, Saturation
from pipeline.probes.base import SOURCES, Probe, ProbeContext
from pipeline.probes.gradients import GradNorm, GradStd, UpdateRatio
from pipeline.probes.noise import GradientNoise
from pipeline.probes.recurrent import CellState, ForgetGate, GradientThroughTime, PerStepTheory, SpectralRadius
from pipeline.probes.weights import Sparsity, SpectralNorm, WeightNorm

INSTRUMENTS: dict[str, type[Probe]] = {
    p.name: p
    for p in (
        GradNorm,
        GradStd,
        UpdateRatio,
        WeightNorm,
        SpectralNorm,
        Sparsity,
        ActivationStats,
        Saturation,
        DeadUnits,
        SpectralRadius,
        PerStepTheory,  # these three read the measured batch's forward: before grad_time's own
        ForgetGate,
        CellState,
        GradientThroughTime,
    )
}
# the costly extra (a full-batch gradient per measurement): asked for with probes.gradient_noise, not listed
EXTRAS = {GradientNoise.name: GradientNoise}


def build_probes(
    names: list[str] | None = None,
    exact_spectral: bool = False,
    every: int | None = None,
    dead_window: int | None = None,
) -> list[Probe]:
    """The named instruments (every one when None), in the registry's order.

    `every` (steps between measurements) sets the spectral norm's power-iteration budget; `dead_window` the
    examples a unit must stay silent on to count as dead when reading training batches.
    """
    chosen = list(INSTRUMENTS) if names is None else list(names)
    unknown = [n for n in chosen if n not in INSTRUMENTS]
    if unknown:
        raise ValueError(f"unknown probes {unknown}; allowed: {', '.join(INSTRUMENTS)}")
    iterations = 4 if every is None else min(4, max(1, every))
    made = {
        "spectral_norm": lambda: SpectralNorm(exact=exact_spectral, iterations=iterations),
        "dead_units": lambda: DeadUnits(window=dead_window),
    }
    return [made[n]() if n in made else INSTRUMENTS[n]() for n in INSTRUMENTS if n in chosen]


class ProbeSet:
    """The probes that apply to this network, measured together on one shared context."""

    def __init__(
        self,
        net: Network,
        trainer: Trainer | None = None,
        probe_x: np.ndarray | None = None,
        probes: list[Probe] | None = None,
        full_batch: tuple[np.ndarray, np.ndarray] | None = None,
        batch_size: int | None = None,
        rng: np.random.Generator | None = None,
        source: str = "probe_batch",
        every: int | None = None,
        instruments: list[str] | None = None,
        probe_y: np.ndarray | None = None,
    ):
        """`instruments`: the names to measure (conf/probes: probes.instruments; every one when None), unless
        `probes` gives the instruments themselves. `full_batch` (x, y) adds the gradient-noise probe for
        mini-batches of `batch_size`.

        `source`: where activation probes read after a step (see ProbeContext); before training, and for
        the histograms, always the probe batch.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown activation source {source!r}; allowed: {', '.join(SOURCES)}")
        self.net, self.trainer, self.probe_x, self.source = net, trainer, probe_x, source
        self.probe_y = probe_y  # labels of the probe batch: the gradient through time is measured on it
        # dead = silent on the last window rows of activations: examples, or example-steps for sequences
        window = int(np.prod(probe_x.shape[:-1])) if probe_x is not None and source == "train_batch" else None
        chosen = list(probes if probes is not None else build_probes(instruments, every=every, dead_window=window))
        if full_batch is not None and trainer is not None:  # last: it reuses the gradient buffers
            chosen.append(GradientNoise(*full_batch, batch_size, rng or np.random.default_rng(0)))
        self.probes = [p for p in chosen if p.applies(net)]
        # asked for, says nothing about this network, and the user should be told why (probes_skipped tag)
        self.skipped = {p.name: why for p in chosen if not p.applies(net) and (why := p.why_not(net))}
        if probe_x is None and source == "probe_batch":
            self.probes = [p for p in self.probes if not p.needs_activations]

    def measure(
        self, activations: list[tuple[np.ndarray, np.ndarray]] | None = None, before_training: bool = False
    ) -> dict[str, float]:
        """Every probe on one shared context; `activations` replaces the eval-mode probe forward.

        `before_training`: only the probes that need no step (activations, weights), at step 0.
        """
        ctx = ProbeContext(
            self.net,
            self.trainer,
            self.probe_x,
            activations,
            source="probe_batch" if before_training else self.source,
            probe_y=self.probe_y,
        )
        out: dict[str, float] = {}
        for probe in self.probes:
            if before_training and probe.needs_step:
                continue
            out.update(probe.measure(ctx))
        return out


__all__ = ["INSTRUMENTS", "Probe", "ProbeContext", "ProbeSet", "build_probes"]
