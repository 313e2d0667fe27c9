"""Shared test settings: hypothesis runs derandomized so every run sees the same examples."""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "gradlab", derandomize=True, deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("gradlab")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
