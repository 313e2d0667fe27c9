"""Time per training step and per epoch: the engine against PyTorch CPU, scikit-learn and a plain matmul.

Every comparison runs in one process with the contenders interleaved, best of `repeats`, so machine
noise hits both alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.engine import MLP, Trainer, make_activation, make_initializer, make_loss, make_optimizer
from pipeline.harness.threads import blas_threads_for

TORCH_MISSING = "PyTorch is not installed: pip install -e '.[bench]' (torch==2.13.0, CPU build)"


@dataclass(frozen=True)
class Shape:
    """An MLP and its batch: in_dim-[width x depth]-classes."""

    in_dim: int
    width: int
    depth: int
    classes: int
    batch: int

    @property
    def sizes(self) -> list[int]:
        return [self.in_dim] + [self.width] * self.depth + [self.classes]

    def __str__(self) -> str:
        return f"{self.in_dim}-[{self.width}x{self.depth}]-{self.classes} batch {self.batch}"

    def flops_per_step(self) -> float:
        """Multiply-adds x2 of forward, weight gradients and input gradients (none for the first layer)."""
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        forward = sum(2 * self.batch * a * b for a, b in pairs)
        return 2 * forward + sum(2 * self.batch * a * b for a, b in pairs[1:])


SHAPES = {
    "small": Shape(64, 128, 2, 10, 64),
    "deep": Shape(784, 256, 20, 10, 128),
    "wide": Shape(784, 1024, 2, 10, 256),
}
QUICK_SHAPES = {"small": Shape(16, 16, 2, 4, 8), "deep": Shape(32, 16, 4, 4, 8), "wide": Shape(32, 64, 2, 4, 16)}


def best_seconds(
    contenders: dict[str, Callable[[], object]],
    calls: int,
    repeats: int,
    contexts: dict[str, Callable[[], contextlib.AbstractContextManager]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Best time per call of each contender, the contenders interleaved `repeats` times.

    `contexts`: per contender, a context (a BLAS thread limit) entered around each block of calls. `clock`:
    wall time by default; `time.thread_time` counts only this thread's CPU time (one-thread runs, under load).
    """
    contexts = contexts or {}
    for name, fn in contenders.items():
        with contexts.get(name, contextlib.nullcontext)():
            fn()  # warm-up: first-call allocations, BLAS thread start
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, fn in contenders.items():
            with contexts.get(name, contextlib.nullcontext)():
                t0 = clock()
                for _ in range(calls):
                    fn()
                best[name] = min(best[name], (clock() - t0) / calls)
    return best


def engine_trainer(shape: Shape, lr: float = 0.01, init: str = "he_normal", seed: int = 1) -> Trainer:
    """The engine's float32 ReLU MLP with plain SGD and softmax cross-entropy."""
    net = MLP(
        shape.in_dim,
        shape.classes,
        shape.depth,
        shape.width,
        make_activation("relu"),
        make_initializer(init),
        np.random.default_rng(seed),
    )
    return Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", lr=lr, decay_keys=net.weight_keys))


def batch(shape: Shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((shape.batch, shape.in_dim)).astype(np.float32),  # (batch, in_dim)
        rng.integers(0, shape.classes, shape.batch),
    )


def torch_model(trainer: Trainer, lr: float):
    """The same MLP in PyTorch, starting from the engine's weights, with torch.optim.SGD."""
    import torch

    layers = []
    for i, layer in enumerate(trainer.net.layers):
        linear = torch.nn.Linear(*layer.W.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.W.T.copy()))  # torch keeps (out, in)
            linear.bias.copy_(torch.from_numpy(layer.params["b"].copy()))
        layers.append(linear)
        if i < len(trainer.net.layers) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    return model, torch.optim.SGD(model.parameters(), lr=lr), torch.nn.CrossEntropyLoss()


def engine_vs_torch(shapes: dict[str, Shape], calls: int, repeats: int) -> dict:
    """Engine time per SGD step / PyTorch's, same MLP, weights, batch and update; and both losses agree."""
    try:
        import torch
    except ImportError:
        return {"skipped": TORCH_MISSING}
    out = {}
    for name, shape in shapes.items():
        lr = 0.01
        trainer, (x, y) = engine_trainer(shape, lr), batch(shape)
        model, optimizer, loss_fn = torch_model(trainer, lr)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def torch_step(model=model, optimizer=optimizer, loss_fn=loss_fn, xt=xt, yt=yt):  # this shape's, bound now
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt), yt)
            loss.backward()
            optimizer.step()
            return loss.item()

        # the same update from the same weights: the first losses agree to float32 round-off
        first = (trainer.step(x, y), torch_step())
        t = best_seconds(
            {"engine": lambda trainer=trainer, x=x, y=y: trainer.step(x, y), "torch": torch_step},
            calls=max(1, calls // max(1, shape.depth // 2)),
            repeats=repeats,
            contexts={"engine": lambda shape=shape: blas_threads_for(shape.sizes, shape.batch)},
        )  # train's policy
        out[name] = {
            "ratio": t["engine"] / t["torch"],
            "engine_ms": 1e3 * t["engine"],
            "torch_ms": 1e3 * t["torch"],
            "shape": str(shape),
            "first_loss_engine": first[0],
            "first_loss_torch": first[1],
            "torch_threads": torch.get_num_threads(),
        }
    return out


def digits_split(seed: int = 0):
    """Digits, stratified 80/20, standardized on the training part, float32."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(x_tr)
    return (scaler.transform(x_tr).astype(np.float32), scaler.transform(x_te).astype(np.float32), y_tr, y_te)


def engine_vs_sklearn(epochs: int, repeats: int) -> dict:
    """Engine time per epoch / MLPClassifier's on digits, (128, 128) ReLU, SGD lr 0.01 no momentum, batch 64."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    from pipeline.engine import minibatches

    x_tr, x_te, y_tr, y_te = digits_split()
    shape = Shape(x_tr.shape[1], 128, 2, 10, 64)
    results: dict[str, dict] = {}

    def run_engine():
        trainer, rng = engine_trainer(shape, 0.01, init="xavier_uniform"), np.random.default_rng(0)
        with blas_threads_for(shape.sizes, shape.batch):  # the train stage's own thread policy
            t0 = time.perf_counter()
            for _ in range(epochs):
                for idx in minibatches(len(x_tr), shape.batch, rng):
                    trainer.step(x_tr[idx], y_tr[idx])
            seconds = (time.perf_counter() - t0) / epochs
        _, acc = trainer.evaluate(x_te, y_te)
        return seconds, acc

    def run_sklearn():
        clf = MLPClassifier(
            hidden_layer_sizes=(128, 128),
            activation="relu",
            solver="sgd",
            momentum=0.0,
            nesterovs_momentum=False,
            learning_rate_init=0.01,
            batch_size=shape.batch,
            alpha=0.0,
            max_iter=epochs,
            tol=0.0,
            n_iter_no_change=epochs + 1,
            shuffle=True,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget, on purpose
            t0 = time.perf_counter()
            clf.fit(x_tr, y_tr)
            seconds = (time.perf_counter() - t0) / clf.n_iter_
        return seconds, float(clf.score(x_te, y_te))

    for _ in range(repeats):  # interleaved, best of repeats
        for name, fn in (("engine", run_engine), ("sklearn", run_sklearn)):
            seconds, acc = fn()
            if name not in results or seconds < results[name]["seconds"]:
                results[name] = {"seconds": seconds, "acc": acc}
    e, s = results["engine"], results["sklearn"]
    return {
        "ratio": e["seconds"] / s["seconds"],
        "engine_ms_per_epoch": 1e3 * e["seconds"],
        "sklearn_ms_per_epoch": 1e3 * s["seconds"],
        "engine_test_acc": e["acc"],
        "sklearn_test_acc": s["acc"],
        "epochs": epochs,
        "accuracy_at_least_as_good": e["acc"] >= s["acc"],
    }


def gflops(shape: Shape, calls: int, repeats: int) -> dict:
    """Achieved FLOP rate of the engine's step on `shape` against a plain float32 matmul of its widest layer."""
    trainer, (x, y) = engine_trainer(shape), batch(shape)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((shape.batch, shape.width)).astype(np.float32)  # (batch, width)
    w = rng.standard_normal((shape.width, shape.width)).astype(np.float32)  # (width, width)
    t = best_seconds({"step": lambda: trainer.step(x, y), "matmul": lambda: a @ w}, calls, repeats)
    step_rate = shape.flops_per_step() / t["step"] / 1e9
    matmul_rate = 2 * shape.batch * shape.width * shape.width / t["matmul"] / 1e9
    return {
        "ratio": step_rate / matmul_rate,
        "step_gflops": step_rate,
        "matmul_gflops": matmul_rate,
        "shape": str(shape),
    }
