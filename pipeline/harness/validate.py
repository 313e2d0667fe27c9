"""Check the composed config once, before any work: one clear line per mistake, naming the key."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.data.sources import READERS, READS, REGRESSION, SEQUENCES, SOURCES
from pipeline.engine import ACTIVATIONS, INITIALIZERS, LOSSES, OPTIMIZERS, RECURRENT_INITS, REGULARIZERS
from pipeline.probes import INSTRUMENTS
from pipeline.probes.base import SOURCES as ACTIVATION_SOURCES

SCHEDULES = ("constant", "step", "cosine")
CELLS = ("rnn", "lstm")  # model=rnn, model=lstm (model.cell)
DTYPES = ("float32", "float64")


class ConfigError(ValueError):
    """A user mistake in the configuration; the message is one line naming the key."""


Check = Callable[[Any], str | None]  # returns what is allowed when the value is wrong, else None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None) -> Check:
    what = "an integer" + (f" >= {lo}" if lo is not None else "")
    return lambda v: None if _is_int(v) and (lo is None or v >= lo) else what


def number(lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False) -> Check:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    what = "a number" + (" " + " and ".join(parts) if parts else "")

    def check(v):
        if not _is_number(v):
            return what
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return what
        if hi is not None and (v > hi or (hi_open and v == hi)):
            return what
        return None

    return check


def choice(values) -> Check:
    values = tuple(values)
    return lambda v: None if v in values else "one of " + ", ".join(map(str, values))


def names_from(values) -> Check:
    """A list of names, each one of `values`."""
    values = tuple(values)

    def check(v):
        ok = isinstance(v, (list, tuple)) and all(isinstance(x, str) and x in values for x in v)
        return None if ok else "a list of: " + ", ".join(values)

    return check


def boolean(v) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def optional(check: Check) -> Check:
    def opt(v):
        if v is None:
            return None
        what = check(v)
        return None if what is None else f"null or {what}"

    return opt


def tracking_uri(v) -> str | None:
    """A database or server URI; MLflow's file store raises since 3.13, so file: and bare paths are refused."""
    ok = isinstance(v, str) and "://" in v and not v.startswith("file:")
    return (
        None
        if ok
        else "sqlite:///<path>/mlflow.db, http(s)://<host>:<port> or another database URI "
        "(MLflow's file store is not supported)"
    )


def text(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty string"


def data_file(v) -> str | None:
    """data=file's data.path: an existing .csv or .npz (what is in it is checked when it is read)."""
    allowed = "the path of an existing .csv or .npz file"
    if not isinstance(v, str) or not v.strip():
        return allowed
    p = Path(v).expanduser().absolute()
    if p.suffix.lower() not in (".csv", ".npz"):
        return f"{allowed} (a name ending in .csv or .npz)"
    return None if p.is_file() else f"{allowed} (no file at {p})"


def openml_name(v) -> str | None:
    return None if isinstance(v, str) and v.strip() else "the name of an OpenML data set (iris, wine, mnist_784, ...)"


def openml_version(v) -> str | None:
    return None if v == "active" or (_is_int(v) and v >= 1) else "active, or an integer >= 1"


# the rules per key; group members are checked by key name, so every scheme's parameters are covered
RULES: dict[str, Check] = {
    "seed": integer(0),
    "export": optional(text),
    "data.name": choice((*SOURCES, *READERS)),
    "data.path": data_file,
    "data.label": optional(text),
    "data.dataset": openml_name,
    "data.version": openml_version,
    "data.n_samples": optional(integer(10)),
    "data.n_labeled": optional(integer(1)),
    "data.noise": number(0),
    "data.test_size": number(0, 1, lo_open=True, hi_open=True),
    "data.val_size": number(0, 1, hi_open=True),
    "data.seed": integer(0),
    "data.factor": number(0, 1, lo_open=True, hi_open=True),
    "data.n_classes": integer(2),
    "data.n_features": integer(1),
    "data.seq_len": integer(2),
    "data.cue_steps": integer(1),
    "data.read": choice(READS),
    "model.depth": integer(0),
    "model.width": integer(1),
    "model.activation": choice(ACTIVATIONS),
    "model.slope": number(0),
    "model.alpha": number(0, lo_open=True),
    "model.batch_norm": boolean,
    "model.residual": boolean,
    "model.loss": choice(("auto", *LOSSES)),
    "model.cell": choice(CELLS),
    "model.bptt": optional(integer(1)),
    "model.forget_bias": number(),
    "model.dtype": choice(DTYPES),
    "init.name": choice((*INITIALIZERS, "pretrained")),
    "init.source": optional(text),
    "init.output": optional(choice(INITIALIZERS)),
    "init.std": number(0),
    "init.mean": number(),
    "init.value": number(),
    "init.limit": number(0),
    "init.gain": optional(number(0, lo_open=True)),
    "init.bias": number(),
    "init.recurrent": choice(RECURRENT_INITS),
    "init.recurrent_gain": number(0),
    "optimizer.name": choice(OPTIMIZERS),
    "optimizer.lr": number(0, lo_open=True),
    "optimizer.momentum": number(0, 1, hi_open=True),
    "optimizer.dampening": number(0, 1),
    "optimizer.weight_decay": number(0),
    "optimizer.lr_decay": number(0),
    "optimizer.eps": number(0),
    "optimizer.alpha": number(0, 1, hi_open=True),
    "optimizer.beta1": number(0, 1, hi_open=True),
    "optimizer.beta2": number(0, 1, hi_open=True),
    "optimizer.centered": boolean,
    "regularizer.name": choice(("none", *REGULARIZERS)),
    "regularizer.strength": number(0),
    "regularizer.l1_ratio": number(0, 1),
    "train.epochs": integer(1),
    "train.batch_size": optional(integer(1)),
    "train.clip.max_norm": optional(number(0, lo_open=True)),
    "train.clip.max_value": optional(number(0, lo_open=True)),
    "train.schedule.name": choice(SCHEDULES),
    "train.schedule.step_size": integer(1),
    "train.schedule.gamma": number(0, 1, lo_open=True),
    "train.schedule.min_lr": number(0),
    "train.progress": choice(("auto", True, False)),
    "study.progress": choice(("auto", True, False)),
    "probes.enabled": boolean,
    "probes.every": integer(1),
    "probes.batch_size": integer(1),
    "probes.histograms": boolean,
    "probes.activations": choice(ACTIVATION_SOURCES),
    "probes.gradient_noise": boolean,
    "probes.instruments": names_from(INSTRUMENTS),
    "pretrain.epochs": integer(0),
    "pretrain.batch_size": optional(integer(1)),
    "pretrain.noise": number(0, 1, hi_open=True),
    "pretrain.loss": choice(("mse", "cross_entropy")),
    "tracking.enabled": boolean,
    "tracking.uri": optional(tracking_uri),
    "tracking.experiment": text,
    "tracking.run_name": optional(text),
    "tracking.parent_run_id": optional(text),
    "tracking.figures": choice(("auto", True, False)),
    "tracking.max_points": optional(integer(1)),
}

# pretraining's own optimizer: the same keys and ranges as the optimizer group's
RULES.update({f"pretrain.{k}": v for k, v in list(RULES.items()) if k.startswith("optimizer.")})


def _flat(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _show(v) -> str:
    return "null" if v is None else repr(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)


def validate(cfg: Mapping, groups: tuple[str, ...] | None = None) -> None:
    """Raise ConfigError on the first bad key (of `groups` when given, e.g. ("data",))."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        plain = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(plain, dict)
        cfg = plain
    flat = _flat({k: v for k, v in cfg.items() if k != "hydra" and (groups is None or k in groups)})
    for key, value in flat.items():
        rule = RULES.get(key)
        if rule is not None and (allowed := rule(value)) is not None:
            raise ConfigError(f"{key}: got {_show(value)}; allowed: {allowed}")
    _check_combinations(cfg, flat)


def _check_combinations(cfg: Mapping, flat: Mapping[str, Any]) -> None:
    if flat.get("data.name") == "file" and flat.get("data.label") is None:
        raise ConfigError("data.label: got null; allowed: the name of the label column (or .npz array) of data.path")
    if flat.get("init.name") == "pretrained" and flat.get("init.source") is None:
        raise ConfigError(
            "init.source: got null; allowed: with init=pretrained, a pretrained weights file, its folder, "
            "or a pretrain run's id"
        )
    test, val = flat.get("data.test_size"), flat.get("data.val_size")
    if (
        isinstance(test, (int, float))
        and isinstance(val, (int, float))
        and _is_number(test)
        and _is_number(val)
        and test + val >= 1
    ):
        raise ConfigError(f"data.val_size: got {val} with data.test_size {test}; allowed: val_size + test_size < 1")
    _check_sequences(flat)
    if flat.get("model.batch_norm") is True and flat.get("train.batch_size") == 1:
        raise ConfigError(
            "model.batch_norm: batch norm needs batches of >= 2 examples; "
            "allowed: train.batch_size >= 2 or null with batch_norm=true"
        )


def _check_sequences(flat: Mapping[str, Any]) -> None:
    """Sequence data go with a recurrent model and back; real targets with the mean squared error."""
    data, cell, loss = flat.get("data.name"), flat.get("model.cell"), flat.get("model.loss")
    if data is None or "model.loss" not in flat:  # a check of the data group alone (the prepare stage)
        pass
    elif data in SEQUENCES and cell is None:
        raise ConfigError(
            f"model: data={data} is a sequence task (batch x time x features) and the MLP takes flat features; "
            "allowed: model=rnn or model=lstm"
        )
    elif cell is not None and data not in SEQUENCES:
        raise ConfigError(
            f"model.cell: got {_show(cell)}, which reads sequences, with data={data}; "
            f"allowed: a sequence data set: data={', '.join(SEQUENCES)}"
        )
    elif data in REGRESSION and loss not in ("auto", "mse"):
        raise ConfigError(f"model.loss: got {_show(loss)}; data={data} is a regression task; allowed: auto or mse")
    cue, steps = flat.get("data.cue_steps"), flat.get("data.seq_len")
    if isinstance(cue, int) and isinstance(steps, int) and cue > steps:
        raise ConfigError(f"data.cue_steps: got {cue} with data.seq_len {steps}; allowed: cue_steps <= seq_len")


def check_batch_size(batch_size: int | None, n_train: int) -> None:
    """The batch size must fit the training split (known only once the data exist)."""
    if batch_size is not None and batch_size > n_train:
        raise ConfigError(
            f"train.batch_size: got {batch_size}; allowed: at most the {n_train} training "
            "examples, or null for the full batch"
        )
