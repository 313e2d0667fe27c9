"""DVC: pretrain -> finetune with the weights file between them; a pretrain parameter reruns those two only."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.harness.paths import ROOT
from tests.helpers import DVC, git_dvc_init, must, tiny_project
from tests.test_dvc_deps import stages

WEIGHTS = "models/pretrained/weights.npz"


def affected_by_pretrain(spec: dict) -> set[str]:
    """Stages that read a `pretrain` param or depend on pretrain's outputs (directly or through another)."""
    hit = {name for name, s in spec.items() if "pretrain" in (s.get("params") or [])}
    while True:
        outs = {o for name in hit for o in spec[name].get("outs", [])}
        more = {
            name for name, s in spec.items() if any(d in outs or d.startswith("models/") for d in s.get("deps", []))
        }
        if more <= hit:
            return hit
        hit |= more


def test_only_pretrain_and_finetune_depend_on_pretraining():
    spec = stages()
    assert affected_by_pretrain(spec) == {"pretrain", "finetune"}
    pre, fine = spec["pretrain"], spec["finetune"]
    assert WEIGHTS in pre["outs"] and WEIGHTS in fine["deps"]
    assert f"init.source={WEIGHTS}" in fine["cmd"] and "+init=pretrained" in fine["cmd"]
    # finetune's params: what it trains with, and everything that decides its starting weights
    assert set(pre["params"]) <= set(fine["params"])
    assert set(spec["train"]["params"]) - {"init"} <= set(fine["params"])
    assert "pretrain" not in spec["train"]["params"]


def tiny_repo(repo: Path) -> None:
    """A git + DVC repository with the project's code and its real prepare/train/pretrain/finetune stages, at
    tiny sizes (xor, 2 epochs, no MLflow)."""
    tiny_project(repo)
    (repo / "conf" / "pretrain" / "default.yaml").write_text(
        (ROOT / "conf" / "pretrain" / "default.yaml")
        .read_text()
        .replace("epochs: 10", "epochs: 1")
        .replace("lr: 0.1", "lr: 0.01")  # xor's 2 inputs and 64 ReLU units: 0.1 diverges
    )
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    keep = {name: spec[name] for name in ("prepare", "train", "pretrain", "finetune")}
    for stage in keep.values():
        stage["cmd"] = stage["cmd"].replace("python -m", f"{sys.executable} -m")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": keep}, sort_keys=False))
    (repo / ".gitignore").write_text("/data/\n/reports/\n/models/\n/outputs/\n__pycache__/\n")
    git_dvc_init(repo)


def changed_stages(repo: Path) -> set[str]:
    return set(json.loads(must([str(DVC), "status", "--json"], repo) or "{}"))


@pytest.mark.slow
@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_a_pretrain_parameter_reruns_pretrain_and_finetune_and_nothing_else(tmp_path):
    repo = tmp_path / "repo"
    tiny_repo(repo)
    out = must([str(DVC), "repro"], repo)
    for name in ("prepare", "train", "pretrain", "finetune"):
        assert f"Running stage '{name}'" in out
    meta = json.loads((repo / "models" / "pretrained" / "weights.json").read_text())
    assert meta["pretrain"]["epochs"] == 1 and meta["data"]["config"]["name"] == "xor"
    assert json.loads((repo / "reports" / "finetune_run" / "metrics.json").read_text())["test/acc"] >= 0
    must(["git", "add", "-A"], repo)
    must(["git", "commit", "-qm", "tiny pipeline"], repo)
    assert changed_stages(repo) == set()

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["pretrain"]["epochs"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert changed_stages(repo) == {"pretrain", "finetune"}
    out = must([str(DVC), "repro"], repo)
    assert "Running stage 'pretrain'" in out and "Running stage 'finetune'" in out
    assert "Running stage 'train'" not in out and "Running stage 'prepare'" not in out
    assert json.loads((repo / "models" / "pretrained" / "weights.json").read_text())["pretrain"]["epochs"] == 2
    assert changed_stages(repo) == set()
    must(["git", "add", "-A"], repo)
    must(["git", "commit", "-qm", "two pretraining epochs"], repo)

    # dvc exp run -S recomposes params.yaml from conf/ with the override (Hydra composition, .dvc/config)
    out = must([str(DVC), "exp", "run", "-S", "pretrain.epochs=3"], repo)
    assert "Running stage 'pretrain'" in out and "Running stage 'train'" not in out
    assert yaml.safe_load((repo / "params.yaml").read_text())["pretrain"]["epochs"] == 3
    shown = must([str(DVC), "exp", "show", "--csv"], repo)
    assert "pretrain.epochs" in shown and "recon/layer_01" in shown
