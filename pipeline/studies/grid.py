"""A study's grid: its cases crossed with its swept keys at its size, every job composed and validated."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, read_write

from pipeline.harness.paths import CONF_DIR
from pipeline.harness.recording import config_hash
from pipeline.harness.validate import ConfigError, validate

SIZES = ("smoke", "default", "full")

MAX_NAME = 40  # run names longer than this are cut in MLflow's runs table
# well-known keys: their value after a short prefix in run names (model.depth=20 -> d20, model.activation=tanh -> tanh)
SHORT_KEYS = {
    "model.activation": "",
    "seed": "s",
    "model.depth": "d",
    "model.width": "w",
    "optimizer.lr": "lr",
    "optimizer.weight_decay": "wd",
    "regularizer.strength": "λ",
    "train.batch_size": "B",
    "train.epochs": "ep",
    "train.clip.max_norm": "clipnorm",
    "train.clip.max_value": "clipval",
    "init.std": "std",
    "init.gain": "gain",
    "init.bias": "bias",
    "init.value": "c",
    "data.noise": "noise",
    "data.n_samples": "n",
    "data.n_labeled": "lab",
    "data.seq_len": "T",
    "init.recurrent_gain": "rho",
}
# switches: shown by this word when true, left out when false
SHORT_SWITCHES = {"model.batch_norm": "bn", "model.residual": "res"}


@dataclass
class Job:
    """One point of the grid: its swept values and its composed config."""

    label: str  # every value spelled out: "relu he model.depth=20 seed=1" (the report's tables use it)
    values: dict[str, str]
    cfg: DictConfig
    hash: str
    case: str | None = None  # the name of the study case it belongs to, if the case has one
    name: str = ""  # the short run name, unique in the study: "relu he d20 s1"


def short_value(key: str, value: str) -> str:
    """One key's value as a run name shows it: d20, lr0.3, Bfull, bn (true) / "" (false), sigmoid, he_normal."""
    if key in SHORT_SWITCHES or value in ("true", "false"):
        return SHORT_SWITCHES.get(key, key.rsplit(".", 1)[-1]) if value == "true" else ""
    if key == "train.batch_size" and value == "null":
        return "Bfull"
    if key == "data.n_labeled" and value == "null":  # every label: the usual case, not named
        return ""
    if key in SHORT_KEYS:
        return f"{SHORT_KEYS[key]}{value}"
    if "." not in key or (CONF_DIR / key).is_dir():  # a group choice (init=he_normal) or a top-level word
        return f"no-{key}" if value in ("none", "null") else value
    return f"{key.rsplit('.', 1)[-1]}={value}"  # any other key: its last part spelled out (beta1=0.9)


def short_name(case: str | None, case_values: dict[str, str], swept: dict[str, str], fallback: str) -> str:
    """The run name of one job: the case's name (else its values), then the swept values in short form."""
    parts = [case] if case else [short_value(k, v) for k, v in case_values.items()]
    parts += [short_value(k, v) for k, v in swept.items()]
    return " ".join(p for p in parts if p) or fallback


def _unique_names(jobs: list[Job]) -> None:
    """Cut names to MAX_NAME and make them unique in the study: a clash or a cut gets the config hash's start."""
    count: dict[str, int] = {}
    for job in jobs:
        count[job.name] = count.get(job.name, 0) + 1
    for job in jobs:
        if count[job.name] > 1 or len(job.name) > MAX_NAME:
            job.name = f"{job.name[: MAX_NAME - 8].rstrip()} #{job.hash[:6]}"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose from conf/ inside a Hydra app (the study command) or outside it (tests, other stages)."""
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


class Composer:
    """compose_config for many jobs that differ mostly in plain values (seed=1, model.depth=8).

    Hydra composes once per distinct set of config-group choices (init=normal, optimizer=adam, ...); the
    plain value overrides are then set on a copy with OmegaConf.update, as Hydra itself applies them after
    the defaults list.
    Whatever this cannot do (a key that does not exist, ...) falls back to a full compose, which also
    gives Hydra's own error message. Same configs either way (tested for every study and size).
    """

    def __init__(self):
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._parser = OverridesParser.create()

    @staticmethod
    def _is_group_choice(text: str) -> bool:
        """init=normal, hydra/launcher=joblib: a choice in the defaults list, not a value."""
        key = text.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        return "/" in key or key.startswith("hydra") or (CONF_DIR / key).is_dir()

    def __call__(self, overrides: list[str]) -> DictConfig:
        groups = tuple(o for o in overrides if self._is_group_choice(o))
        values = [o for o in overrides if not self._is_group_choice(o)]
        try:
            base = self._bases.get(groups)
            if base is None:
                base = self._bases[groups] = compose_config(list(groups))
            cfg = copy.deepcopy(base)
            parsed = self._parser.parse_overrides(values)
            if any(o.is_sweep_override() for o in parsed):
                raise ValueError("a sweep is not one job")
            with read_write(cfg):
                for override in parsed:
                    # a plain `key=value` is what Hydra applies after the defaults list with exactly this call
                    # (hydra/_internal/config_loader_impl.py); +, ++, ~ and unknown keys compose afresh below
                    if override.is_add() or override.is_force_add() or override.is_delete() or override.package:
                        raise ValueError("not a plain value override")
                    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
            return cfg
        except Exception:  # noqa: BLE001 -- Hydra decides, and words the error
            return compose_config(overrides)


def split_overrides(mapping) -> tuple[list[str], dict[str, list[str]]]:
    """key -> value pairs into fixed overrides and swept keys with their values (a,b / range() / choice())."""
    fixed, swept = [], {}
    for key, value in (mapping or {}).items():
        text = f"{key}={'null' if value is None else str(value).lower() if isinstance(value, bool) else value}"
        override = OverridesParser.create().parse_override(text)
        if override.is_sweep_override():
            # spelled as on the command line (true, not Python's True), whatever the YAML said
            swept[key] = [
                {"True": "true", "False": "false"}.get(str(v), str(v)) for v in override.sweep_string_iterator()
            ]
        else:
            fixed.append(text)
    return fixed, swept


def _case_overrides(case) -> tuple[str | None, dict[str, str], dict[str, list[str]]]:
    """A case's name, its fixed key -> value overrides, and the grid axes of its own `grid` (if any)."""
    case = dict(case)
    name = case.pop("name", None)
    own_fixed, own_grid = split_overrides(case.pop("grid", None))
    values = {k: "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in case.items()}
    # a one-value axis of the case's grid (optimizer.lr: 0.1) is a sweep of one: the case's value, not dropped
    own_grid.update({text.split("=", 1)[0]: [text.split("=", 1)[1]] for text in own_fixed})
    return name, values, own_grid


def expand(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> list[Job]:
    """Every job of the study at its size, composed and validated before anything runs.

    Jobs are the study's `cases` (explicit override sets: one per cause, cure, scheme...; one empty case
    when it has none; a case may carry its own `grid`) crossed with the product of the study's `grid`
    axes (sweep syntax: a,b,c / range()). A size may replace `cases`, add fixed overrides, and widen,
    narrow, pin or add grid axes (seeds). `exclude`: prefixes of the user's overrides that are not
    config keys of the jobs (another stage's own group).
    """
    study = cfg.study
    size = study.size
    if size not in SIZES:
        raise ConfigError(f"study.size: got {size!r}; allowed: one of {', '.join(SIZES)}")
    sized = dict((study.get("sizes") or {}).get(size) or {})
    cases = sized.pop("cases", None) or study.get("cases") or [{}]
    base_fixed, base_grid = split_overrides(study.get("grid"))
    size_fixed, size_grid = split_overrides(sized)
    grid = {**base_grid, **size_grid}  # a size may narrow or widen an axis, or add one (seeds)
    for override in size_fixed:  # a size's single value for a grid axis pins that axis to it
        key, value = override.split("=", 1)
        if key in grid:
            grid[key] = [value]
    size_fixed = [o for o in size_fixed if o.split("=", 1)[0] not in grid]
    fixed = [o for o in base_fixed if o.split("=")[0] not in grid] + size_fixed
    skip = ("study=", "study.", "hydra", *exclude)
    user = [o for o in user_overrides(cfg) if not o.lstrip("+").startswith(skip)]
    jobs, composer = [], Composer()
    for case in cases:
        case_name, case_values, case_grid = _case_overrides(case)
        axes = {**case_grid, **grid}
        for combo in itertools.product(*axes.values()) if axes else [()]:
            swept = dict(zip(axes, combo))
            values = {**case_values, **swept}
            overrides = [
                f"study={study.name}",
                *fixed,
                *user,
                *(f"{k}={v}" for k, v in values.items()),
                f"study.size={size}",
            ]
            job_cfg = composer(overrides)
            validate(job_cfg)
            parts = [case_name] if case_name else [f"{k}={v}" for k, v in case_values.items()]
            label = " ".join(parts + [f"{k}={v}" for k, v in swept.items()]) or study.name
            name = short_name(case_name, case_values, swept, study.name)
            jobs.append(Job(label, values, job_cfg, config_hash(job_cfg, study.get("stage")), case_name, name))
    _unique_names(jobs)
    return jobs


def user_overrides(cfg: DictConfig) -> list[str]:
    """The overrides `cfg` was composed with (model.width=..., tracking.uri=...), to apply to every job.

    From the command line Hydra keeps them; a config composed with return_hydra_config=True carries them.
    """
    from hydra.core.hydra_config import HydraConfig

    if "hydra" in cfg:
        return list(cfg.hydra.overrides.task)
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
