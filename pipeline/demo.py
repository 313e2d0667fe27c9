"""python -m pipeline.demo: the engine end to end — gradient checks, then a short training on digits."""

from __future__ import annotations

import time

from hydra import compose, initialize_config_dir

from pipeline import gradcheck
from pipeline.build import build_loss, build_network, build_optimizer
from pipeline.datasets import load, split_standardize
from pipeline.engine import Trainer
from pipeline.paths import CONF_DIR
from pipeline.seeding import rng_for

def check_all(depth: int = 3) -> float:
    """Gradient-check every activation x loss x regularizer x batch-norm x residual combination."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("gradcheck", overrides=[f"model.depth={depth}", "gradcheck.sweep=true"])
    t0 = time.perf_counter()
    result = gradcheck.run(cfg)
    failed = result["failed"]
    print(f"gradient check: {len(result['combinations'])} combinations (activation x loss x regularizer x batch norm "
          f"x residual) at depth {depth}: worst relative error {result['max_rel_error']:.2e} "
          f"(tolerance {cfg.gradcheck.tol:g}), {len(failed)} failed, {time.perf_counter() - t0:.0f} s")
    for line in failed:
        print("  FAILED", line)
    return result["max_rel_error"]


def train_digits(epochs: int = 20, seed: int = 0) -> float:
    """A 2x128 ReLU net with Adam on scikit-learn's digits; returns the test accuracy."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("gradcheck", overrides=["model.depth=2", "model.width=128", "init=he_normal",
                                              "+optimizer=adam"])
    data = split_standardize(*load("digits"), test_size=0.2, val_size=0.1, seed=seed)
    net = build_network(cfg.model, cfg.init, data.n_features, data.n_classes, rng_for(seed, "init"))
    trainer = Trainer(net, build_loss(cfg.model), build_optimizer(cfg.optimizer, net))
    batches = rng_for(seed, "batches")
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss = trainer.fit_epoch(data.x_train, data.y_train, 64, batches)
        if epoch % 5 == 0 or epoch == 1:
            _, val_acc = trainer.evaluate(data.x_val, data.y_val)
            print(f"  epoch {epoch:2d}  train/loss {loss:.4f}  val/acc {val_acc:.3f}")
    seconds = time.perf_counter() - t0
    _, test_acc = trainer.evaluate(data.x_test, data.y_test)
    print(f"digits, 64-128-128-10 ReLU, Adam, batch 64: test/acc {test_acc:.3f} after {epochs} epochs "
          f"({1e3 * seconds / epochs:.1f} ms per epoch)")
    return test_acc


def main() -> None:
    check_all()
    train_digits()


if __name__ == "__main__":
    main()
