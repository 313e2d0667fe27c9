"""Your own data: data=file (a CSV or .npz with a label column) and data=openml, read, checked, split, standardized."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.data import external, prepared
from pipeline.harness.recording import config_hash
from pipeline.harness.validate import ConfigError, validate
from tests.helpers import cli, config, free_port, run_study, tmp_store


def wine_csv(path: Path, label: str = "label", names: bool = False) -> Path:
    """scikit-learn's wine (178 rows, 13 features, 3 classes) as a user's CSV."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.rename(columns={"target": label})
    if names:
        frame[label] = frame[label].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame.to_csv(path, index=False)
    return path


def file_data(path: Path, *overrides: str):
    return config("data=file", f"data.path={path}", *overrides).data


def test_a_csv_is_split_stratified_standardized_and_saved_with_its_source(tmp_path):
    csv = wine_csv(tmp_path / "wine.csv", names=True)
    split, meta = prepared.load_or_build(file_data(csv), tmp_path / "prepared")
    assert meta["reused"] is False
    assert meta["split_sizes"] == {"train": 124, "val": 18, "test": 36}
    assert meta["n_features"] == 13 and meta["n_classes"] == 3
    # the classes are the label column's names, sorted; stratified: every split keeps the class shares
    assert meta["source"]["classes"] == ["barbera", "barolo", "grignolino"]
    assert meta["source"]["label"] == "label" and meta["source"]["features"][0] == "alcohol"
    assert meta["source"]["path"] == str(csv) and meta["source"]["rows"] == 178
    assert meta["class_counts"]["test"] == [10, 12, 14]
    # standardized on train only, float64 on disk
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(split.x_train.std(axis=0), 1, atol=1e-12)
    assert np.abs(split.x_test.mean(axis=0)).max() > 1e-3 and split.x_train.dtype == np.float64
    # the file's content hash is part of the data set's identity, in the sidecar
    sidecar = json.loads(prepared.paths(file_data(csv), tmp_path / "prepared")[1].read_text())
    assert sidecar["config"]["file_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert sidecar["source"]["classes"] == meta["source"]["classes"]
    assert prepared.load_or_build(file_data(csv), tmp_path / "prepared")[1]["reused"] is True


def test_an_edited_file_is_rebuilt_and_its_runs_run_again(tmp_path):
    csv = wine_csv(tmp_path / "wine.csv")
    cfg = config("data=file", f"data.path={csv}")
    before_paths, before_hash = prepared.paths(cfg.data, tmp_path), config_hash(cfg)
    _, meta = prepared.load_or_build(cfg.data, tmp_path)
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace("14.23", "14.5", 1)  # one value changed: a different size, as any real edit
    csv.write_text("\n".join(lines) + "\n")
    assert prepared.paths(cfg.data, tmp_path) != before_paths  # not the old prepared file
    assert config_hash(cfg) != before_hash  # a study runs its jobs again rather than resuming them
    _, again = prepared.load_or_build(cfg.data, tmp_path)
    assert again["reused"] is False and again["config"]["file_sha256"] != meta["config"]["file_sha256"]
    # the built-in sets keep the hash they had (their finished runs still resume)
    assert config_hash(config("data=moons")) == config_hash(config("data=moons"))


def test_an_npz_takes_every_other_array_as_features_in_order(tmp_path):
    rng = np.random.default_rng(0)
    X, extra = rng.normal(size=(90, 3)), rng.normal(size=90)
    y = np.repeat(np.array(["a", "b", "c"]), 30)
    np.savez(tmp_path / "d.npz", X=X, extra=extra, y=y)
    table = external.read_file(str(tmp_path / "d.npz"), label="y")
    np.testing.assert_array_equal(table.X, np.c_[X, extra])
    np.testing.assert_array_equal(table.y, np.repeat([0, 1, 2], 30))
    assert table.info["features"] == ["X[0]", "X[1]", "X[2]", "extra"] and table.info["classes"] == ["a", "b", "c"]
    split, meta = prepared.load_or_build(file_data(tmp_path / "d.npz", "data.label=y"), tmp_path / "prepared")
    assert meta["n_features"] == 4 and meta["n_classes"] == 3 and len(split.y_test) == 18


def test_n_samples_keeps_at_most_that_many_rows_stratified(tmp_path):
    csv = wine_csv(tmp_path / "wine.csv")
    whole = external.read_file(str(csv))
    some = external.at_most(whole, 60, seed=0)
    assert len(some.y) == 60 and some.info["sampled_rows"] == 60
    shares = np.bincount(whole.y) / len(whole.y)
    assert np.all(np.abs(np.bincount(some.y) - shares * 60) <= 1)
    assert external.at_most(whole, None, 0) is whole and external.at_most(whole, 1000, 0) is whole
    _, meta = prepared.load_or_build(file_data(csv, "data.n_samples=100"), tmp_path)
    assert sum(meta["split_sizes"].values()) == 100


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# (file name, content, overrides, the start of the one-line error)
BAD_FILES = [
    ("y.csv", "a,b,y\n1,2,0\n", [], "data.label: {p} has no column 'label' (its header line names a, b, y)"),
    ("nonnum.csv", "a,b,label\n1,red,0\n2,3,1\n", [], "data.path: {p}: column 'b' is not numeric (row 1: 'red')"),
    ("one.csv", "a,label\n1,0\n2,0\n3,0\n", [], "data.label: {p}: 'label' has one class only (0)"),
    (
        "few.csv",
        "a,label\n1,0\n2,1\n4,0\n5,1\n",
        [],
        "data.path: {p}: 4 rows cannot be split into train/val/test with every class in each (the smallest class",
    ),
    (
        "nan.csv",
        "a,b,label\n1,2,0\n2,,1\n4,inf,0\n",
        [],
        "data.path: {p}: feature values missing, NaN or infinite: 2 (first: column 'b', row 2: nan)",
    ),
    (
        "inf.csv",
        "a,label\n1,0\n-inf,1\n",
        [],
        "data.path: {p}: feature values missing, NaN or infinite: 1 (first: column 'a', row 2: -inf)",
    ),
    ("empty.csv", "", [], "data.path: {p} is empty"),
    ("header.csv", "a,label\n", [], "data.path: {p} has a header but no rows"),
    ("only.csv", "label\n0\n1\n", [], "data.path: {p} has no feature column besides 'label'"),
    ("float.csv", "a,label\n1,0.5\n2,1\n", [], "data.label: {p}: 'label' holds numbers that are not whole"),
    ("nolabel.csv", "a,label\n1,0\n2,\n", [], "data.label: {p}: rows without a label in 'label': 1 (first: row 2)"),
    ("index.csv", ",a,label\n0,1,0\n1,2,1\n", [], "data.path: {p}: column 1 has no name in the header line"),
    ("ragged.csv", "a,label\n1,0\n2,1,3\n", [], "data.path: {p} is not a readable CSV"),
    ("junk.npz", "not a zip", [], "data.path: {p} is not an .npz"),
]


@pytest.mark.parametrize("name,text,overrides,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_each_bad_file_is_one_line_naming_the_key(tmp_path, name, text, overrides, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(ConfigError) as e:
        prepared.load_or_build(file_data(path, *overrides), tmp_path / "prepared")
    assert str(e.value).startswith(message.format(p=path)), str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "prepared").exists()  # nothing half-written


def test_bad_npz_arrays_are_one_line_each(tmp_path):
    X, y = np.zeros((6, 2)), np.array([0, 1] * 3)
    cases = {
        "nolabel": ({"X": X, "y": y}, "data.label: {p} has no array 'label' (its arrays: X, y)"),
        "objects": ({"X": X, "label": np.array([object()] * 6)}, "data.path: {p}: array 'label' holds Python objects"),
        "short": ({"X": X[:5], "label": y}, "data.path: {p}: array 'X' has 5 rows, the labels 6"),
        "cube": ({"X": X.reshape(6, 2, 1), "label": y}, "data.path: {p}: array 'X' has shape (6, 2, 1)"),
        "text": ({"X": X.astype(str), "label": y}, "data.path: {p}: array 'X' is not numeric (dtype <U32)"),
        "labels2d": ({"X": X, "label": np.c_[y, y]}, "data.label: {p}: array 'label' has shape (6, 2)"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays, allow_pickle=True) if name == "objects" else np.savez(path, **arrays)
        with pytest.raises(ConfigError) as e:
            external.read_file(str(path))
        assert str(e.value).startswith(message.format(p=path)), str(e.value)


def test_categorical_features_are_refused_naming_the_column():
    import pandas as pd

    frame = pd.DataFrame({"age": [30, 40], "work": pd.Categorical(["Private", "Gov"]), "class": ["<=50K", ">50K"]})
    with pytest.raises(ConfigError, match=r"^data.dataset: OpenML 'adult' \(version 2\): column 'work' is not numeric"):
        external._from_frame(frame, "class", "data.dataset", "OpenML 'adult' (version 2)")


BAD_KEYS = [
    (["data.path=/nowhere/x.csv"], "data.path: got '/nowhere/x.csv'; allowed: the path of an existing .csv or .npz"),
    (["data.path=notes.txt"], "data.path: got 'notes.txt'; allowed: the path of an existing .csv or .npz file (a name"),
    ([], "data.path: got null; allowed: the path of an existing .csv or .npz file"),
    (["data.path=README.md", "data.label=null"], "data.path: got 'README.md'"),
]


@pytest.mark.parametrize("overrides,message", BAD_KEYS)
def test_bad_file_keys_are_refused_before_any_work(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(config("data=file", *overrides))
    assert str(e.value).startswith(message), str(e.value)


def test_bad_openml_keys_and_a_file_without_label_are_refused(tmp_path):
    from omegaconf import OmegaConf

    csv = wine_csv(tmp_path / "wine.csv")
    openml, file = (OmegaConf.to_container(config(f"data={name}")) for name in ("openml", "file"))
    for base, values, message in [
        (openml, {}, "data.dataset: got null; allowed: the name of an OpenML data set"),
        (openml, {"dataset": "iris", "version": 0}, "data.version: got 0; allowed: active, or an integer >= 1"),
        (
            openml,
            {"name": "excel", "dataset": "iris"},
            "data.name: got 'excel'; allowed: one of digits, .*, file, openml",
        ),
        (file, {"path": str(csv), "label": None}, "data.label: got null; allowed: the name of the label column"),
    ]:
        with pytest.raises(ConfigError, match="^" + message):
            validate(OmegaConf.merge(base, {"data": values}))
    validate(OmegaConf.merge(openml, {"data": {"dataset": "iris", "version": 1}}))
    validate(OmegaConf.merge(file, {"data": {"path": str(csv), "label": "x"}}))


def test_cli_on_a_bad_file_exits_2_with_one_line_and_no_run(tmp_path):
    path = _write(tmp_path, "one.csv", "a,label\n1,0\n2,0\n")
    proc = cli("train", "data=file", f"data.path={path}", f"tracking.uri={tmp_store(tmp_path)}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: data.label: {path}: 'label' has one class only (0); a classifier needs at least 2\n"
    assert not (tmp_path / "mlruns").exists()


# --- studies that choose their data set let the user's through ----------------------------------------------


@pytest.mark.parametrize("study", ["dead_relu", "normalization", "optimizers", "regularization"])
def test_a_study_that_picks_its_data_set_runs_on_the_users_file(tmp_path, study):
    from pipeline.studies.grid import expand

    csv = wine_csv(tmp_path / "wine.csv")
    cfg = config(f"study={study}", "study.size=smoke", "data=file", f"data.path={csv}", hydra=True)
    jobs = expand(cfg)
    assert jobs and {j.cfg.data.name for j in jobs} == {"file"}
    assert {j.cfg.data.path for j in jobs} == {str(csv)}
    if study == "regularization":  # its data block still applies: at most 2000 rows, its split shares
        assert (jobs[0].cfg.data.n_samples, jobs[0].cfg.data.test_size, jobs[0].cfg.data.val_size) == (2000, 0.45, 0.4)


# --- OpenML: through scikit-learn's fetch_openml, cached under data/openml/ ----------------------------------


@pytest.fixture
def refused(monkeypatch):
    """Every http(s) request goes to a local port nothing listens on: a network that refuses, here and anywhere."""
    port = free_port()
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    urllib.request.install_opener(None)  # urlopen's opener reads the proxies when it is built: build it anew
    yield
    urllib.request.install_opener(None)


def _openml_reachable() -> bool:
    try:
        socket.getaddrinfo("www.openml.org", 443)
    except OSError:
        return False
    return True


def test_openml_offline_is_one_line_saying_to_use_a_file_for_real(tmp_path, monkeypatch):
    """No proxy, no mock: this machine cannot reach openml.org, and the fetch says so in one line, quickly."""
    monkeypatch.setattr(external, "FETCH_RETRY_DELAY", 0.01)
    if _openml_reachable():
        pytest.skip("this machine resolves openml.org: the offline path is tested through a refusing proxy below")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        external.fetch_openml("iris", data_home=tmp_path)
    message = str(e.value)
    assert message.startswith("data.dataset: could not fetch OpenML data set 'iris' (URLError")
    assert f"{tmp_path / 'openml'} does not hold it" in message and "data=file data.path=" in message
    assert "\n" not in message and time.perf_counter() - t0 < 20


@pytest.mark.slow
def test_openml_unreachable_cli_exits_2_with_one_line_and_no_run(tmp_path, refused):
    proc = cli(
        "train",
        "data=openml",
        "data.dataset=gradlab_never_cached",
        f"tracking.uri={tmp_store(tmp_path)}",
        env=dict(os.environ),
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: data.dataset: could not fetch OpenML data set 'gradlab_never_cached' (")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "data=file data.path=" in proc.stderr and not (tmp_path / "mlruns").exists()


def openml_cache(home: Path) -> Path:
    """data_home/openml laid out as fetch_openml caches iris (OpenML id 61), from scikit-learn's own test files."""
    try:
        import sklearn.datasets.tests.data.openml as shipped
    except ImportError:
        pytest.skip("this scikit-learn ships without its OpenML test responses")
    src = Path(shipped.__file__).parent / "id_61"
    cache = home / "openml" / "openml.org"
    for name, path in {
        "api-v1-jdl-dn-iris-l-2-dv-1.json.gz": "api/v1/json/data/list/data_name/iris/limit/2/data_version/1.gz",
        "api-v1-jd-61.json.gz": "api/v1/json/data/61.gz",
        "api-v1-jdf-61.json.gz": "api/v1/json/data/features/61.gz",
        "api-v1-jdq-61.json.gz": "api/v1/json/data/qualities/61.gz",
        "data-v1-dl-61.arff.gz": "data/v1/download/61/iris.arff.gz",
    }.items():
        (cache / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, cache / path)
    return home


def test_a_cached_openml_set_loads_without_network(tmp_path, monkeypatch, refused):
    monkeypatch.setattr(external, "FETCH_RETRY_DELAY", 0.01)
    monkeypatch.setattr(external, "DATA_HOME", openml_cache(tmp_path / "data"))
    data = config("data=openml", "data.dataset=iris", "data.version=1").data
    split, meta = prepared.load_or_build(data, tmp_path / "prepared")
    assert meta["n_features"] == 4 and meta["n_classes"] == 3 and meta["split_sizes"]["test"] == 30
    assert meta["source"]["openml"] == {
        "name": "iris",
        "id": "61",
        "version": "1",
        "url": "https://www.openml.org/d/61",
    }
    assert meta["source"]["label"] == "class" and meta["source"]["classes"][0] == "Iris-setosa"
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-12)
    with pytest.raises(ConfigError, match=r"^data.label: OpenML 'iris' \(version 1\) has no column 'colour'"):
        external.fetch_openml("iris", 1, "colour")
    # a version that is not cached needs the network, which refuses
    with pytest.raises(ConfigError, match="^data.dataset: could not fetch OpenML data set 'iris'"):
        external.fetch_openml("iris", 2)


# --- a study end to end on a user's CSV ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_study_runs_on_a_users_csv_with_its_own_parent_and_report(tmp_path):
    from pipeline import tracking

    csv = wine_csv(tmp_path / "wine.csv")
    result = run_study("dead_relu", tmp_path, "data=file", f"data.path={csv}")
    assert result["data"] == "wine.csv" and result["failed"] == 0 and result["ran"] == result["runs"]
    assert result["report"] == str(tmp_path / "reports" / "dead_relu-wine.csv" / "summary.md")
    parent = tracking.client(tmp_store(tmp_path)).get_run(result["parent_run_id"])
    assert parent.data.tags["data"] == "wine.csv" and parent.info.run_name == "study dead_relu (smoke, wine.csv)"
    # the same study on its own data set is another parent run; on the same file again it resumes
    assert run_study("dead_relu", tmp_path, "data=file", f"data.path={csv}")["skipped"] == result["runs"]
    own = run_study("dead_relu", tmp_path)
    assert own["parent_run_id"] != result["parent_run_id"] and own["data"] is None
    # an edited file runs the jobs again under the same parent
    csv.write_text(csv.read_text().replace("14.23", "14.5", 1))
    edited = run_study("dead_relu", tmp_path, "data=file", f"data.path={csv}")
    assert edited["parent_run_id"] == result["parent_run_id"] and edited["ran"] == edited["runs"]
