"""Prepared data sets: built from a source, split, standardized, saved with a sidecar, reused while intact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.data import external
from pipeline.data import sources as datasets
from pipeline.harness.paths import ROOT
from pipeline.harness.validate import ConfigError

PREPARED_DIR = ROOT / "data" / "prepared"  # the prepare stage's output (a DVC out): only that stage writes it
CACHE_DIR = ROOT / "data" / "cache"  # data sets the other stages needed and built themselves
log = logging.getLogger(__name__)
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def data_config(data_cfg) -> dict:
    """The data group as a plain dict: what identifies a prepared data set.

    For `data=file` it also holds the file's sha256 (`file_sha256`): an edited file is another data set.
    `n_labeled` is left out: it picks the labeled part of the training split, not another prepared set.
    """
    plain = OmegaConf.to_container(data_cfg, resolve=True) if isinstance(data_cfg, DictConfig) else dict(data_cfg)
    assert isinstance(plain, dict)
    plain.pop("n_labeled", None)
    if plain.get("name") == "file":
        plain["file_sha256"] = external.file_sha256(plain.get("path"))
    return plain


def data_label(data_cfg) -> str | None:
    """A user's data set in a few words (`wine.csv`, `openml iris`); None for the built-in sets.

    A study run on a user's data set gets its own parent run and report folder by it.
    """
    c = data_cfg if isinstance(data_cfg, dict) else OmegaConf.to_container(data_cfg, resolve=True)
    assert isinstance(c, dict)
    if c.get("name") == "file":
        return Path(str(c.get("path"))).name
    if c.get("name") == "openml":
        return f"openml {c.get('dataset')}"
    return None


def data_key(data_cfg) -> str:
    """Short content key of the data config: same config -> same file name."""
    blob = json.dumps(data_config(data_cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def paths(data_cfg, folder: Path = PREPARED_DIR) -> tuple[Path, Path]:
    stem = f"{data_config(data_cfg)['name']}-{data_key(data_cfg)}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes: independent of the zip container's timestamps."""
    h = hashlib.sha256()
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def build(data_cfg) -> datasets.Split:
    """Generate (or read), split (stratified) and standardize (fitted on train) in float64."""
    return _build(data_cfg)[0]


def _build(data_cfg) -> tuple[datasets.Split, dict | None]:
    """The split, and for a file or OpenML set what the sidecar keeps about its source (else None)."""
    c = data_config(data_cfg)
    source = None
    if c["name"] in datasets.READERS:  # a user's file, OpenML
        table = external.read(c)
        X, y, source = table.X, table.y, table.info
    else:
        extra = {k: v for k, v in c.items() if k not in ("name", "n_samples", "noise", "test_size", "val_size", "seed")}
        X, y = datasets.load(
            c["name"], n_samples=c.get("n_samples") or 1000, noise=c.get("noise", 0.0), seed=c["seed"], **extra
        )
    try:
        split = datasets.split_standardize(X, y, c["test_size"], c["val_size"], c["seed"], dtype=np.float64)
    except ValueError as e:  # scikit-learn: a split too small to hold every class
        if source is None:
            raise ConfigError(
                f"data.n_samples: {len(y)} examples cannot be split into train/val/test with every class in each ({e})"
            ) from None
        key, where = external.describe(c)
        raise ConfigError(
            f"{key}: {where}: {len(y)} rows cannot be split into train/val/test with every class in each "
            f"({external.smallest_class(y, source.get('classes'))}; scikit-learn: {' '.join(str(e).split())})"
        ) from None
    return split, source


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(split: datasets.Split, data_cfg, folder: Path = PREPARED_DIR, source: dict | None = None) -> dict:
    """The arrays and their sidecar (`source`: where a file or OpenML set came from, its columns and classes)."""
    npz, sidecar = paths(data_cfg, folder)
    arrays = {name: getattr(split, name) for name in ARRAYS}
    meta = {
        "config": data_config(data_cfg),
        "sha256": content_sha256(arrays),
        "shapes": {name: list(a.shape) for name, a in arrays.items()},
        "split_sizes": {s: int(len(arrays[f"y_{s}"])) for s in ("train", "val", "test")},
        "n_features": split.n_features,
        "seq_len": split.seq_len,  # steps per sequence; null for flat features
        "seed": data_config(data_cfg)["seed"],
    }
    if split.regression:  # real targets: their mean and variance (the variance is a constant predictor's MSE)
        meta["task"] = "regression"
        meta["target_stats"] = {
            s: {"mean": float(arrays[f"y_{s}"].mean()), "var": float(arrays[f"y_{s}"].var())}
            for s in ("train", "val", "test")
            if len(arrays[f"y_{s}"])
        }
    else:
        meta["task"] = "classification"
        meta["class_counts"] = {
            s: np.bincount(arrays[f"y_{s}"], minlength=split.n_classes).tolist() for s in ("train", "val", "test")
        }
        meta["n_classes"] = split.n_classes
    if source is not None:
        meta["source"] = source
    _write_atomic(npz, lambda f: np.savez(f, **arrays))
    _write_atomic(sidecar, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return meta


def load_saved(data_cfg, folder: Path = PREPARED_DIR) -> tuple[tuple[datasets.Split, dict] | None, str]:
    """(split, sidecar) when the saved files are intact and match the config, else (None, why not)."""
    npz, sidecar = paths(data_cfg, folder)
    if not npz.exists() and not sidecar.exists():
        return None, "not prepared yet"
    try:
        meta = json.loads(sidecar.read_text())
        with np.load(npz) as f:
            arrays = {name: f[name] for name in ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # missing, truncated, not npz/json
        return None, f"unreadable ({type(e).__name__}: {e})"
    if meta.get("config") != data_config(data_cfg):
        return None, "its sidecar describes another config"
    if meta.get("sha256") != content_sha256(arrays):
        return None, "sha256 of its content does not match its sidecar"
    return (datasets.Split(**arrays), meta), "ok"


def load_or_build(data_cfg, folder: Path | None = None) -> tuple[datasets.Split, dict]:
    """Reuse the prepared data when intact and up to date, else (re)build and save it.

    Without `folder`: the prepare stage's output when it holds this config, else data/cache/ (so no
    other stage ever writes into the prepare stage's DVC output).
    """
    if folder is None:
        saved, _ = load_saved(data_cfg, PREPARED_DIR)
        if saved is not None:
            return saved[0], dict(saved[1], reused=True)
        folder = CACHE_DIR
    saved, why = load_saved(data_cfg, folder)
    if saved is not None:
        split, meta = saved
        return split, dict(meta, reused=True)
    if why != "not prepared yet":
        log.warning("%s: %s; rebuilding it", paths(data_cfg, folder)[0], why)
    split, source = _build(data_cfg)
    return split, dict(save(split, data_cfg, folder, source), reused=False, rebuilt_because=why)


def as_dtype(split: datasets.Split, dtype) -> datasets.Split:
    """Features cast once to the model's dtype (labels stay int64)."""
    return datasets.Split(
        *(
            a.astype(dtype, copy=False) if a.dtype.kind == "f" else a
            for a in (split.x_train, split.y_train, split.x_val, split.y_val, split.x_test, split.y_test)
        )
    )
