"""The layering of docs/ARCHITECTURE.md, held against the code: each package imports only what lies below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipeline.harness.paths import ROOT

PIPELINE = ROOT / "pipeline"
STAGES = {p.stem for p in PIPELINE.glob("*.py") if p.stem != "__init__"}
# package -> the packages (or single modules) its modules may import; every package may import itself
ALLOWED = {
    "engine": set(),
    "probes": {"engine"},
    "analysis": {"engine"},
    "data": {"harness.paths", "harness.validate"},  # where files go, and the one-line config error
    "tracking": {"harness.paths"},
    "harness": {"engine", "probes", "analysis", "data", "tracking"},
    "studies": {"engine", "probes", "analysis", "data", "tracking", "harness"},
}


def pipeline_imports(path: Path) -> set[str]:
    """Dotted names below `pipeline.` that a module imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n.removeprefix("pipeline.") for n in found if n.startswith("pipeline.")}


def allowed(package: str, name: str) -> bool:
    if name == package or name.startswith(package + "."):
        return True
    return any(name == a or name.startswith(a + ".") for a in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = []
    for path in sorted((PIPELINE / package).rglob("*.py")):
        for name in sorted(pipeline_imports(path)):
            # `from pipeline.harness import plots` names the package and the module: judge the module
            if name in ALLOWED or name == "harness" and any(n.startswith("harness.") for n in pipeline_imports(path)):
                continue
            if not allowed(package, name):
                wrong.append(f"{path.relative_to(ROOT)} imports pipeline.{name}")
    assert not wrong, "\n".join(wrong)


def test_no_package_imports_a_stage():
    wrong = [
        f"{path.relative_to(ROOT)} imports pipeline.{name}"
        for package in ALLOWED
        for path in (PIPELINE / package).rglob("*.py")
        for name in pipeline_imports(path)
        if name.split(".")[0] in STAGES
    ]
    assert not wrong, "\n".join(wrong)


def test_stages_do_not_import_each_other_but_ablate_runs_the_study():
    wrong = [
        f"{stage}.py imports pipeline.{name}"
        for stage in STAGES
        for name in pipeline_imports(PIPELINE / f"{stage}.py")
        if name.split(".")[0] in STAGES and (stage, name) != ("ablate", "study")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_top_of_pipeline_holds_the_stages_and_at_most_ten_modules():
    assert len(STAGES) <= 10, sorted(STAGES)
    assert STAGES >= {"prepare", "init", "train", "study", "ablate", "report", "gradcheck", "params"}


def test_the_scan_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline import train\n    from pipeline.harness.loop import Loop\n")
    names = pipeline_imports(bad)
    assert "train" in names and not allowed("engine", "harness.loop") and allowed("harness", "harness.loop")
