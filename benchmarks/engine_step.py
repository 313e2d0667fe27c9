"""Quick check: time per SGD step of the engine vs a straightforward NumPy loop of the same math.

    python benchmarks/engine_step.py [--depth 20 --width 256 --batch 128 --repeats 7]

Both run float32 on the same data, interleaved in one process so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from pipeline.engine import MLP, Trainer, make_activation, make_initializer, make_loss, make_optimizer


class PlainNumpyMLP:
    """The textbook loop: lists of W and b, forward, softmax cross-entropy, backward, SGD."""

    def __init__(self, sizes, rng, lr):
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
                  for a, b in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(b, dtype=np.float32) for b in sizes[1:]]
        self.lr = lr

    def step(self, x, y):
        hs, zs = [x], []
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = hs[-1] @ W + b
            zs.append(z)
            hs.append(np.maximum(z, 0) if i < len(self.W) - 1 else z)
        logits = hs[-1]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        n = len(y)
        loss = -np.log(p[np.arange(n), y]).mean()
        dz = p
        dz[np.arange(n), y] -= 1
        dz /= n
        for i in reversed(range(len(self.W))):
            dW = hs[i].T @ dz
            db = dz.sum(axis=0)
            if i > 0:
                dh = dz @ self.W[i].T
                dz = dh * (zs[i - 1] > 0)
            self.W[i] -= self.lr * dW
            self.b[i] -= self.lr * db
        return loss


def time_steps(step, x, y, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--in-dim", type=int, default=784)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.in_dim)).astype(np.float32)
    y = rng.integers(0, args.classes, args.batch)
    net = MLP(args.in_dim, args.classes, args.depth, args.width, make_activation("relu"),
              make_initializer("he_normal"), np.random.default_rng(1))
    engine = Trainer(net, make_loss("cross_entropy"), make_optimizer("sgd", lr=0.01, decay_keys=net.weight_keys))
    plain = PlainNumpyMLP([args.in_dim] + [args.width] * args.depth + [args.classes], np.random.default_rng(1), 0.01)
    engine.step(x, y), plain.step(x, y)  # warm-up
    e, p = [], []
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        e.append(time_steps(engine.step, x, y, args.steps))
        p.append(time_steps(plain.step, x, y, args.steps))
    result = {"shape": f"{args.in_dim}-[{args.width}x{args.depth}]-{args.classes} batch {args.batch} float32",
              "engine_ms": 1e3 * min(e), "plain_numpy_ms": 1e3 * min(p), "ratio": min(e) / min(p)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
