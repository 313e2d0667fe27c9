"""Help that fits the field: each stage's `--help` page, and the list of studies with their claims.

A stage's page is Hydra's app help template, conf/hydra/help/<stage>.yaml (harness/cli.py selects it when
`--help` is asked for). The pages list their config groups and the studies with the resolvers registered here
(`${gradlab.groups:data,model}`, `${gradlab.studies:}`), read from conf/ when the page is shown, so they never
go stale when an option or a study is added.
"""

from __future__ import annotations

import shutil
import textwrap

import yaml
from omegaconf import DictConfig, OmegaConf

from pipeline.harness.paths import CONF_DIR


def options(group: str) -> list[str]:
    """The options of a config group: conf/<group>/*.yaml."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def groups(*names: str, _root_: DictConfig | None = None) -> str:
    """One line per config group: its name, its options, the one in use."""
    choices: dict = {}
    if _root_ is not None:
        found = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
        choices = dict(found) if isinstance(found, DictConfig) else {}
    lines = []
    for name in names:
        now = choices.get(name)
        text = ", ".join(options(name)) + (f"   (now: {now})" if now else "")
        lines += textwrap.wrap(text, 104, initial_indent=f"  {name:<13}", subsequent_indent=" " * 15)
    return "\n".join(lines)


def study_claims(order: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, claim) of every study in conf/study/ (read as YAML: no composing), those named in `order` first."""
    found = {}
    for path in sorted((CONF_DIR / "study").glob("*.yaml")):
        study = (yaml.safe_load(path.read_text()) or {}).get("study") or {}
        found[str(study.get("name", path.stem))] = " ".join(str(study.get("claim", "")).split())
    return [(n, found[n]) for n in order if n in found] + [(n, c) for n, c in found.items() if n not in order]


def studies(width: int | None = None, full: bool = True, order: tuple[str, ...] = ()) -> str:
    """Every study with its claim: wrapped in full, or (full=False) cut to one line each."""
    width = width or min(120, shutil.get_terminal_size((100, 20)).columns)
    rows = study_claims(order)
    pad = max(len(n) for n, _ in rows) + 2
    out = []
    for name, claim in rows:
        if full:
            wrapped = textwrap.wrap(claim, width - pad - 2) or [""]
            out += [f"  {name:<{pad}}{wrapped[0]}"] + [f"  {'':<{pad}}{line}" for line in wrapped[1:]]
        else:
            out.append(f"  {name:<{pad}}{textwrap.shorten(claim, width - pad - 2, placeholder=' ...')}")
    return "\n".join(out)


def study_list(order: tuple[str, ...] = ()) -> str:
    """What `make studies` prints: every study with its claim, then how to run one."""
    return "\n".join(
        [
            f"{len(study_claims())} studies, each a claim that its runs decide check by check:",
            "",
            studies(full=True, order=order),
            "",
            "run one: python -m pipeline.study study=NAME [study.size=smoke|default|full] [study.n_jobs=N]",
            "         (README, Studies: what each measured here; python -m pipeline.study --help: its keys)",
        ]
    )


OmegaConf.register_new_resolver("gradlab.groups", groups, replace=True)
OmegaConf.register_new_resolver("gradlab.studies", lambda: studies(full=False), replace=True)
