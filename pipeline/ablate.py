"""python -m pipeline.ablate: regularizers x strengths x optimizers, as the `regularization` study.

The grid comes from the `ablate` config group (ablate.optimizers, ablate.penalties, ablate.strengths,
ablate.weight_decay); study.size and study.n_jobs work as for any study; the report is
reports/regularization/.
"""

from __future__ import annotations

from omegaconf import DictConfig, open_dict

from pipeline import study
from pipeline.engine import OPTIMIZERS, REGULARIZERS
from pipeline.harness.cli import stage_main
from pipeline.harness.validate import ConfigError
from pipeline.studies import grid

DECOUPLED = {"adam": "adamw"}  # the optimizer whose weight decay is the decoupled kind


def cases(ablate) -> list[dict]:
    """One baseline per optimizer, then each penalty and (optionally) weight decay over the strengths."""
    for opt in ablate.optimizers:
        if opt not in OPTIMIZERS:
            raise ConfigError(f"ablate.optimizers: got {opt!r}; allowed: {', '.join(OPTIMIZERS)}")
    for pen in ablate.penalties:
        if pen not in REGULARIZERS:
            raise ConfigError(f"ablate.penalties: got {pen!r}; allowed: {', '.join(REGULARIZERS)}")
    if not ablate.strengths or not all(isinstance(s, (int, float)) and s > 0 for s in ablate.strengths):
        raise ConfigError(f"ablate.strengths: got {list(ablate.strengths)}; allowed: a list of numbers > 0")
    strengths = ",".join(str(s) for s in ablate.strengths)
    out = []
    for opt in ablate.optimizers:
        out.append({"optimizer": opt, "regularizer": "none"})
        out += [
            {"optimizer": opt, "regularizer": pen, "grid": {"regularizer.strength": strengths}}
            for pen in ablate.penalties
        ]
        if ablate.weight_decay:
            out.append({"optimizer": DECOUPLED.get(opt, opt), "grid": {"optimizer.weight_decay": strengths}})
    return out


def run(cfg: DictConfig) -> dict:
    """Run the ablation grid through the study runner (resumable, parallel, reported)."""
    with open_dict(cfg):
        if cfg.get("study") is None:  # composed from params.yaml (DVC): the study itself comes from conf/
            cfg.study = grid.compose_config(["study=regularization"]).study
        cfg.study.cases = cases(cfg.ablate)
        cfg.study.grid = {}
        for size in (cfg.study.get("sizes") or {}).values():  # every size runs the ablate grid
            if size is not None:
                size.pop("cases", None)
    return study.run(cfg, exclude=("ablate",))


main = stage_main(run, study.summary_line, config_name="ablate")

if __name__ == "__main__":
    main()
