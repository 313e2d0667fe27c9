"""Shared test helpers: compose the project's config, run a stage as a user would."""

from __future__ import annotations

import subprocess
import sys

from hydra import compose, initialize_config_dir

from pipeline.paths import CONF_DIR, ROOT


def config(*overrides: str, name: str = "config", hydra: bool = False):
    """The composed config; `hydra=True` keeps Hydra's node (with the overrides, as studies need)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def cli(module: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """python -m pipeline.<module> args..., from the project root, output captured (not a terminal)."""
    return subprocess.run([sys.executable, "-m", f"pipeline.{module}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def tmp_store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def run_study(name: str, tmp_path, *overrides: str, size: str = "smoke"):
    """Run a study against a temporary MLflow store, writing its report under tmp_path/reports."""
    from pipeline import study

    cfg = config(f"study={name}", f"study.size={size}", f"tracking.uri={tmp_store(tmp_path)}",
                 f"+study.reports_dir={tmp_path / 'reports'}", *overrides, hydra=True)
    return study.run(cfg)
