"""The networks the engine trains: what the Trainer, the gradient check and the probes accept."""

from __future__ import annotations

from typing import TypeAlias

from pipeline.engine.network import MLP
from pipeline.engine.recurrent import RecurrentNet

Network: TypeAlias = MLP | RecurrentNet
