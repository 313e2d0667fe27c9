"""python -m pipeline.pretrain: greedy layer-wise pretraining (Bengio et al. 2007; Vincent et al. 2008).

The network of `model.*` is built as `train` would build it (initialized by `init.*`); then hidden layer k,
k = 1..depth, is trained alone as a tied-weight autoencoder (engine/autoencoder.py) on the codes of layers
1..k-1, which stay frozen, for `pretrain.epochs` with pretraining's own optimizer, optionally denoising
(`pretrain.noise`). One MLflow run holds every layer: `recon/layer_XX` (the clean training set's
reconstruction loss), `recon_rel/layer_XX` (that over the inputs' variance: 1 = no better than the mean
input) and `recon_val/layer_XX`, with the epoch as step, so the layers' curves sit side by side in one
chart; `start/<probe>/layer_XX`, the stack as fine-tuning starts it (`harness/start.py`); and the stacked
weights as the artifact `pretrained/weights.npz` (+ weights.json). With `export=FOLDER` the same files go
to FOLDER (a DVC output), with metrics.json. `init=pretrained init.source=...` then starts a `train` run
from them.
"""

from __future__ import annotations

import json
import math
import tempfile
import time

import numpy as np
from omegaconf import DictConfig

from pipeline.data import prepared
from pipeline.engine import MLP, layer_name, make_optimizer, minibatches
from pipeline.engine.autoencoder import Autoencoder
from pipeline.harness import pretrained
from pipeline.harness.build import DTYPES, build_network
from pipeline.harness.cli import stage_main
from pipeline.harness.recording import Recorder, check_store, log_config, log_history, open_run, plain_config
from pipeline.harness.seeding import rng_for
from pipeline.harness.start import start_profile
from pipeline.harness.validate import ConfigError, validate


def check(cfg: DictConfig) -> None:
    """What pretraining needs beyond the per-key rules: a plain MLP with at least one hidden layer."""
    if cfg.model.get("cell"):
        raise ConfigError(f"model.cell: got {cfg.model.cell!r}; allowed: null (pretraining stacks an MLP's layers)")
    if cfg.model.depth < 1:
        raise ConfigError("model.depth: got 0; allowed: >= 1 hidden layer to pretrain")
    if cfg.model.batch_norm or cfg.model.residual:
        raise ConfigError(
            "model: pretraining builds plain dense + activation layers; allowed: model.batch_norm=false and "
            "model.residual=false"
        )
    if cfg.init.name == "pretrained":
        raise ConfigError("init.name: got 'pretrained'; allowed: the scheme pretraining starts the layers from")


def input_range_check(loss: str, k: int, x: np.ndarray) -> None:
    """cross_entropy reconstructs inputs in [0, 1] only (the codes of sigmoid layers, not standardized data)."""
    if loss == "cross_entropy" and len(x) and (x.min() < 0.0 or x.max() > 1.0):
        raise ConfigError(
            f"pretrain.loss: cross_entropy needs every layer's input in [0, 1]; layer {k}'s input spans "
            f"{x.min():.3g} .. {x.max():.3g}; allowed: mse"
        )


def measure(recorder: Recorder, ae: Autoencoder, name: str, x_train, x_val, epoch: int) -> float:
    """Log the clean reconstruction loss of the layer's training (and validation) inputs at `epoch`."""
    recon = ae.evaluate(x_train)
    # relative to the loss of reconstructing every input by the mean input (1 = no better than that): codes of
    # saturated layers vary little, so their absolute loss is small whatever the layer learned
    metrics = {f"recon/{name}": recon}
    spread = float(np.mean(np.var(x_train, axis=0)))
    if ae.loss == "mse" and spread > 0:
        metrics[f"recon_rel/{name}"] = recon / spread
    if len(x_val):
        metrics[f"recon_val/{name}"] = ae.evaluate(x_val)
    recorder.log(metrics, epoch)
    return recon


def run(cfg: DictConfig) -> dict:
    """Pretrain every hidden layer in turn; returns the run id, per-layer reconstruction losses and the files."""
    validate(cfg)
    check(cfg)
    check_store(cfg)
    split, data_info = prepared.load_or_build(cfg.data)
    data = prepared.as_dtype(split, DTYPES[cfg.model.dtype])
    p = cfg.pretrain
    input_range_check(p.loss, 1, data.x_train)
    t0 = time.perf_counter()
    plain = plain_config(cfg)
    with open_run(cfg, "pretrain") as run:  # from here on, a failure is recorded as a FAILED run
        log_config(run, cfg, "pretrain")
        net = build_network(cfg.model, cfg.init, data.n_features, data.out_dim, rng_for(cfg.seed, "init"))
        assert isinstance(net, MLP)  # check() refuses model.cell
        batch_rng, noise_rng = rng_for(cfg.seed, "pretrain").spawn(2)
        recorder = Recorder(run)
        x_train, x_val = data.x_train, data.x_val  # the input of the layer being trained: codes of those below
        final: dict[str, float] = {}
        options = {k: v for k, v in p.optimizer.items() if k != "name"}
        for k, layer in enumerate(net.hidden, 1):
            input_range_check(p.loss, k, x_train)
            name = layer_name(k)
            ae = Autoencoder(layer, loss=p.loss, noise=float(p.noise))
            ae.center_decoder(x_train)  # starts near reconstructing every input by the mean input
            optimizer = make_optimizer(p.optimizer.name, decay_keys=("W",), **options)

            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                recon = measure(recorder, ae, name, x_train, x_val, 0)
                for epoch in range(1, p.epochs + 1):
                    for idx in minibatches(len(x_train), p.batch_size, batch_rng):
                        ae.step(x_train[idx], optimizer, noise_rng)
                    recon = measure(recorder, ae, name, x_train, x_val, epoch)
                    if not math.isfinite(recon):
                        raise ConfigError(
                            f"pretrain.optimizer.lr: layer {k}'s reconstruction loss became {recon} at epoch {epoch}; "
                            "allowed: a smaller learning rate"
                        )
            final[name] = recon
            layer.dense.need_input_grad = k > 1  # as the MLP has it: only the first layer skips dx
            x_train, x_val = ae.encode(x_train), ae.encode(x_val)  # frozen from here on
        seconds = time.perf_counter() - t0
        recorder.log({"time/pretrain_seconds": seconds}, int(p.epochs))
        start = start_profile(cfg, net, data)
        recorder.log(start, 0)
        meta = {
            "run_id": run.run_id,
            "config_hash": pretrained.weights_hash(plain),
            "config_sections": list(pretrained.WEIGHT_SECTIONS),
            "in_dim": data.n_features,
            "depth": int(cfg.model.depth),
            "width": int(cfg.model.width),
            "activation": cfg.model.activation,
            "dtype": cfg.model.dtype,
            "layers": [
                {"name": layer_name(i), "W": list(layer.W.shape), "b": list(layer.params["b"].shape)}
                for i, layer in enumerate(net.hidden, 1)
            ],
            "init": plain["init"],
            "pretrain": plain["pretrain"],
            "data": {"config": prepared.data_config(cfg.data), "sha256": data_info.get("sha256")},
            "recon": final,
        }
        arrays = pretrained.hidden_arrays(net)
        folder = cfg.get("export") or None
        with tempfile.TemporaryDirectory() as tmp:
            files = pretrained.save(folder or tmp, arrays, meta)
            for f in files:
                run.log_artifact(str(f), pretrained.ARTIFACT_DIR)
        if folder:  # the last reconstruction loss per layer and the first layer's gradient to come, for DVC
            metrics = {k: v for k, v in recorder.latest.items() if k.startswith(("recon/", "recon_rel/"))}
            metrics.update({k: start[k] for k in ("start/grad_norm/layer_01", "start/loss") if k in start})
            (files[0].parent / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        run.set_tags({"pretrained_sha256": pretrained.arrays_sha256(arrays)})
        log_history(run, recorder.history)
    return {
        "run_id": run.run_id,
        "recon": final,
        "recon_rel": {k: recorder.latest.get(f"recon_rel/{k}", math.nan) for k in final},
        "start": start,
        "seconds": seconds,
        "files": [str(f) for f in files] if folder else [],
        "history": dict(recorder.history),
    }


def summary_line(result: dict) -> str:
    layers = "  ".join(f"{k} {v:.4f} ({result['recon_rel'][k]:.2f})" for k, v in result["recon"].items())
    where = f"  -> {result['files'][0]}" if result["files"] else ""
    run = f"  run {result['run_id']}" if result["run_id"] else ""
    return (
        f"pretrained {len(result['recon'])} layers in {result['seconds']:.1f} s; recon (relative) {layers}{where}{run}"
    )


main = stage_main(run, summary_line)

if __name__ == "__main__":
    main()
