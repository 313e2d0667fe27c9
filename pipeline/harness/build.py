"""Turn the composed config into engine objects and a run's data (the one place that maps config keys to the engine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.data import labeled, prepared
from pipeline.data.sources import Split
from pipeline.engine import (
    MLP,
    GradientClipper,
    Loss,
    Network,
    Optimizer,
    RecurrentNet,
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
) -> Network:
    """The MLP (or with `model.cell` the recurrent net) of `model.*` initialized by `init.*`.

    He's gain follows leaky_relu's slope. A recurrent net's W_hh comes from `init.recurrent` scaled to the
    spectral radius `init.recurrent_gain`; its input and output weights from the `init` scheme.
    `init=pretrained` loads an MLP's hidden layers from `init.source` (`tracking_uri`: where a run id is looked up).
    """
    if init["name"] == "pretrained":
        return build_pretrained_network(model, init, in_dim, out_dim, rng, dtype, tracking_uri)
    shape = {k: float(model[k]) for k in ("slope", "alpha") if model.get(k) is not None}  # leaky_relu's, elu's
    activation = make_activation(model.get("activation", "tanh"), **shape)
    params = _options(init)
    bias = float(params.pop("bias", 0.0) or 0.0)
    recurrent = params.pop("recurrent", "orthogonal"), float(params.pop("recurrent_gain", 1.0))
    initializer = make_initializer(init["name"], negative_slope=activation.negative_slope, **params)
    if model.get("cell"):
        return RecurrentNet(
            in_dim,
            out_dim,
            int(model["width"]),
            model["cell"],
            initializer,
            rng,
            dtype=DTYPES[dtype or model.get("dtype", "float32")],
            activation=activation,
            recurrent_init=recurrent[0],
            recurrent_gain=recurrent[1],
            bptt=None if model.get("bptt") is None else int(model["bptt"]),
            forget_bias=float(model.get("forget_bias", 1.0)),
        )
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
    assert isinstance(net, MLP)  # check_fits refuses model.cell
    pretrained.load_into(net, pre)
    return net


def build_loss(model: Mapping, regression: bool = False) -> Loss:
    """`model.loss`; `auto` is cross-entropy for classes, the mean squared error for real targets."""
    name = model.get("loss", "cross_entropy")
    if name == "auto":
        name = "mse" if regression else "cross_entropy"
    return make_loss(name, regression=regression)


def build_regularizer(regularizer: Mapping) -> Regularizer | None:
    params = _options(regularizer)
    return make_regularizer(regularizer["name"], **params)


def build_optimizer(optimizer: Mapping, net: Network) -> Optimizer:
    return make_optimizer(optimizer["name"], decay_keys=net.weight_keys, **_options(optimizer))


def build_clipper(clip: Mapping | None) -> GradientClipper:
    clip = clip or {}
    return GradientClipper(max_norm=clip.get("max_norm"), max_value=clip.get("max_value"))


def load_data(cfg: DictConfig) -> Split:
    """The run's split: prepared, its training part cut to `data.n_labeled` labeled examples, in the model's dtype."""
    split, _ = prepared.load_or_build(cfg.data)
    split = labeled.labeled(split, cfg.data.get("n_labeled"), cfg.data.seed)
    data = prepared.as_dtype(split, DTYPES[cfg.model.dtype])
    check_batch_size(cfg.train.batch_size, len(data.y_train))
    return data


def build_trainer(cfg: DictConfig, data: Split) -> Trainer:
    net = build_network(
        cfg.model, cfg.init, data.n_features, data.out_dim, rng_for(cfg.seed, "init"), tracking_uri=cfg.tracking.uri
    )
    return Trainer(
        net,
        build_loss(cfg.model, data.regression),
        build_optimizer(cfg.optimizer, net),
        build_regularizer(cfg.regularizer),
        build_clipper(cfg.train.clip),
    )
