"""The net as training starts it: one forward and backward pass of the fixed probe batch, the probes read.

What `pipeline.pretrain` logs for the stack it made and a finetune job for the net it trains (`start/...`):
`start/grad_norm/layer_01` is the gradient the first layer gets before the first update.
"""

from __future__ import annotations

import math

import numpy as np
from omegaconf import DictConfig

from pipeline.data.sources import Split
from pipeline.engine import Network
from pipeline.harness.build import build_loss
from pipeline.harness.loop import probe_indices
from pipeline.harness.seeding import rng_for
from pipeline.probes import ProbeSet, build_probes


def start_profile(cfg: DictConfig, net: Network, data: Split) -> dict[str, float]:
    """The configured probes on `net` after one training-mode pass of the probe batch (`start/<probe>/layer_XX`,
    `start/loss`), as `python -m pipeline.init` measures; non-finite values left out."""
    idx = probe_indices(len(data.x_train), cfg.probes.batch_size, rng_for(cfg.seed, "probe"))
    x, y = data.x_train[idx], data.y_train[idx]  # (probe_batch, features), (probe_batch,)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        value, dlogits = build_loss(cfg.model, data.regression)(net.forward(x, train=True), y)
        net.backward(dlogits)
        acts = [(layer.cache["z"], layer.cache["a"]) for layer in net.layers]
        probes = build_probes(list(cfg.probes.instruments), exact_spectral=True)
        metrics = ProbeSet(net, None, x, probes).measure(activations=acts)
    metrics["loss"] = value
    return {f"start/{k}": v for k, v in metrics.items() if math.isfinite(v)}
