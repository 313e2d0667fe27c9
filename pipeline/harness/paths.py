"""Where the project's folders are, as absolute paths (Hydra and DVC change the working directory)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"


def project_root(root: Path = ROOT) -> Path:
    """The real project when this code runs in a DVC experiment's temporary copy (.dvc/tmp/exps/...).

    Data and reports belong to the copy (DVC collects them from there); MLflow runs belong to the
    project's own store, which the copy must not shadow.
    """
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


TRACKING_ROOT = project_root()
