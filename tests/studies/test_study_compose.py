"""The study's fast composition (one Hydra compose per set of group choices, values set on copies) gives
exactly the configs, and hashes, of composing every job from scratch; and Hydra's errors when it can't."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipeline.studies import STUDIES, grid
from tests.helpers import config


def composed_from_scratch(monkeypatch, cfg):
    with monkeypatch.context() as m:
        m.setattr(grid.Composer, "__call__", lambda self, overrides: grid.compose_config(overrides))
        return grid.expand(cfg)


def same_jobs(fast, slow) -> bool:
    return len(fast) == len(slow) and all(
        a.label == b.label
        and a.hash == b.hash
        and OmegaConf.to_container(a.cfg, resolve=True) == OmegaConf.to_container(b.cfg, resolve=True)
        for a, b in zip(fast, slow)
    )


# normalization in the default suite (group choices, booleans and seeds in 24 jobs); every study in test-all
# (seconds each: composing every one of its jobs from scratch)
FAST = "normalization"


@pytest.mark.parametrize("name", [n if n == FAST else pytest.param(n, marks=pytest.mark.slow) for n in STUDIES])
def test_fast_composition_equals_hydras_for_every_study(name, monkeypatch):
    cfg = config(f"study={name}", "study.size=default", "seed=3", hydra=True)
    assert same_jobs(grid.expand(cfg), composed_from_scratch(monkeypatch, cfg))


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_fast_composition_equals_hydras_at_full_size(name, monkeypatch):
    cfg = config(f"study={name}", "study.size=full", hydra=True)
    assert same_jobs(grid.expand(cfg), composed_from_scratch(monkeypatch, cfg))


def test_group_choices_and_values_are_told_apart():
    choice = grid.Composer._is_group_choice
    assert choice("init=normal") and choice("optimizer=adam") and choice("hydra/launcher=joblib")
    assert not choice("seed=1") and not choice("model.depth=8") and not choice("+study.reports_dir=x")


def test_a_key_that_does_not_exist_gets_hydras_own_error():
    composer = grid.Composer()
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.depht'"):
        composer(["study=depth", "model.depht=3"])
    assert composer(["study=depth", "model.depth=3"]).model.depth == 3
