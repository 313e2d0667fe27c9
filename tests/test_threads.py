"""BLAS threads per run: one for small networks, untouched for big ones."""

from threadpoolctl import threadpool_info

from pipeline.harness.threads import SMALL_MATMUL, blas_threads_for, largest_matmul


def blas_threads() -> set[int]:
    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_largest_product_of_an_mlp():
    assert largest_matmul([64, 128, 128, 10], 64) == 64 * 128 * 128
    assert largest_matmul([784, 1024, 1024, 10], 256) == 256 * 1024 * 1024


def test_small_networks_run_on_one_blas_thread_big_ones_keep_theirs():
    before = blas_threads()
    with blas_threads_for([64, 128, 128, 10], 64):
        assert blas_threads() == {1}
    assert blas_threads() == before
    assert largest_matmul([784, 256, 10], 128) > SMALL_MATMUL
    with blas_threads_for([784, 256, 10], 128):
        assert blas_threads() == before


def test_a_networks_sizes_are_what_the_policy_reads():
    import numpy as np

    from pipeline.engine import MLP, make_activation, make_initializer

    net = MLP(64, 10, 2, 128, make_activation("relu"), make_initializer("he_normal"), np.random.default_rng(0))
    assert net.sizes == [64, 128, 128, 10]
