"""Where the project's folders are, as absolute paths (Hydra and DVC change the working directory)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
