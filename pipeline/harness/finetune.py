"""A study job that pretrains then fine-tunes (study.stage: finetune): `pipeline.pretrain`, then `pipeline.train`
from its weights, in one worker.

With `pretrain.epochs` >= 1 the pretrain stage trains the hidden layers of `model.*` (started from `init.*`) on
every training input and logs its run; the train stage then starts from them (`init=pretrained`, `init.source` =
that run's id, or its weights folder with tracking off) on the labeled part (`data.n_labeled`) and is the job's
run, tagged `init_source_run`. With `pretrain.epochs: 0` pretraining would leave the layers as drawn, so there is
no pretrain run: the train run starts from `init.*`, the same net from the same draws (the random-init control;
batch norm and residual nets, which pretraining does not stack, run this way). Either way the job's run also
holds `start/<probe>/layer_XX` at step 0 (harness/start.py: the gradient each layer gets before the first update),
is tagged `stage=finetune`, and its `config_hash` covers `pretrain.*` (`recording.config_hash(cfg, "finetune")`):
the identity the study resumes by. The pretrain run, a child of the same parent named `<job> pretrain`, is no
job of the study (its stage is `pretrain`). The stages are imported by name, as `dispatch` runs any job: the
harness does not import the stages above it.
"""

from __future__ import annotations

import copy
import importlib
import tempfile

from omegaconf import DictConfig, open_dict

from pipeline.harness.build import build_trainer, load_data
from pipeline.harness.recording import config_hash
from pipeline.harness.start import start_profile

STAGE = "finetune"


def pretrain_config(cfg: DictConfig, folder: str) -> DictConfig:
    """The pretrain stage's config: the job's, its run named `<job> pretrain`; exported to `folder` when untracked."""
    pre = copy.deepcopy(cfg)
    with open_dict(pre):
        pre.export = None if cfg.tracking.enabled else folder
        pre.tracking.run_name = f"{cfg.tracking.get('run_name') or STAGE} pretrain"
    return pre


def finetune_config(cfg: DictConfig, source: str) -> DictConfig:
    """The train stage's config: the job's, its hidden layers from `source` (the output layer drawn as `init.*`
    draws it: init.output null = the scheme the weights' meta names)."""
    tuned = copy.deepcopy(cfg)
    with open_dict(tuned):
        tuned.init = {"name": "pretrained", "source": source, "output": None}
    return tuned


def start_of(cfg: DictConfig) -> dict[str, float]:
    """`start/...` of the net `train` will build from `cfg` (a twin from the same draws: batch norm's running
    statistics must not move before training)."""
    data = load_data(cfg)
    return start_profile(cfg, build_trainer(cfg, data).net, data)


def run(cfg: DictConfig) -> dict:
    """Pretrain (unless pretrain.epochs is 0), then train from the weights; returns the train stage's result."""
    train = importlib.import_module("pipeline.train")
    tags = {"stage": STAGE, "config_hash": config_hash(cfg, STAGE)}
    if int(cfg.pretrain.epochs) == 0:
        return train.run(cfg, tags, start_of(cfg))
    pretrain = importlib.import_module("pipeline.pretrain")
    with tempfile.TemporaryDirectory(prefix="gradlab-finetune-") as folder:
        result = pretrain.run(pretrain_config(cfg, folder))
        tuned = finetune_config(cfg, result["run_id"] or folder)
        return train.run(tuned, tags, start_of(tuned))
