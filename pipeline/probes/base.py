"""The shared base of every probe: a context that reads the network after a step."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.engine import MLP, Trainer, layer_name


@dataclass
class ProbeContext:
    """What probes read: the step's caches and gradients, and (lazily) the fixed probe batch's activations."""

    net: MLP
    trainer: Trainer | None = None
    probe_x: np.ndarray | None = None  # (probe_batch, in_dim)
    _activations: list[tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def preclip_grads(self) -> dict[str, np.ndarray]:
        return self.trainer.preclip_grads if self.trainer is not None else self.net.grads

    def activations(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(z, a) per layer on the probe batch, from one eval-mode forward shared by every probe.

        Eval mode, so batch norm uses (and does not update) its running statistics.
        """
        if self._activations is None:
            if self.probe_x is None:
                raise ValueError("activation probes need a probe batch")
            self.net.forward(self.probe_x, train=False)
            self._activations = [(layer.cache["z"], layer.cache["a"]) for layer in self.net.layers]
        return self._activations


class Probe:
    """One instrument: `measure(ctx) -> {metric key: value}`; `applies(net)` says if it has anything to say."""

    needs_activations = False
    needs_step = False  # reads a training step's gradients: nothing to say before the first step

    def applies(self, net: MLP) -> bool:
        return True

    def measure(self, ctx: ProbeContext) -> dict[str, float]:
        raise NotImplementedError


def per_layer(prefix: str, values) -> dict[str, float]:
    """{"prefix/layer_01": v1, ...} from values ordered by layer, output layer last."""
    return {f"{prefix}/{layer_name(i)}": float(v) for i, v in enumerate(values, 1)}
