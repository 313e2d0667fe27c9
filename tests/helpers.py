"""Shared test helpers: compose the project's config, run a stage as a user would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hydra import compose, initialize_config_dir

from pipeline.harness.paths import CONF_DIR, ROOT

# a tanh RNN on a short adding problem, trained in a second or two with its probes (and per-run figures)
TINY_RNN = (
    "model=rnn",
    "data=adding",
    "data.seq_len=12",
    "data.n_samples=300",
    "train.epochs=2",
    "probes.every=5",
    "probes.histograms=false",
)


def config(*overrides: str, name: str = "config", hydra: bool = False):
    """The composed config; `hydra=True` keeps Hydra's node (with the overrides, as studies need)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=hydra)


def cli(module: str, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """python -m pipeline.<module> args..., from the project root, output captured (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def tmp_store(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def run_study(name: str, tmp_path, *overrides: str, size: str = "smoke"):
    """Run a study against a temporary MLflow store, writing its report under tmp_path/reports."""
    from pipeline import study

    cfg = config(
        f"study={name}",
        f"study.size={size}",
        f"tracking.uri={tmp_store(tmp_path)}",
        f"+study.reports_dir={tmp_path / 'reports'}",
        *overrides,
        hydra=True,
    )
    return study.run(cfg)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Whether GET url returns 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM to a server's process group (make, mlflow, uvicorn), SIGKILL whatever outlives `grace` s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so the group can empty
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


@contextlib.contextmanager
def serving(cmd: list[str], ready_url: str, log: Path, timeout: float = 90, grace: float = 15, **popen):
    """Run a server command in its own process group until `ready_url` answers; always stop the group
    (`grace` seconds after SIGTERM before SIGKILL)."""
    import pytest

    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **popen
        )
    try:
        deadline = time.monotonic() + timeout
        while not answers(ready_url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`{' '.join(cmd)}` did not answer on {ready_url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield proc
    finally:
        stop_group(proc, grace)


DVC = Path(sys.executable).parent / "dvc"


def must(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """Run a command that must succeed; its output."""
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def tiny_project(repo: Path) -> None:
    """The project's conf/ and pipeline/ copied into `repo`, its default config made tiny: two epochs on
    xor, no MLflow, no probes."""
    shutil.copytree(ROOT / "conf", repo / "conf")
    shutil.copytree(ROOT / "pipeline", repo / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "conf" / "config.yaml").write_text(
        (ROOT / "conf" / "config.yaml")
        .read_text()
        .replace("- data: digits", "- data: xor")
        .replace("- tracking: local", "- tracking: 'off'")
        .replace("- probes: default", "- probes: 'off'")
    )  # quoted: YAML reads off as false
    (repo / "conf" / "train" / "default.yaml").write_text(
        (ROOT / "conf" / "train" / "default.yaml").read_text().replace("epochs: 10", "epochs: 2")
    )


def git_dvc_init(repo: Path) -> None:
    """`repo` as a git + DVC repository with the project's DVC config (no plots section), and params.yaml."""
    must(["git", "init", "-q"], repo)
    must(["git", "config", "user.email", "t@example.com"], repo)
    must(["git", "config", "user.name", "t"], repo)
    must([str(DVC), "init", "-q"], repo)
    (repo / ".dvc" / "config").write_text((ROOT / ".dvc" / "config").read_text().split("[plots]")[0])
    must([sys.executable, "-m", "pipeline.params"], repo)
