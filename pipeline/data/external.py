"""Data from outside gradlab: a user's CSV or .npz file (`data=file`), an OpenML data set by name (`data=openml`).

Both end as float64 features and integer labels 0..k-1 (the classes sorted), checked on the way: every way a
file can be wrong is one `ConfigError` line naming the key to fix (`data.path`, `data.label`, `data.dataset`).
`prepared.py` then splits and standardizes them like the generated sets.

- A CSV: a header line naming the columns; the column named by `data.label` holds the classes (numbers or
  names), every other column is a feature and must be numeric.
- An .npz: the array named by `data.label` holds the classes (one per row); every other array is a feature
  (1-D: one column) or a block of features (2-D: rows x columns), in the order the file stores them.
- OpenML: `fetch_openml(data.dataset, version=data.version)` through scikit-learn, cached under
  `data/openml/` (scikit-learn's data_home is `data/`); `data.label` null = the data set's default target.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import socket
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.harness.paths import ROOT
from pipeline.harness.validate import ConfigError

DATA_HOME = ROOT / "data"  # scikit-learn's data_home: fetch_openml caches its downloads under data/openml/
SUFFIXES = (".csv", ".npz")
FETCH_TIMEOUT = 15.0  # seconds a network read may stall before fetch_openml gives up
FETCH_RETRY_DELAY = 1.0  # seconds before fetch_openml's one retry
log = logging.getLogger(__name__)


@dataclass
class Table:
    """Features, labels 0..k-1 and what the sidecar keeps about where they came from."""

    X: np.ndarray  # (n, d) float64, finite
    y: np.ndarray  # (n,) int64 in 0..k-1, every class present
    info: dict[str, Any] = field(default_factory=dict)


def resolve(path: str) -> Path:
    """The file `data.path` names: relative to the working directory, `~` expanded."""
    return Path(path).expanduser().absolute()


def file_sha256(path: Any) -> str:
    """sha256 of the file's bytes: part of the data config's identity, so an edited file is rebuilt."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"data.path: got {path!r}; allowed: the path of an existing .csv or .npz file")
    p = resolve(path)
    if not p.is_file():
        raise ConfigError(f"data.path: no file at {p}; allowed: the path of an existing .csv or .npz file")
    st = p.stat()
    try:
        return _sha256(str(p), st.st_size, st.st_mtime_ns)
    except OSError as e:
        raise ConfigError(f"data.path: {path} cannot be read ({_one_line(e)})") from None


@functools.lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """Once per process and file version: every look-up of a data set's identity asks for it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read(c: dict) -> Table:
    """The table of a data config of a reader source (`file` or `openml`), at most `n_samples` rows of it."""
    if c["name"] == "file":
        table = read_file(c["path"], c.get("label") or "label")
    elif c["name"] == "openml":
        table = fetch_openml(c["dataset"], c.get("version", "active"), c.get("label"))
    else:
        raise ValueError(f"not a reader source: {c['name']!r}")
    return at_most(table, c.get("n_samples"), c["seed"])


def describe(c: dict) -> tuple[str, str]:
    """The key to fix and the words naming a reader source's data in an error: ('data.path', '/tmp/x.csv')."""
    if c["name"] == "file":
        return "data.path", str(c["path"])
    return "data.dataset", f"OpenML {c['dataset']!r} (version {c.get('version', 'active')})"


# --- a user's file ---------------------------------------------------------------------------------------------


def read_file(path: str, label: str = "label") -> Table:
    """A CSV or .npz with a label column (or array), checked: one ConfigError line per problem."""
    p = resolve(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"data.path: {path} is neither a .csv nor an .npz file")
    if not p.is_file():
        raise ConfigError(f"data.path: no file at {p}; allowed: the path of an existing .csv or .npz file")
    table = _read_npz(p, path, label) if p.suffix.lower() == ".npz" else _read_csv(p, path, label)
    table.info = {"path": str(p), **table.info}
    return table


def _read_csv(p: Path, where: str, label: str) -> Table:
    import pandas as pd

    try:
        frame = pd.read_csv(p, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data.path: {where} is empty (a CSV needs a header line and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise ConfigError(f"data.path: {where} is not a readable CSV ({_one_line(e)})") from None
    for i, name in enumerate(frame.columns):
        if str(name).startswith("Unnamed: "):
            raise ConfigError(
                f"data.path: {where}: column {i + 1} has no name in the header line (a saved row index? "
                "write the CSV without it, e.g. pandas' to_csv(index=False), or name the column)"
            )
    if label not in frame.columns:
        raise ConfigError(
            f"data.label: {where} has no column {label!r} (its header line names {_names(frame.columns)}); "
            "set data.label to the label column's name"
        )
    return _from_frame(frame, label, "data.path", where)


def _read_npz(p: Path, where: str, label: str) -> Table:
    import pandas as pd

    if not zipfile.is_zipfile(p):
        raise ConfigError(f"data.path: {where} is not an .npz (a zip of .npy arrays, as numpy.savez writes)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as f:
            for name in f.files:
                try:
                    arrays[name] = f[name]
                except ValueError:  # object arrays need pickle, which is never loaded here
                    raise ConfigError(
                        f"data.path: {where}: array {name!r} holds Python objects (loading it needs pickle, "
                        "which gradlab refuses); save numbers, or labels as fixed-width strings"
                    ) from None
    except ConfigError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"data.path: {where} is not a readable .npz ({_one_line(e)})") from None
    if label not in arrays:
        raise ConfigError(
            f"data.label: {where} has no array {label!r} (its arrays: {_names(arrays)}); "
            "set data.label to the label array's name"
        )
    y = arrays.pop(label)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(f"data.label: {where}: array {label!r} has shape {y.shape}; allowed: one label per row (1-D)")
    if not arrays:
        raise ConfigError(f"data.path: {where} has no feature array besides {label!r}")
    columns, names = [], []
    for name, a in arrays.items():
        if a.ndim not in (1, 2):
            raise ConfigError(
                f"data.path: {where}: array {name!r} has shape {a.shape}; allowed: 1-D (one feature) "
                "or 2-D (rows x features)"
            )
        if len(a) != len(y):
            raise ConfigError(f"data.path: {where}: array {name!r} has {len(a)} rows, the labels {len(y)}")
        if a.dtype.kind not in "biuf":
            raise ConfigError(
                f"data.path: {where}: array {name!r} is not numeric (dtype {a.dtype}); features must be numbers"
            )
        block = a.reshape(len(a), -1).astype(np.float64)
        columns.append(block)
        names += [name] if a.ndim == 1 else [f"{name}[{j}]" for j in range(block.shape[1])]
    X = np.concatenate(columns, axis=1)
    _check_finite(X, names, "data.path", where)
    labels = pd.Series(y.astype(str) if y.dtype.kind == "S" else y)
    codes, classes = _labels(labels, label, where)
    return Table(X, codes, {"rows": len(codes), "label": label, "features": names, "classes": classes})


# --- shared checks ---------------------------------------------------------------------------------------------


def _from_frame(frame, label: str, key: str, where: str) -> Table:
    """A DataFrame's label column and numeric feature columns, checked; `key` names the source for errors."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype

    features = frame.drop(columns=[label])
    if features.shape[1] == 0:
        raise ConfigError(f"{key}: {where} has no feature column besides {label!r}")
    if len(frame) == 0:
        raise ConfigError(f"{key}: {where} has a header but no rows")
    columns = []
    for name in features.columns:
        col = features[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.astype(object)
        number = col.astype(np.float64) if is_bool_dtype(col) else pd.to_numeric(col, errors="coerce")
        bad = (number.isna() & col.notna()).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"{key}: {where}: column {name!r} is not numeric (row {row + 1}: {col.iloc[row]!r}); "
                "features must be numbers: encode it, or drop the column"
            )
        columns.append(number.to_numpy(dtype=np.float64, na_value=np.nan))
    X = np.column_stack(columns)
    names = [str(n) for n in features.columns]
    _check_finite(X, names, key, where)
    codes, classes = _labels(frame[label], label, where)
    return Table(X, codes, {"rows": len(codes), "label": label, "features": names, "classes": classes})


def _check_finite(X: np.ndarray, names: list[str], key: str, where: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise ConfigError(
            f"{key}: {where}: feature values missing, NaN or infinite: {int(bad.sum())} (first: column "
            f"{names[col]!r}, row {row + 1}: {X[row, col]}); fill or drop them"
        )


def _labels(values, label: str, where: str) -> tuple[np.ndarray, list]:
    """Codes 0..k-1 of the sorted classes, and the classes (numbers or names) for the sidecar."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    missing = values.isna().to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise ConfigError(
            f"data.label: {where}: rows without a label in {label!r}: {int(missing.sum())} (first: row {row + 1}); "
            "fill or drop them"
        )
    if is_numeric_dtype(values) or is_bool_dtype(values):
        v = values.to_numpy(dtype=np.float64)
        whole = np.isfinite(v) & (v == np.round(v))
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise ConfigError(
                f"data.label: {where}: {label!r} holds numbers that are not whole (row {row + 1}: {v[row]:g}); "
                "labels name classes (integers or names): gradlab classifies, it does not regress"
            )
        classes, codes = np.unique(v.astype(np.int64), return_inverse=True)
        shown: list = [int(c) for c in classes]
    else:
        classes, codes = np.unique(values.astype(str).to_numpy(dtype=str), return_inverse=True)
        shown = [str(c) for c in classes]
    if len(classes) < 2:
        raise ConfigError(
            f"data.label: {where}: {label!r} has one class only ({shown[0]!r}); a classifier needs at least 2"
        )
    return codes.astype(np.int64), shown


def at_most(table: Table, n_samples: int | None, seed: int) -> Table:
    """At most `n_samples` rows: a stratified sample drawn with `seed` (in the file's order) when there are more."""
    n = len(table.y)
    if n_samples is None or n_samples >= n:
        return table
    from sklearn.model_selection import train_test_split

    try:
        keep, _ = train_test_split(np.arange(n), train_size=n_samples, stratify=table.y, random_state=seed)
    except ValueError as e:
        raise ConfigError(
            f"data.n_samples: a stratified sample of {n_samples} of the {n} rows is impossible ({_one_line(e)}); "
            "allowed: more rows, or null for all of them"
        ) from None
    keep = np.sort(keep)
    return Table(table.X[keep], table.y[keep], dict(table.info, sampled_rows=int(n_samples)))


def smallest_class(y: np.ndarray, classes: list | None) -> str:
    """ "the smallest class, 'b', has 2 rows": what a split too small to hold every class in each part lacks."""
    counts = np.bincount(y)
    k = int(np.argmin(counts))
    name = classes[k] if classes and k < len(classes) else k
    return f"the smallest class, {name!r}, has {int(counts[k])} rows"


# --- OpenML ----------------------------------------------------------------------------------------------------


def fetch_openml(dataset: str, version: int | str = "active", label: str | None = None, data_home=None) -> Table:
    """An OpenML data set by name through scikit-learn, cached under `data_home`/openml (default data/)."""
    from urllib.error import HTTPError, URLError

    from sklearn.datasets import fetch_openml as sk_fetch_openml

    home = Path(data_home) if data_home is not None else DATA_HOME
    _, where = describe({"name": "openml", "dataset": dataset, "version": version})
    caught: list[warnings.WarningMessage] = []
    try:
        with _socket_timeout(FETCH_TIMEOUT), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            bunch = sk_fetch_openml(
                dataset,
                version=version,
                data_home=str(home),
                target_column=label if label is not None else "default-target",
                as_frame="auto",
                n_retries=1,
                delay=FETCH_RETRY_DELAY,
            )
    except HTTPError as e:
        if e.code == 412 or e.code == 404:
            raise ConfigError(f"data.dataset: {where}: OpenML has no such data set ({_one_line(e)})") from None
        raise _unreachable(dataset, home, e) from None
    except (URLError, TimeoutError, ConnectionError) as e:
        raise _unreachable(dataset, home, e) from None
    except KeyError as e:  # a target column that does not exist
        raise ConfigError(f"data.label: {where} has no column {label!r} ({_one_line(e)})") from None
    except ValueError as e:  # scikit-learn's OpenMLError (no such name or version) is a ValueError
        raise ConfigError(f"data.dataset: {where}: {_one_line(e)}") from None
    finally:
        for w in caught:  # the retry notices go; what OpenML says of the data set (inactive, ...) is kept
            if "network error" not in str(w.message):
                log.warning("%s: %s", where, " ".join(str(w.message).split()))
    targets = list(bunch.target_names or [])
    if len(targets) != 1:
        raise ConfigError(
            f"data.label: {where} has {len(targets)} default target columns ({', '.join(targets) or 'none'}); "
            "set data.label to the column that holds the classes"
        )
    frame = bunch.frame
    if frame is None:  # a sparse data set: scikit-learn returns arrays
        import pandas as pd

        data = bunch.data.toarray() if hasattr(bunch.data, "toarray") else np.asarray(bunch.data)
        frame = pd.DataFrame(data, columns=list(bunch.feature_names))
        frame[targets[0]] = np.asarray(bunch.target)
    table = _from_frame(frame, targets[0], "data.dataset", where)
    details = bunch.details or {}
    table.info = {
        "openml": {
            "name": details.get("name", dataset),
            "id": details.get("id"),
            "version": details.get("version"),
            "url": bunch.get("url"),
        },
        **table.info,
    }
    return table


def _unreachable(dataset: str, home: Path, e: BaseException) -> ConfigError:
    return ConfigError(
        f"data.dataset: could not fetch OpenML data set {dataset!r} ({_one_line(e)}), and {home / 'openml'} "
        "does not hold it; without network, save it as a CSV with a label column and run with "
        "data=file data.path=<that file> data.label=<its label column>"
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """fetch_openml opens URLs without a timeout: a network that drops packets would hang it for minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _names(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
