"""Named random streams derived from the run's seed, independent of process and call order."""

from __future__ import annotations

import numpy as np

# each consumer gets its own stream: adding a probe never shifts the init or the batch order
STREAMS = {"data": 0, "init": 1, "batches": 2, "probe": 3, "gradcheck": 4, "pretrain": 16}


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """The generator of `stream` for `seed` (same pair -> same numbers, in any process)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(STREAMS[stream],)))
