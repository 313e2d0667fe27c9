"""Pretrained weights on disk and back: what `python -m pipeline.pretrain` writes and `init=pretrained` reads.

The file is an .npz with `layer_01.W`, `layer_01.b`, ... (the hidden layers, input side first) and `meta`, a
JSON string (shapes, activation, the init the layers started from, the data's identity, the hash of the config
that made them, the final reconstruction losses); `weights.json` beside it holds the same JSON for people and
DVC. `init.source` is that file, the folder holding it, or the id of the MLflow run that logged it
(artifact `pretrained/weights.npz`). Every problem with a source is one ConfigError line naming `init.source`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engine import MLP, layer_name
from pipeline.harness.validate import ConfigError

FORMAT = "gradlab-pretrained-1"
WEIGHTS_FILE = "weights.npz"
SIDECAR_FILE = "weights.json"
ARTIFACT_DIR = "pretrained"  # the MLflow artifact folder of a pretrain run
RUN_ID = re.compile(r"[0-9a-f]{32}")
# the config sections that decide the pretrained weights: their hash is the weights' identity
WEIGHT_SECTIONS = ("seed", "data", "model", "init", "pretrain")


@dataclass
class Pretrained:
    """Loaded weights: arrays by key (layer_01.W, ...), their meta, and where they came from (for the tag)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    where: str  # the file read, or run:<id>
    sha256: str  # of the arrays (names, dtypes, shapes, bytes)

    @property
    def depth(self) -> int:
        return len(self.meta["layers"])


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def weights_hash(plain_cfg: Mapping[str, Any]) -> str:
    """Hash of the config sections that decide the weights (WEIGHT_SECTIONS)."""
    part = {k: plain_cfg.get(k) for k in WEIGHT_SECTIONS}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hidden_arrays(net: MLP) -> dict[str, np.ndarray]:
    """The hidden layers' W and b, keyed as in the network's params (the output layer is not saved)."""
    return {f"{layer_name(i)}.{k}": layer.params[k].copy() for i, layer in enumerate(net.hidden, 1) for k in ("W", "b")}


def save(folder: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write weights.npz (arrays + meta) and weights.json into `folder`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, format=FORMAT, sha256=arrays_sha256(arrays))
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    npz, sidecar = folder / WEIGHTS_FILE, folder / SIDECAR_FILE
    tmp = npz.with_suffix(".tmp.npz")
    payload: dict[str, Any] = {"meta": np.array(text), **arrays}
    np.savez(tmp, **payload)
    tmp.replace(npz)
    sidecar.write_text(text + "\n")
    return npz, sidecar


def _read(path: Path, where: str) -> Pretrained:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in f.files if k != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(
            f"init.source: {where} is not a readable pretrained weights file ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("layers"), list):
        raise ConfigError(f"init.source: {where} is not a gradlab pretrained weights file (no {FORMAT} meta)")
    digest = arrays_sha256(arrays)
    if meta.get("sha256") != digest:
        raise ConfigError(f"init.source: {where} is corrupted: its arrays do not match the sha256 in its meta")
    return Pretrained(arrays, meta, where, digest)


def load(source: str, tracking_uri: str | None = None) -> Pretrained:
    """The weights of `source`: a weights file, the folder holding weights.npz, or an MLflow run id."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if path.is_file():
        return _read(path, str(path))
    if RUN_ID.fullmatch(source):
        return _from_run(source, tracking_uri)
    raise ConfigError(
        f"init.source: got {source!r}; allowed: a pretrained weights file (python -m pipeline.pretrain "
        f"export=FOLDER writes FOLDER/{WEIGHTS_FILE}), its folder, or the id of a pretrain run (no file at {path})"
    )


@functools.lru_cache(maxsize=4)  # a run's artifact is immutable: checked, then built, downloaded once
def _from_run(run_id: str, tracking_uri: str | None) -> Pretrained:
    from mlflow.exceptions import MlflowException

    from pipeline import tracking

    uri = tracking.resolve_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = tracking.client(uri).download_artifacts(run_id, f"{ARTIFACT_DIR}/{WEIGHTS_FILE}", tmp)
        except (MlflowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"init.source: no pretrained weights in MLflow run {run_id} at {uri} ({first})") from None
        return _read(Path(local), f"run:{run_id}")


def check_fits(pre: Pretrained, model: Mapping[str, Any], in_dim: int) -> None:
    """One ConfigError line when the weights do not fit `model` on inputs of `in_dim` features."""
    meta, where = pre.meta, pre.where
    if model.get("cell"):
        raise ConfigError(f"init: init=pretrained loads an MLP's hidden layers; model.cell is {model['cell']}")
    if model.get("batch_norm") or model.get("residual"):
        raise ConfigError(
            "init: init=pretrained loads plain dense + activation layers; allowed: model.batch_norm=false and "
            "model.residual=false"
        )
    depth, width = int(model["depth"]), int(model["width"])
    if pre.depth != depth:
        raise ConfigError(f"init.source: {where} holds {pre.depth} pretrained layers; model.depth is {depth}")
    if int(meta.get("in_dim", -1)) != in_dim:
        raise ConfigError(
            f"init.source: {where} was pretrained on {meta.get('in_dim')} input features; this data set has {in_dim}"
        )
    if int(meta.get("width", -1)) != width:
        raise ConfigError(f"init.source: {where} has layers of width {meta.get('width')}; model.width is {width}")
    if meta.get("activation") != model["activation"]:
        raise ConfigError(
            f"init.source: {where} was pretrained with activation {meta.get('activation')}; "
            f"model.activation is {model['activation']}"
        )
    fan_in = in_dim
    for i in range(1, depth + 1):
        shapes = {"W": (fan_in, width), "b": (width,)}
        for k, shape in shapes.items():
            a = pre.arrays.get(f"{layer_name(i)}.{k}")
            if a is None or a.shape != shape or not np.isfinite(a).all():
                got = "missing" if a is None else f"shape {a.shape}" if a.shape != shape else "non-finite values"
                raise ConfigError(f"init.source: {where}: {layer_name(i)}.{k} is {got}; expected shape {shape}")
        fan_in = width


def load_into(net: MLP, pre: Pretrained) -> None:
    """Copy the pretrained hidden layers into `net` (cast to its dtype); the output layer keeps its own init."""
    for i, layer in enumerate(net.hidden, 1):
        for k in ("W", "b"):
            np.copyto(layer.params[k], pre.arrays[f"{layer_name(i)}.{k}"], casting="same_kind")


def output_init(init: Mapping[str, Any], pre: Pretrained) -> dict[str, Any]:
    """The init of the output layer: `init.output` (a scheme name, its defaults) or, when null, the scheme the
    pretrained layers started from (so random-init and pretrained nets differ only in their hidden layers)."""
    if init.get("output"):
        return {"name": init["output"]}
    return dict(pre.meta.get("init") or {"name": "xavier_uniform"})


def tags(pre: Pretrained, source: str) -> dict[str, str]:
    """What a fine-tuning run is tagged with: where its weights came from."""
    return {
        "init_source": source,
        "init_source_read": pre.where,
        "init_source_sha256": pre.sha256,
        "init_source_run": str(pre.meta.get("run_id") or ""),
        "init_source_config_hash": str(pre.meta.get("config_hash") or ""),
    }


def checked_source_tags(cfg: Mapping[str, Any], in_dim: int) -> dict[str, str]:
    """With init=pretrained: load and check init.source before a run opens (a bad source is one line and no
    run), and return the run's tags; {} for any other init."""
    init = cfg["init"]
    if init["name"] != "pretrained":
        return {}
    pre = load(str(init["source"]), cfg["tracking"].get("uri"))
    check_fits(pre, cfg["model"], in_dim)
    return tags(pre, str(init["source"]))
