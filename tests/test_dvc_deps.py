"""dvc.yaml's deps cannot go stale: every module a stage imports (transitively) is a dep of that stage,
every study stage depends on its study's YAML and the config groups it composes, and dvc.lock matches the
committed code (`dvc status`: no stage with changed code or params)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.harness.paths import ROOT
from pipeline.harness.provenance import JOB_MODULES, closure, module_file
from pipeline.studies import STUDIES

DVC = Path(sys.executable).parent / "dvc"
# the config groups a study composes from conf/ (study stages do not read params.yaml)
COMPOSED = (
    "conf/config.yaml",
    "conf/data",
    "conf/init",
    "conf/model",
    "conf/optimizer",
    "conf/probes",
    "conf/regularizer",
    "conf/train",
)


def stages() -> dict[str, dict]:
    """Every stage of dvc.yaml, foreach stages expanded (name@item), with ${item} substituted."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        if "foreach" in stage:
            for item in stage["foreach"]:
                text = json.dumps(stage["do"]).replace("${item}", item)
                out[f"{name}@{item}"] = json.loads(text)
        else:
            out[name] = stage
    return out


def study_of(cmd: str) -> str | None:
    if "pipeline.ablate" in cmd:
        return "regularization"
    match = re.search(r"study=(\w+)", cmd)
    return match.group(1) if match else None


def needed(cmd: str) -> set[Path]:
    """The files a stage's command runs: its module's import closure (and, for a study, its study module and
    the stages its workers run)."""
    module = re.search(r"-m (pipeline\.\w+)", cmd).group(1)
    starts = [module_file(module)]
    if (study := study_of(cmd)) is not None:
        starts += [ROOT / "pipeline" / "studies" / f"{study}.py", *(module_file(m) for m in JOB_MODULES)]
    return {p for p in closure(*starts) if not docstring_only(p)}


def docstring_only(path: Path) -> bool:
    """A package __init__ with nothing but a docstring runs no code a stage could depend on."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body
    )


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_module_is_a_dep(name):
    stage = stages()[name]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    missing = sorted(str(p.relative_to(ROOT)) for p in needed(stage["cmd"]) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name} imports but does not depend on: {missing}"


@pytest.mark.parametrize("name", [n for n, s in sorted(stages().items()) if study_of(s["cmd"])])
def test_a_study_stage_depends_on_what_it_composes_and_declares_its_params(name):
    stage = stages()[name]
    study = study_of(stage["cmd"])
    deps = stage.get("deps", [])
    missing = [d for d in COMPOSED if d not in deps]
    assert not missing, f"{name} composes from conf/ but does not depend on {missing}"
    params = stage.get("params", [])
    files = {next(iter(p)) for p in params if isinstance(p, dict)}
    assert f"conf/study/{study}.yaml" in files, f"{name} declares no params of conf/study/{study}.yaml"


def test_every_study_has_a_stage():
    ran = {study_of(s["cmd"]) for s in stages().values()}
    assert set(STUDIES) <= ran, f"studies without a DVC stage: {set(STUDIES) - ran}"


def test_the_import_scan_sees_function_level_imports():
    # render imports the plots inside write(): a study's closure must reach plots.py through it
    render = ROOT / "pipeline" / "studies" / "render.py"
    assert ROOT / "pipeline" / "harness" / "plots.py" in closure(render)


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_dvc_lock_matches_the_committed_code_and_params():
    """dvc status: no stage whose code, config or params changed since dvc.lock was written (make repro).

    Outputs are not in git (no DVC remote here), so missing outs and deps that are other stages' outs are
    not what this checks; code and config are.
    """
    proc = subprocess.run([str(DVC), "status", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stale = {}
    for stage, changes in json.loads(proc.stdout or "{}").items():
        for change in changes if isinstance(changes, list) else []:
            for kind in ("changed deps", "changed params"):
                for path, state in (change.get(kind) or {}).items() if isinstance(change, dict) else []:
                    if path.startswith(("pipeline", "conf", "params.yaml")) or kind == "changed params":
                        stale.setdefault(stage, []).append(f"{path}: {state}")
    assert not stale, f"dvc.lock is older than the code (run `make repro` and commit dvc.lock): {stale}"
