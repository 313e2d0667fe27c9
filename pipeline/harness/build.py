"""Turn the composed config into engine objects and a run's data (the one place that maps config keys to the engine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.data import prepared
from pipeline.data.sources import Split
from pipeline.engine import (
    MLP,
    GradientClipper,
    Loss,
    Optimizer,
    Regularizer,
    Trainer,
    make_activation,
    make_initializer,
    make_loss,
    make_optimizer,
    make_regularizer,
)
from pipeline.harness import pretrained
from pipeline.harness.seeding import rng_for
from pipeline.harness.validate import check_batch_size

DTYPES = {"float32": np.float32, "float64": np.float64}


def _options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config group's keyword options for its engine constructor: everything but its `name`."""
    return {k: v for k, v in dict(cfg).items() if k != "name"}


def build_network(
    model: Mapping,
    init: Mapping,
    in_dim: int,
    out_dim: int,
    rng: np.random.Generator,
    dtype: str | None = None,
    tracking_uri: str | None = None,
) -> MLP:
    """The MLP of `model.*` initialized by `init.*` (He's gain follows leaky_relu's slope).

    `init=pretrained` loads the hidden layers from `init.source` (`tracking_uri`: where a run id is looked up).
    """
    if init["name"] == "pretrained":
        return build_pretrained_network(model, init, in_dim, out_dim, rng, dtype, tracking_uri)
    shape = {k: float(model[k]) for k in ("slope", "alpha") if model.get(k) is not None}  # leaky_relu's, elu's
    activation = make_activation(model["activation"], **shape)
    params = _options(init)
    bias = float(params.pop("bias", 0.0) or 0.0)
    initializer = make_initializer(init["name"], negative_slope=activation.negative_slope, **params)
    return MLP(
        in_dim,
        out_dim,
        int(model["depth"]),
        int(model["width"]),
        activation,
        initializer,
        rng,
        dtype=DTYPES[dtype or model.get("dtype", "float32")],
        batch_norm=bool(model.get("batch_norm")),
        residual=bool(model.get("residual")),
        bias_value=bias,
    )


def build_pretrained_network(
    model: Mapping,
    init: Mapping,
    in_dim: int,
    out_dim: int,
    rng: np.random.Generator,
    dtype: str | None = None,
    tracking_uri: str | None = None,
) -> MLP:
    """init=pretrained: the hidden layers from `init.source`, the output layer initialized as
    `pretrained.output_init` says (`init.output`, else the scheme the pretrained layers started from)."""
    pre = pretrained.load(init["source"], tracking_uri)
    pretrained.check_fits(pre, model, in_dim)
    net = build_network(model, pretrained.output_init(init, pre), in_dim, out_dim, rng, dtype)
    pretrained.load_into(net, pre)
    return net


def build_loss(model: Mapping) -> Loss:
    return make_loss(model.get("loss", "cross_entropy"))


def build_regularizer(regularizer: Mapping) -> Regularizer | None:
    params = _options(regularizer)
    return make_regularizer(regularizer["name"], **params)


def build_optimizer(optimizer: Mapping, net: MLP) -> Optimizer:
    return make_optimizer(optimizer["name"], decay_keys=net.weight_keys, **_options(optimizer))


def build_clipper(clip: Mapping | None) -> GradientClipper:
    clip = clip or {}
    return GradientClipper(max_norm=clip.get("max_norm"), max_value=clip.get("max_value"))


def load_data(cfg: DictConfig) -> Split:
    split, _ = prepared.load_or_build(cfg.data)
    data = prepared.as_dtype(split, DTYPES[cfg.model.dtype])
    check_batch_size(cfg.train.batch_size, len(data.y_train))
    return data


def build_trainer(cfg: DictConfig, data: Split) -> Trainer:
    net = build_network(
        cfg.model, cfg.init, data.n_features, data.n_classes, rng_for(cfg.seed, "init"), tracking_uri=cfg.tracking.uri
    )
    return Trainer(
        net,
        build_loss(cfg.model),
        build_optimizer(cfg.optimizer, net),
        build_regularizer(cfg.regularizer),
        build_clipper(cfg.train.clip),
    )
