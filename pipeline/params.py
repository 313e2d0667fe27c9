"""python -m pipeline.params: write params.yaml, the config composed from conf/ (what plain `dvc repro` reads).

`dvc exp run -S key=value` recomposes params.yaml itself (Hydra composition, .dvc/config); this keeps
the committed copy in sync with conf/ for plain `dvc repro`. `--check` only compares, exit 1 on a difference.
"""

from __future__ import annotations

import sys

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.harness.paths import CONF_DIR, ROOT

PARAMS = ROOT / "params.yaml"


def composed() -> dict:
    """conf/config.yaml with its defaults, resolved, as DVC composes it (no hydra node)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        plain = OmegaConf.to_container(compose(config_name="config"), resolve=True)
    assert isinstance(plain, dict)
    return plain


def main(argv: list[str]) -> int:
    params = composed()
    if "--check" in argv:
        current = yaml.safe_load(PARAMS.read_text()) if PARAMS.exists() else None
        if current != params:
            print(
                "params.yaml is out of date with conf/: run `make params` (python -m pipeline.params)", file=sys.stderr
            )
            return 1
        print("params.yaml matches conf/")
        return 0
    PARAMS.write_text(yaml.safe_dump(params, sort_keys=False))
    print(f"wrote {PARAMS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
