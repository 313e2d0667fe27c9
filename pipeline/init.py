"""python -m pipeline.init: the initialization analysis of Glorot & Bengio (2010) and He et al. (2015).

No training: build the network, push the fixed probe batch forward, backpropagate once, and compare
the activation and gradient scale per layer with what the init formula predicts.
"""

from __future__ import annotations

import math

import numpy as np
from omegaconf import DictConfig

from pipeline.analysis.diagnosis import diagnose
from pipeline.analysis.theory import predicted_act_var
from pipeline.engine import MLP, layer_name
from pipeline.harness import export, plots, pretrained
from pipeline.harness.build import build_trainer, load_data
from pipeline.harness.cli import stage_main
from pipeline.harness.loop import probe_indices
from pipeline.harness.recording import Recorder, check_store, log_config, log_layer_profiles, open_run
from pipeline.harness.seeding import rng_for
from pipeline.harness.validate import ConfigError, validate
from pipeline.probes import ProbeSet, build_probes


def analyse(cfg: DictConfig, data) -> tuple[dict, MLP]:
    """(metrics, network) of the initialized network on the probe batch."""
    trainer = build_trainer(cfg, data)
    net = trainer.net
    assert isinstance(net, MLP)  # run() refuses recurrent models
    idx = probe_indices(len(data.x_train), cfg.probes.batch_size, rng_for(cfg.seed, "probe"))
    x, y = data.x_train[idx], data.y_train[idx]  # (probe_batch, features), (probe_batch,)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        loss, dlogits = trainer.loss(net.forward(x, train=True), y)
        net.backward(dlogits)
        # the activations of that same training-mode pass (batch norm normalizes by the batch, as in training)
        acts = [(layer.cache["z"], layer.cache["a"]) for layer in net.layers]
        # the configured instruments (probes.instruments), the spectral norm exact: one measurement, no warm start
        probes = build_probes(list(cfg.probes.instruments), exact_spectral=True)
        metrics = ProbeSet(net, None, x, probes).measure(activations=acts)
    metrics["init/loss"] = loss
    init_params = {k: v for k, v in cfg.init.items() if k not in ("name", "bias")}
    theory = None
    if cfg.init.name != "pretrained":  # no formula predicts learned weights
        theory = predicted_act_var(
            net,
            cfg.init.name,
            dict(init_params, negative_slope=net.activation.negative_slope),
            bias=float(cfg.init.get("bias") or 0.0),
        )
    if theory is not None:
        metrics.update({f"theory_act_var/{layer_name(i)}": v for i, v in enumerate(theory, 1)})
    return metrics, net


def per_layer(metrics: dict, prefix: str, n: int) -> list[float]:
    return [metrics.get(f"{prefix}/{layer_name(i)}", math.nan) for i in range(1, n + 1)]


def run(cfg: DictConfig) -> dict:
    """Analyse the configured network at initialization; returns the per-layer profile and verdict."""
    validate(cfg)
    if cfg.model.get("cell"):
        raise ConfigError(
            f"model.cell: got '{cfg.model.cell}'; the init stage analyses the MLP's layers; "
            "allowed: an MLP model (mlp, deep, resmlp); train a recurrent model with pipeline.train"
        )
    check_store(cfg)
    data = load_data(cfg)
    tags = pretrained.checked_source_tags(cfg, data.n_features)  # init=pretrained: checked before any run opens
    with open_run(cfg, "init", tags) as run:
        log_config(run, cfg)
        metrics, net = analyse(cfg, data)
        recorder = Recorder(run)
        recorder.log(metrics, 0)
        log_layer_profiles(run, recorder.history)
        labels = diagnose({k: v for k, v in metrics.items() if math.isfinite(v)}, net)
        run.set_tags({"verdict": ",".join(labels)})
        n = len(net.layers)
        act_std, grad_std = per_layer(metrics, "act_std", n), per_layer(metrics, "grad_std", n)
        theory = per_layer(metrics, "theory_act_var", n)
        theory_std = [math.sqrt(v) for v in theory] if all(math.isfinite(v) for v in theory) else None
        title = f"{cfg.model.activation} + {cfg.init.name}, depth {cfg.model.depth}, width {cfg.model.width}"
        run.log_figure(
            plots.depth_profile(
                {"activation std": act_std, "gradient std (dL/dz)": grad_std}, theory=theory_std, title=title
            ),
            "plots/depth_profile.png",
        )
    result = {
        "run_id": run.run_id,
        "verdict": labels,
        "act_std": act_std,
        "grad_std": grad_std,
        "theory_act_std": theory_std,
        "metrics": metrics,
    }
    if cfg.get("export"):
        export.init_files(cfg.export, result)
    return result


def summary_line(result: dict) -> str:
    a, g = result["act_std"], result["grad_std"]
    hidden = len(a) - 1
    lines = [f"{'layer':>5}  {'act_std':>10}  {'theory':>10}  {'grad_std':>10}"]
    theory = result["theory_act_std"] or [math.nan] * len(a)
    for i in range(len(a)):
        name = f"{i + 1:>5}" if i < hidden else "  out"
        lines.append(f"{name}  {a[i]:10.3e}  {theory[i]:10.3e}  {g[i]:10.3e}")
    if hidden >= 2:
        lines.append(
            f"act_std layer {hidden} / layer 1 = {a[hidden - 1] / a[0]:.3e}; "
            f"grad_std layer 1 / layer {hidden} = {g[0] / g[hidden - 1]:.3e}"
        )
    lines.append(f"verdict {','.join(result['verdict'])}" + (f"  run {result['run_id']}" if result["run_id"] else ""))
    return "\n".join(lines)


main = stage_main(run, summary_line)

if __name__ == "__main__":
    main()
