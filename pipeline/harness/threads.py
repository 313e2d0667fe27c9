"""How many BLAS threads a training run gets: one for small networks, where threads cost more than they give."""

from __future__ import annotations

import contextlib

from threadpoolctl import threadpool_limits

# Below this many multiply-adds per matrix product, OpenBLAS's threads are slower than one thread on
# these machines (64x64x128: 10 us on 1 thread, 17 us on 2; 128x256x256: 145 us on 1, 93 us on 2).
SMALL_MATMUL = 4_000_000


def largest_matmul(sizes: list[int], batch: int) -> int:
    """Multiply-adds of the biggest (batch, fan_in) @ (fan_in, fan_out) product of an MLP."""
    return max(batch * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def blas_threads_for(sizes: list[int], batch: int):
    """A context that keeps BLAS on one thread when every product of the network is small."""
    if largest_matmul(sizes, batch) < SMALL_MATMUL:
        return threadpool_limits(limits=1, user_api="blas")
    return contextlib.nullcontext()
