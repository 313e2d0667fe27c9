"""Hydra's submitit launcher: a sweep's runs as separate jobs (submitit_local here; SLURM through
hydra/launcher=slurm), still one MLflow parent run with every job a child of it."""

import os
import stat

import pytest
from mlflow import MlflowClient
from omegaconf import OmegaConf

from tests.helpers import cli, config, tmp_store

pytest.importorskip(
    "hydra_plugins.hydra_submitit_launcher",
    reason="the submitit launcher needs the [dist] extra: pip install -e '.[dist]'",
)


@pytest.mark.slow
def test_submitit_local_sweep_groups_its_jobs_under_one_parent(tmp_path):
    store = tmp_store(tmp_path)
    proc = cli(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        "model.activation=relu,tanh",
        "data=moons",
        "model.depth=2",
        "model.width=8",
        "train.epochs=2",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path}/sweep",
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and len(kids) == 2
    assert parent.info.status == "FINISHED" and parent.data.tags["summary"] == "2 FINISHED"
    assert all(k.info.status == "FINISHED" for k in kids)
    assert {k.info.run_name for k in kids} == {"train model.activation=relu", "train model.activation=tanh"}
    assert all("grad_norm/total" in k.data.metrics for k in kids)
    # each run was a submitit job of its own (a process with its job folder and pickled result)
    results = list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    assert f"sweep: 2 runs under parent run {parent.info.run_id}: 2 FINISHED" in proc.stdout


def test_slurm_launcher_config_renders_an_sbatch_script(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes to submitit's SLURM launcher with our defaults, and submitit accepts every
    key: the sbatch script it would submit carries them (a stub `srun` stands in for a SLURM installation)."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = config(
        "hydra/launcher=slurm",
        "hydra.launcher.partition=cpu",
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={tmp_path}",
        hydra=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher.pop("_target_").endswith("SlurmLauncher")
    assert (launcher["cpus_per_task"], launcher["mem_gb"], launcher["tasks_per_node"]) == (2, 4, 1)
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")
    # the launcher's own mapping (hydra_submitit_launcher.submitit_launcher.BaseSubmititLauncher.launch)
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=str(tmp_path / "submitit"), slurm_max_num_timeout=launcher.pop("max_num_timeout")
    )
    launcher.pop("submitit_folder")
    launcher["name"] = "train"
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in launcher.items()})
    script = executor._executor._make_submission_file_text("python -m pipeline.train", "uid")
    for line in (
        "--partition=cpu",
        "--time=30",
        "--cpus-per-task=2",
        "--mem=4GB",
        "--ntasks-per-node=1",
        "--job-name=train",
    ):
        assert f"#SBATCH {line}\n" in script
    assert "--gpus" not in script
