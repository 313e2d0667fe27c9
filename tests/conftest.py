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


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """BLAS on one thread in the test process (commands it starts choose their own): on a loaded 2-core machine
    two OpenBLAS threads wait on each other, and the digits test took 21 s instead of 8."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
