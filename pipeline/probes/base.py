"""The shared base of every probe: a context that reads the network after a step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.engine import Network, Trainer, layer_name

SOURCES = ("probe_batch", "train_batch")


@dataclass
class ProbeContext:
    """What probes read: the step's caches and gradients, and (lazily) the activations to describe.

    Activations come from one eval-mode forward of the fixed probe batch (`source="probe_batch"`), or, at
    no cost, from the caches the training step's own forward left (`source="train_batch"`).
    """

    net: Network
    trainer: Trainer | None = None
    probe_x: np.ndarray | None = None  # (probe_batch, in_dim)
    _activations: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)
    source: str = "probe_batch"
    probe_y: np.ndarray | None = None  # (probe_batch,): the probe batch's labels, for probes that backpropagate

    @property
    def preclip_grads(self) -> dict[str, np.ndarray]:
        return self.trainer.preclip_grads if self.trainer is not None else self.net.grads

    def activations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(z, a) per layer, output layer last, shared by every probe of this measurement.

        The probe batch runs in eval mode, so batch norm uses (and does not update) its running statistics.
        """
        if self._activations is None:
            if self.source == "train_batch":
                self._activations = [(layer.cache["z"], layer.cache["a"]) for layer in self.net.layers]
                return self._activations
            if self.probe_x is None:
                raise ValueError("activation probes need a probe batch")
            self.net.forward(self.probe_x, train=False)
            self._activations = [(layer.cache["z"], layer.cache["a"]) for layer in self.net.layers]
        return self._activations


class Probe:
    """One instrument: `measure(ctx) -> {metric key: value}`; `applies(net)` says if it has anything to say."""

    name = ""  # what conf/probes lists it as (probes.instruments)
    needs_activations = False
    needs_step = False  # reads a training step's gradients: nothing to say before the first step

    def applies(self, net: Network) -> bool:
        return True

    def why_not(self, net: Network) -> str | None:
        """Why this probe says nothing about `net`, where a user who asked for it should be told (else None)."""
        return None

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        raise NotImplementedError


def weight_names(layer) -> tuple[str, ...]:
    """The layer's weight tensors: ("W",) for a dense layer, ("W_xh", "W_hh") for a recurrent one.

    Per-layer weight probes measure them together (one norm over all of them); a layer with several also
    gets one key per tensor (`grad_norm/W_hh`).
    """
    return getattr(layer, "weight_names", ("W",))


def per_layer(prefix: str, values) -> dict[str, float]:
    """{"prefix/layer_01": v1, ...} from values ordered by layer, output layer last."""
    return {f"{prefix}/{layer_name(i)}": float(v) for i, v in enumerate(values, 1)}


def sq_norm(x: np.ndarray) -> float:
    """||x||^2 in one BLAS dot over the flattened array (no temporary)."""
    flat = x.reshape(-1)
    return float(np.dot(flat, flat))


def mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and (population) std over every element, in the array's own dtype: two passes, one temporary."""
    flat = x.reshape(-1)
    mean = flat.sum() / flat.size  # pairwise summation: accurate in float32
    centred = flat - mean
    return float(mean), math.sqrt(max(float(np.dot(centred, centred)) / flat.size, 0.0))
