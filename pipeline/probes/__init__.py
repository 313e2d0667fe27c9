"""Measurements read from the engine after a step: one class per instrument, run together by ProbeSet."""

from __future__ import annotations

import numpy as np

from pipeline.engine import MLP, Trainer
from pipeline.probes.activations import ActivationStats, DeadUnits, Saturation
from pipeline.probes.base import Probe, ProbeContext
from pipeline.probes.gradients import GradNorm, GradStd, UpdateRatio
from pipeline.probes.noise import GradientNoise
from pipeline.probes.verdict import verdict
from pipeline.probes.weights import Sparsity, SpectralNorm, WeightNorm


def all_probes(exact_spectral: bool = False) -> list[Probe]:
    return [GradNorm(), GradStd(), UpdateRatio(), WeightNorm(), SpectralNorm(exact=exact_spectral), Sparsity(),
            ActivationStats(), Saturation(), DeadUnits()]


class ProbeSet:
    """The probes that apply to this network, measured together on one shared context."""

    def __init__(self, net: MLP, trainer: Trainer | None = None, probe_x: np.ndarray | None = None,
                 probes: list[Probe] | None = None, full_batch: tuple[np.ndarray, np.ndarray] | None = None,
                 batch_size: int | None = None, rng: np.random.Generator | None = None):
        """`full_batch` (x, y) adds the gradient-noise probe for mini-batches of `batch_size`."""
        self.net, self.trainer, self.probe_x = net, trainer, probe_x
        chosen = list(probes if probes is not None else all_probes())
        if full_batch is not None and trainer is not None:  # last: it reuses the gradient buffers
            chosen.append(GradientNoise(*full_batch, batch_size, rng or np.random.default_rng(0)))
        self.probes = [p for p in chosen if p.applies(net)]
        if probe_x is None:
            self.probes = [p for p in self.probes if not p.needs_activations]

    def measure(self, activations: list[tuple[np.ndarray, np.ndarray]] | None = None,
                before_training: bool = False) -> dict[str, float]:
        """Every probe on one shared context; `activations` replaces the eval-mode probe forward.

        `before_training`: only the probes that need no step (activations, weights), at step 0.
        """
        ctx = ProbeContext(self.net, self.trainer, self.probe_x, activations)
        out: dict[str, float] = {}
        for probe in self.probes:
            if before_training and probe.needs_step:
                continue
            out.update(probe.measure(ctx))
        return out


__all__ = ["Probe", "ProbeContext", "ProbeSet", "all_probes", "verdict"]
