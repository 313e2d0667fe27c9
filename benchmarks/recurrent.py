"""The engine's recurrent step (forward, BPTT, SGD update) against PyTorch CPU's nn.RNN and nn.LSTM.

Same shapes, same float32 weights, same batch, same update: the first losses must agree (asserted), then the
step times are measured side by side, interleaved, best of `repeats` (benchmarks/steps.py's `best_seconds`):
CPU time with both on one thread (the ratio), and wall time with each side's own threads.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.steps import TORCH_MISSING, best_seconds
from pipeline.engine import RecurrentNet, Trainer, make_activation, make_initializer, make_loss, make_optimizer
from pipeline.harness.threads import blas_threads_for


@dataclass(frozen=True)
class RecShape:
    """A one-layer recurrent classifier and its batch: (batch, steps, features) -> hidden -> classes."""

    features: int
    hidden: int
    steps: int
    classes: int
    batch: int

    def __str__(self) -> str:
        return f"batch {self.batch}, T {self.steps}, {self.features}-[{self.hidden}]-{self.classes}"


SHAPES = {"small": RecShape(16, 64, 50, 10, 32), "large": RecShape(64, 256, 100, 10, 64)}
QUICK_SHAPES = {"small": RecShape(3, 8, 5, 4, 4), "large": RecShape(4, 16, 7, 4, 8)}
CELLS = ("rnn", "lstm")
# PyTorch keeps the LSTM's gate blocks as i, f, g, o; the engine as i, f, o, g (the three sigmoids side by side)
TORCH_GATE_ORDER = (0, 1, 3, 2)
# the first losses agree to float32 round-off of a 50-step recurrence
LOSS_RTOL = 1e-4


def engine_trainer(cell: str, shape: RecShape, lr: float = 0.01, seed: int = 1) -> Trainer:
    """The engine's float32 tanh RNN or LSTM (orthogonal W_hh) with plain SGD and softmax cross-entropy."""
    net = RecurrentNet(
        shape.features,
        shape.classes,
        shape.hidden,
        cell,
        make_initializer("xavier_uniform"),
        np.random.default_rng(seed),
        np.float32,
        activation=make_activation("tanh") if cell == "rnn" else None,
    )
    return Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", lr=lr, decay_keys=net.weight_keys))


def batch(shape: RecShape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.batch, shape.steps, shape.features)).astype(np.float32)  # (batch, time, features)
    return x, rng.integers(0, shape.classes, shape.batch)


def torch_blocks(w: np.ndarray, cell: str, hidden: int) -> np.ndarray:
    """An engine (rows, G*H) matrix's gate blocks in PyTorch's order, transposed to PyTorch's (G*H, rows)."""
    if cell == "lstm":
        w = np.concatenate([w[..., k * hidden : (k + 1) * hidden] for k in TORCH_GATE_ORDER], axis=-1)
    return np.ascontiguousarray(w.T)


def torch_model(trainer: Trainer, cell: str, lr: float):
    """nn.RNN (tanh) or nn.LSTM + nn.Linear on h_T, from the engine's weights, with torch.optim.SGD.

    PyTorch has two biases (b_ih + b_hh); b_hh is held at zero and out of the gradient, so both do the same sums.
    """
    import torch

    net = trainer.net
    assert isinstance(net, RecurrentNet)
    w_xh, w_hh = net.cell.params["W_xh"], net.cell.params["W_hh"]  # (features, G*H), (H, G*H)
    features, hidden = w_xh.shape[0], net.cell.hidden
    kind = torch.nn.RNN if cell == "rnn" else torch.nn.LSTM
    rnn = kind(features, hidden, batch_first=True)
    head = torch.nn.Linear(hidden, net.output.W.shape[1])
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(torch_blocks(w_xh, cell, hidden)))
        rnn.weight_hh_l0.copy_(torch.from_numpy(torch_blocks(w_hh, cell, hidden)))
        rnn.bias_ih_l0.copy_(torch.from_numpy(torch_blocks(net.cell.params["b"], cell, hidden)))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.from_numpy(net.output.W.T.copy()))  # torch keeps (out, in)
        head.bias.copy_(torch.from_numpy(net.output.params["b"].copy()))
    rnn.bias_hh_l0.requires_grad_(False)
    params = [p for p in (*rnn.parameters(), *head.parameters()) if p.requires_grad]
    return rnn, head, torch.optim.SGD(params, lr=lr), torch.nn.CrossEntropyLoss()


@contextlib.contextmanager
def torch_threads(n: int):
    """PyTorch's intra-op threads set to n inside, restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def recurrent_vs_torch(shapes: dict[str, RecShape], calls: int, repeats: int) -> dict:
    """Engine time per step / PyTorch's, per cell and shape: {"rnn small": {...}, "lstm small": ..., ...}.

    `ratio`: both on one thread, this thread's CPU time: what each does per step, which the other processes on
    a shared machine disturb far less than the wall time. `wall_ratio`: wall time, each side with its own
    threads (the engine with the train stage's BLAS thread policy, PyTorch with its default), at the mercy of
    the machine's load (PyTorch's second thread waits for a busy core). Large shapes take `calls` / 10 calls.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"skipped": TORCH_MISSING}
    return {
        f"{cell} {name}": one_case(cell, shape, calls if name == "small" else max(1, calls // 10), repeats)
        for name, shape in shapes.items()
        for cell in CELLS
    }


def one_case(cell: str, shape: RecShape, calls: int, repeats: int) -> dict:
    """One cell on one shape: the first losses checked equal, then both timings."""
    import torch

    lr = 0.01
    trainer, (x, y) = engine_trainer(cell, shape, lr), batch(shape)
    rnn, head, optimizer, loss_fn = torch_model(trainer, cell, lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step() -> float:
        optimizer.zero_grad(set_to_none=True)
        _, state = rnn(xt)  # h_n (1, batch, H), or (h_n, c_n) for the LSTM
        h_last = (state if isinstance(state, torch.Tensor) else state[0])[0]  # (batch, H)
        loss = loss_fn(head(h_last), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    first = (trainer.step(x, y), torch_step())
    if not np.isclose(first[0], first[1], rtol=LOSS_RTOL, atol=0.0):
        raise AssertionError(f"{cell} {shape}: first losses differ, engine {first[0]} vs torch {first[1]}")
    contenders = {"engine": lambda: trainer.step(x, y), "torch": torch_step}
    net = trainer.net
    wall = best_seconds(
        contenders, calls, repeats, contexts={"engine": lambda: blas_threads_for(net.sizes, shape.batch)}
    )  # the train stage's thread policy
    one_thread = {"engine": lambda: threadpool_limits(1, user_api="blas"), "torch": lambda: torch_threads(1)}
    cpu = best_seconds(contenders, calls, repeats, contexts=one_thread, clock=time.thread_time)
    return {
        "ratio": cpu["engine"] / cpu["torch"],
        "engine_cpu_ms": 1e3 * cpu["engine"],
        "torch_cpu_ms": 1e3 * cpu["torch"],
        "wall_ratio": wall["engine"] / wall["torch"],
        "engine_wall_ms": 1e3 * wall["engine"],
        "torch_wall_ms": 1e3 * wall["torch"],
        "shape": str(shape),
        "first_loss_engine": first[0],
        "first_loss_torch": first[1],
        "torch_threads": torch.get_num_threads(),
    }
