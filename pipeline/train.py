"""python -m pipeline.train: train one configured network, probing it, and log everything to MLflow."""

from __future__ import annotations

import math
import time

import numpy as np
from omegaconf import DictConfig

from pipeline.analysis.diagnosis import diagnose
from pipeline.harness import export, plots, pretrained, through_time
from pipeline.harness.build import build_trainer, load_data
from pipeline.harness.cli import stage_main
from pipeline.harness.loop import Loop, layer_activations, probe_indices, without_accuracy
from pipeline.harness.recording import (
    Recorder,
    check_store,
    dense_stride,
    log_config,
    log_history,
    log_layer_profiles,
    open_run,
)
from pipeline.harness.seeding import rng_for
from pipeline.harness.threads import blas_threads_for
from pipeline.harness.validate import validate
from pipeline.probes import ProbeSet


def run(cfg: DictConfig, tags: dict[str, str] | None = None, start: dict[str, float] | None = None) -> dict:
    """Train `cfg`; returns the run id, verdict, final metrics and timing. A finetune job (harness/finetune.py)
    passes `tags` (its `stage` and `config_hash`, over the stage's) and `start` (metrics of the net before the
    first update, logged at step 0)."""
    validate(cfg)
    check_store(cfg)
    data = load_data(cfg)
    # init=pretrained: checked before any run opens
    tags = {**pretrained.checked_source_tags(cfg, data.n_features), **(tags or {})}
    t0 = time.perf_counter()
    with open_run(cfg, "train", tags) as run:  # from here on, a failure is recorded as a FAILED run
        log_config(run, cfg)
        trainer = build_trainer(cfg, data)
        probe_idx = probe_indices(len(data.x_train), cfg.probes.batch_size, rng_for(cfg.seed, "probe"))
        probe_x, probe_y = data.x_train[probe_idx], data.y_train[probe_idx]
        full_batch = (data.x_train, data.y_train) if cfg.probes.get("gradient_noise") else None
        probes = (
            ProbeSet(
                trainer.net,
                trainer,
                probe_x,
                full_batch=full_batch,
                batch_size=cfg.train.batch_size,
                rng=rng_for(cfg.seed, "probe"),
                source=cfg.probes.activations,
                every=cfg.probes.every,
                instruments=list(cfg.probes.instruments),
                probe_y=probe_y,
            )
            if cfg.probes.enabled
            else None
        )
        if probes is not None and probes.skipped:
            run.set_tags({"probes_skipped": "; ".join(f"{k}: {v}" for k, v in probes.skipped.items())})
        dense = Loop.dense_measurements(len(data.y_train), cfg.train.batch_size, cfg.probes.every, cfg.train.epochs)
        recorder = Recorder(run, dense_stride(dense, cfg.tracking.get("max_points")))
        if start:
            recorder.log(start, 0)
        figures = wants_figures(cfg)
        start_acts = layer_activations(probes) if figures and cfg.probes.histograms else None
        loop = Loop(cfg, data, trainer, recorder, probes)
        with blas_threads_for(trainer.net.sizes, cfg.train.batch_size or len(data.y_train)):
            try:
                loop.run()
            except BaseException:  # a crash or an interrupt: the series MLflow was spared go in history.json
                recorder.close()
                log_history(run, recorder.history)
                raise
        recorder.close()
        diverged = loop.diverged_at_step is not None
        if not diverged:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                final_loss, final_acc = trainer.evaluate(data.x_train, data.y_train)
                test_loss, test_acc = trainer.evaluate(data.x_test, data.y_test)
            final_metrics = {
                "train/final_loss": final_loss,
                "train/final_acc": final_acc,
                "test/loss": test_loss,
                "test/acc": test_acc,
            }
            recorder.log(without_accuracy(final_metrics) if loop.regression else final_metrics, loop.step)
        labels = diagnose(recorder.finite_latest(), trainer.net, diverged, regression=loop.regression)
        run.set_tags({"verdict": ",".join(labels)})
        if figures:
            log_plots(
                run, recorder, start_acts, None if diverged or not cfg.probes.histograms else layer_activations(probes)
            )
        log_layer_profiles(run, recorder.history)
        # a recurrent run's ||dL/dh_t|| table and heat map: one cheap picture, drawn for a study's children too
        through_time.log_trace(run, probes, recorder.history, draw=cfg.tracking.get("figures", "auto") is not False)
        log_history(run, recorder.history)
    final = {k: v for k, v in recorder.latest.items() if k.split("/")[0] in ("train", "val", "test")}
    result = {
        "run_id": run.run_id,
        "verdict": labels,
        "diverged_at_step": loop.diverged_at_step,
        "steps": loop.step,
        "epochs": len(loop.epoch_seconds),
        "seconds": time.perf_counter() - t0,
        "seconds_per_epoch": float(np.mean(loop.epoch_seconds)) if loop.epoch_seconds else math.nan,
        "tracking_seconds": run.seconds_in_mlflow,
        "metrics": final,
        "chance_loss": recorder.latest.get("data/chance_loss", math.nan),
    }
    if cfg.get("export"):
        export.train_files(cfg.export, recorder.history, result)
    return result


def wants_figures(cfg: DictConfig) -> bool:
    """Whether this run draws its PNGs: tracking.figures, where `auto` skips a study's children.

    A study's report draws the comparisons it decides with; its children's own pictures cost more than their
    training (about 0.5 s per run against tens of ms) and their metrics are all in MLflow's charts.
    """
    setting = cfg.tracking.get("figures", "auto")
    return bool(setting) if setting != "auto" else not cfg.tracking.get("study")


def log_plots(run, recorder: Recorder, start_acts, end_acts) -> None:
    """The per-run pictures, as PNG artifacts under plots/ (one MLflow call for all)."""
    history = recorder.history
    figures = {"plots/loss_curves.png": plots.loss_curves(history, title="loss and accuracy")}
    if any(k.startswith("grad_norm/layer_") for k in history):
        figures["plots/grad_norm_heatmap.png"] = plots.grad_norm_heatmap(history, title="||dL/dW|| per layer")
    if any(k.startswith(("dead_relu/layer_", "saturation/layer_")) for k in history):
        figures["plots/unit_health.png"] = plots.unit_health(history, title="dead and saturated units")
    if start_acts:
        figures["plots/activation_histograms.png"] = plots.activation_histograms(
            start_acts, end_acts, title="activations per layer"
        )
    run.log_figures(figures)


def summary_line(result: dict) -> str:
    m = result["metrics"]
    if "test/acc" in m:
        acc = f"test/acc {m['test/acc']:.3f}"
    elif "test/loss" in m:  # a regression: its loss (MSE) against a constant predictor's
        acc = f"test/loss {m['test/loss']:.4f} (constant predictor {result['chance_loss']:.4f})"
    else:
        acc = f"diverged at step {result['diverged_at_step']}"
    run = f"  run {result['run_id']}" if result["run_id"] else ""
    return (
        f"{acc}  verdict {','.join(result['verdict'])}  {result['epochs']} epochs, "
        f"{1e3 * result['seconds_per_epoch']:.1f} ms/epoch{run}"
    )


main = stage_main(run, summary_line)

if __name__ == "__main__":
    main()
