"""python -m pipeline.gradcheck: every parameter's backprop gradient against central differences.

One network by default; `gradcheck.sweep=true` checks every activation x loss x regularizer x
batch-norm x residual combination at the configured depth and width. A recurrent model (`model=rnn`,
`model=lstm`) is always checked over its whole table: every cell activation (the RNN's), every loss (the
regression MSE too), every regularizer, full and truncated backprop through time (`gradcheck.bptt`).
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.engine import ACTIVATIONS, LOSSES, REGRESSION_LOSSES, REGULARIZERS
from pipeline.engine.gradcheck import away_from_kinks, check_gradients, nudge_from_zero
from pipeline.harness import help as _help  # noqa: F401 -- registers the resolvers of its --help page
from pipeline.harness.build import build_loss, build_network, build_regularizer
from pipeline.harness.seeding import rng_for


def check_one(cfg: DictConfig) -> dict:
    """Check the configured network in float64; return the per-tensor results and the worst error."""
    gc = cfg.gradcheck
    rng = rng_for(cfg.seed, "gradcheck")
    regression = bool(gc.get("regression"))  # real targets, one output (the recurrent table's regression MSE)
    out_dim = 1 if regression else gc.n_classes
    net = build_network(cfg.model, cfg.init, gc.in_dim, out_dim, rng, dtype="float64")
    loss = build_loss(cfg.model, regression)
    regularizer = build_regularizer(cfg.regularizer)
    if cfg.model.get("cell"):
        x = rng.standard_normal((gc.batch_size, gc.seq_len, gc.in_dim))  # (batch, time, in_dim)
    else:
        x = rng.standard_normal((gc.batch_size, gc.in_dim))  # (batch, in_dim)
    y = rng.standard_normal(gc.batch_size) if regression else rng.integers(0, gc.n_classes, gc.batch_size)
    nudge_from_zero(net, regularizer, gc.kink_margin)
    x, y = away_from_kinks(net, loss, x, y, gc.kink_margin)
    checks = check_gradients(net, loss, regularizer, x, y, h=gc.h, max_entries=gc.max_entries, rng=rng)
    worst = max(c.rel_error for c in checks)
    return {"checks": checks, "max_rel_error": worst, "passed": worst <= gc.tol, "batch": len(x)}


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as nested dicts."""
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]  # a DictConfig's container has str keys


def combinations(cfg: DictConfig):
    """(label, config) for every activation, loss, regularizer, batch norm and residual choice."""
    strength = cfg.gradcheck.sweep_strength
    for act, loss, reg, bn, res in itertools.product(
        ACTIVATIONS, LOSSES, ("none", *REGULARIZERS), (False, True), (False, True)
    ):
        c = plain(cfg)
        c["model"].update(activation=act, loss=loss, batch_norm=bn, residual=res)
        c["regularizer"] = {"name": reg, "strength": 0.0 if reg == "none" else strength}
        yield f"{act:<10} {loss:<13} {reg:<7} batch_norm={bn!s:<5} residual={res!s:<5}", OmegaConf.create(c)


def check_autoencoders(cfg: DictConfig) -> dict[str, float]:
    """gradcheck.autoencoder: pretraining's tied autoencoder (gradcheck.in_dim -> model.width) for every activation x
    reconstruction loss x noise (0 and 0.3): label -> worst relative error over W, b, c."""
    from pipeline.engine.autoencoder import RECON_LOSSES, Autoencoder, check_autoencoder

    gc, errors = cfg.gradcheck, {}
    for act, loss, noise in itertools.product(ACTIVATIONS, RECON_LOSSES, (0.0, 0.3)):
        rng = rng_for(cfg.seed, "gradcheck")
        model = dict(plain(cfg)["model"], activation=act, depth=1, batch_norm=False, residual=False, cell=None)
        layer = build_network(model, cfg.init, gc.in_dim, 1, rng, dtype="float64").layers[0]  # the encoder
        layer.params["b"][:] = rng.normal(0.0, 0.1, layer.params["b"].shape)  # nonzero: b's gradient is checked
        shape = (gc.batch_size, gc.in_dim)
        x = rng.random(shape) if loss == "cross_entropy" else rng.standard_normal(shape)  # CE: inputs in [0, 1]
        checks = check_autoencoder(Autoencoder(layer, loss, noise), x, rng, h=gc.h, kink_margin=gc.kink_margin)
        errors[f"autoencoder {act:<10} {loss:<13} noise={noise:g}"] = max(c.rel_error for c in checks)
    return errors


def recurrent_combinations(cfg: DictConfig):
    """(label, config) for a recurrent model: activation (RNN) x loss x regularizer x full/truncated BPTT.

    The losses are the classifiers' three and the regression MSE (`mse-reg`: real targets, one output).
    """
    strength = cfg.gradcheck.sweep_strength
    rnn = cfg.model.cell == "rnn"
    losses = (*LOSSES, *(f"{name}-reg" for name in REGRESSION_LOSSES))
    for act, loss, reg, bptt in itertools.product(
        ACTIVATIONS if rnn else ("-",), losses, ("none", *REGULARIZERS), (None, cfg.gradcheck.bptt)
    ):
        c = plain(cfg)
        c["model"].update(loss=loss.removesuffix("-reg"), bptt=bptt)
        if rnn:
            c["model"]["activation"] = act
        c["gradcheck"]["regression"] = loss.endswith("-reg")
        c["regularizer"] = {"name": reg, "strength": 0.0 if reg == "none" else strength}
        cell = f"{cfg.model.cell} {act:<10}" if rnn else "lstm"
        yield f"{cell} {loss:<13} {reg:<7} bptt={bptt!s:<4}", OmegaConf.create(c)


def run(cfg: DictConfig) -> dict:
    """One check, or with gradcheck.sweep (or a recurrent model) every combination; `max_rel_error` the worst.

    gradcheck.autoencoder: every autoencoder of pretraining instead."""
    if not cfg.gradcheck.sweep and not cfg.model.get("cell") and not cfg.gradcheck.autoencoder:
        result = check_one(cfg)
        result["lines"] = format_checks(result["checks"])
    else:
        if cfg.gradcheck.autoencoder:
            errors = check_autoencoders(cfg)
        else:
            table = recurrent_combinations(cfg) if cfg.model.get("cell") else combinations(cfg)
            errors = {label: check_one(c)["max_rel_error"] for label, c in table}
        result = {
            "combinations": errors,
            "max_rel_error": max(errors.values()),
            "failed": [label for label, e in errors.items() if e > cfg.gradcheck.tol],
            "lines": [f"{label}  max_rel_error={e:.3e}" for label, e in errors.items()],
        }
        result["passed"] = not result["failed"]
    result["lines"].append(f"max_rel_error={result['max_rel_error']:.3e}")
    return result


def format_checks(checks) -> list[str]:
    lines = []
    for c in checks:
        shape = "x".join(map(str, c.shape))
        note = "  (negligible: ~0 on both sides, equal within round-off)" if c.negligible else ""
        lines.append(
            f"{c.name:<16} {shape:>8}  entries={c.checked:<5} |grad|={c.analytic_norm:.3e}  "
            f"rel_error={c.rel_error:.3e}{note}"
        )
    return lines


@hydra.main(version_base="1.3", config_path="../conf", config_name="gradcheck")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(result["lines"]))
    if not result["passed"]:
        print(
            f"FAILED: max_rel_error {result['max_rel_error']:.3e} > gradcheck.tol {cfg.gradcheck.tol:g}",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
