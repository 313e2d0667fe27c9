"""Which code a run ran: a hash of the source of every gradlab module the job stages import.

A study resumes a job only when an earlier child has the same config hash *and* the same code version: a
changed engine, probe or diagnosis rule must not leave stale results (or stale `verdict` labels) counted as
done. The modules are found by reading imports (ast), the way tests/test_dvc_deps.py derives DVC's deps.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from pipeline.harness.paths import ROOT

# what a study's worker runs (harness/dispatch.py: JOB_STAGES; a finetune job imports pretrain by name)
JOB_MODULES = ("pipeline.train", "pipeline.init", "pipeline.harness.finetune", "pipeline.pretrain")


def module_file(name: str) -> Path | None:
    """pipeline.x.y -> its file (module or package __init__), None outside the project."""
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_files(path: Path) -> set[Path]:
    """The gradlab files `path` imports anywhere in its body (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "pipeline":
                continue
            for i in range(1, len(parts) + 1):  # a package's __init__ runs on the way down
                if (f := module_file(".".join(parts[:i]))) is not None:
                    found.add(f)
    return found


def closure(*starts: Path) -> set[Path]:
    """Every gradlab file reachable by imports from `starts`."""
    seen: set[Path] = set()
    todo = list(starts)
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(imported_files(path))
    return seen


@functools.cache
def code_version() -> str:
    """16 hex digits over the relative path and source of every module a job imports (same code, same hash)."""
    starts = [f for f in (module_file(m) for m in JOB_MODULES) if f is not None]
    digest = hashlib.sha256()
    for path in sorted(closure(*starts)):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]
