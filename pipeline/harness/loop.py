"""The training loop: epochs of mini-batches with probes, logging and a clean stop on divergence."""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from pipeline.data.sources import Split
from pipeline.engine import Loss, Network, Trainer, minibatches
from pipeline.engine.schedules import make_schedule
from pipeline.harness.recording import Recorder
from pipeline.harness.seeding import rng_for
from pipeline.harness.sweep import in_multirun
from pipeline.probes import ProbeContext, ProbeSet

# tqdm's default lock is a multiprocessing one: a worker stopped by a signal leaves it to the resource
# tracker, which warns of "leaked semaphore objects" after a sweep's last line. One thread lock serves here.
tqdm.set_lock(threading.RLock())


def probe_indices(n_train: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The fixed probe batch: training examples drawn once by the seed."""
    return np.sort(rng.choice(n_train, size=min(size, n_train), replace=False))


def chance_accuracy(y: np.ndarray) -> float:
    """The accuracy of always predicting the most frequent class."""
    return float(np.bincount(y).max() / len(y)) if len(y) else float("nan")


def chance_loss(loss: Loss, y: np.ndarray, n_classes: int) -> float:
    """The loss a constant predictor scores on labels y: the best of logits 0, the class prior and its log.

    For cross-entropy the log prior wins and this is the labels' entropy (ln K when balanced): what a net
    that learned nothing converges to, whatever loss it started from. For real targets (regression) the best
    constant is their mean, and its mean squared error their variance (the adding problem's 1/6).
    """
    if loss.regression:
        return float(loss.value(np.full((len(y), 1), y.mean()), y)) if len(y) else float("nan")
    prior = np.bincount(y, minlength=n_classes) / max(len(y), 1)  # (classes,)
    constants = (np.zeros(n_classes), prior, np.log(np.maximum(prior, 1e-12)))
    return min(float(loss.value(np.broadcast_to(c, (len(y), n_classes)), y)) for c in constants)


def layer_activations(probes: ProbeSet | None) -> dict[int, np.ndarray] | None:
    """Activation arrays per layer (output last) on the probe batch, for the histograms."""
    if probes is None or probes.probe_x is None:
        return None
    ctx = ProbeContext(probes.net, probes.trainer, probes.probe_x)
    return {i: a.copy() for i, (_, a) in enumerate(ctx.activations(), 1)}


def show_progress(setting, in_job: bool = False) -> bool:
    """train.progress: auto draws the epoch bar on a terminal, but not in a study's or sweep's job."""
    return sys.stdout.isatty() and not in_job if setting == "auto" else bool(setting)


def without_accuracy(metrics: dict) -> dict:
    """The metrics but the accuracies (`*/acc`, `*_acc`), which a regression does not have."""
    return {k: v for k, v in metrics.items() if not k.endswith(("/acc", "_acc"))}


@dataclass
class Loop:
    """The epochs of one run; stops cleanly at the first non-finite loss or gradient."""

    cfg: DictConfig
    data: Split
    trainer: Trainer
    recorder: Recorder
    probes: ProbeSet | None
    step: int = 0
    diverged_at_step: int | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0  # time in training steps only (probes and logging excluded), for loss vs time

    @property
    def net(self) -> Network:
        return self.trainer.net

    def run(self) -> None:
        cfg, data = self.cfg, self.data
        epochs = cfg.train.epochs
        schedule = make_schedule(
            cfg.train.schedule.name,
            cfg.optimizer.lr,
            epochs,
            **{k: v for k, v in cfg.train.schedule.items() if k != "name"},
        )
        batches_rng = rng_for(cfg.seed, "batches")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            # where learning starts from: the whole training set's loss before any step, and chance accuracy
            # (the majority class's share); analysis.diagnosis compares the end of training with both
            initial_loss, initial_acc = self.trainer.evaluate(data.x_train, data.y_train)
            start = {"train/initial_loss": initial_loss, "train/initial_acc": initial_acc}
            if not self.regression:
                start["data/chance_acc"] = chance_accuracy(data.y_train)
            start["data/chance_loss"] = chance_loss(self.trainer.loss, data.y_train, data.n_classes)
            self.recorder.log(without_accuracy(start) if self.regression else start, 0)
            if self.probes is not None:  # the network at initialization: activations and weights at step 0
                self.recorder.log(self.probes.measure(before_training=True), 0)
        # a job of a study or a sweep draws no bar of its own: the study's or sweep's bar counts the jobs
        in_job = bool(cfg.tracking.get("study")) or in_multirun()
        bar = tqdm(
            range(1, epochs + 1),
            desc="train",
            unit="epoch",
            disable=not show_progress(cfg.train.progress, in_job),
            leave=False,
        )
        # a diverging network overflows on purpose here: the loop detects it and stops, quietly
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            for epoch in bar:
                self.trainer.optimizer.lr = schedule(epoch - 1)
                t0 = time.perf_counter()
                train_loss, train_acc = self.run_epoch(batches_rng)
                self.epoch_seconds.append(time.perf_counter() - t0)
                if self.diverged_at_step is not None:
                    break
                val_loss, val_acc = self.trainer.evaluate(data.x_val, data.y_val) if len(data.y_val) else (None, None)
                epoch_metrics = {
                    "epoch": epoch,
                    "lr": self.trainer.optimizer.lr,
                    "train/acc": train_acc,
                    "time/epoch_seconds": self.epoch_seconds[-1],
                }
                if val_loss is not None:
                    epoch_metrics.update({"val/loss": val_loss, "val/acc": val_acc})
                self.recorder.log(without_accuracy(epoch_metrics) if self.regression else epoch_metrics, self.step)
                bar.set_postfix(
                    loss=f"{train_loss:.4f}",
                    **(
                        {}
                        if self.regression
                        else {"acc": f"{train_acc:.3f}", "val_acc": "-" if val_acc is None else f"{val_acc:.3f}"}
                    ),
                )
        bar.close()

    def run_epoch(self, rng: np.random.Generator) -> tuple[float, float]:
        """One pass over the training set; returns its mean loss and running accuracy."""
        x, y = self.data.x_train, self.data.y_train
        every = self.cfg.probes.every
        batches = list(minibatches(len(x), self.cfg.train.batch_size, rng))
        total_loss, correct, seen = 0.0, 0, 0
        interval_loss, interval_n = 0.0, 0
        for b, idx in enumerate(batches):
            self.step += 1
            last = b == len(batches) - 1
            measure = self.probes is not None and (self.step % every == 0 or last)
            t0 = time.perf_counter()
            loss = self.trainer.step(x[idx], y[idx], track_updates=measure)
            self.train_seconds += time.perf_counter() - t0
            if not math.isfinite(loss) or not math.isfinite(
                self.trainer.last_grad_norm if self.trainer.clipper.active else 0.0
            ):
                self.diverge()
                break
            if not self.regression:
                logits = self.net.layers[-1].cache["a"]  # (batch, classes) of this step, before any probe forward
                correct += int((logits.argmax(axis=1) == y[idx]).sum())
            seen += len(idx)
            total_loss += loss * len(idx)
            interval_loss, interval_n = interval_loss + loss, interval_n + 1
            if self.step % every == 0 or last:
                self.recorder.log(
                    {"train/loss": interval_loss / interval_n, "time/train_seconds": self.train_seconds},
                    self.step,
                    dense=True,
                )
                interval_loss, interval_n = 0.0, 0
            if measure and self.probes is not None:
                metrics = self.probes.measure()
                self.recorder.log(metrics, self.step, dense=True)
                if not math.isfinite(metrics.get("grad_norm/total", 0.0)):
                    self.diverge()
                    break
        return (total_loss / seen if seen else math.nan), (correct / seen if seen and not self.regression else math.nan)

    @property
    def regression(self) -> bool:
        """Real targets: no accuracy to log (the loss is the mean squared error)."""
        return self.trainer.loss.regression

    @staticmethod
    def dense_measurements(n_train: int, batch_size: int | None, every: int, epochs: int) -> int:
        """At most how many dense measurements (loss and probes) a run makes: each `every` steps, each epoch's end."""
        steps = math.ceil(n_train / batch_size) if batch_size else 1
        return min(steps, steps // every + 1) * epochs

    def diverge(self) -> None:
        self.diverged_at_step = self.step
        self.recorder.log({"diverged_at_step": self.step}, self.step)
