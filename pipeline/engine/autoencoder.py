"""A one-hidden-layer autoencoder over an engine `Layer`: the unit of greedy layer-wise pretraining.

    encoder:  h = f(x~ W + b)            (the engine's Layer: Dense + activation, the layer being pretrained)
    decoder:  r = g(h W^T + c)            tied weights: the decoder is the encoder's W transposed
    loss:     mse            L = 1/(n d) sum (r - x)^2          g = identity (real-valued, standardized inputs)
              cross_entropy  L = 1/(n d) sum -x log r - (1 - x) log(1 - r)   g = sigmoid, inputs in [0, 1]

x~ is x with denoising corruption (Vincent et al. 2008, masking noise): each entry set to 0 with probability
`noise`, drawn from an explicit Generator; the loss compares r with the clean x. On standardized inputs 0 is
the feature's mean, so a masked entry carries no information, as a zeroed pixel did in Vincent et al.

Tied weights, as in Vincent et al. (2008) and the tied variant of Bengio et al. (2007): half the parameters,
the decoder cannot undo an arbitrary encoder (so W itself must carry the structure: it is what fine-tuning
starts from), and the decoder bias c is the only parameter thrown away after pretraining. The gradient of W
has both parts: x~^T dz (through the encoder) + ds^T h (through the transposed decoder).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from pipeline.engine.layer import Layer

RECON_LOSSES = ("mse", "cross_entropy")


def corrupt(x: np.ndarray, noise: float, rng: np.random.Generator | None) -> np.ndarray:
    """Masking noise: a copy of x with each entry zeroed with probability `noise` (x itself when noise is 0)."""
    if noise <= 0.0:
        return x
    if rng is None:
        raise ValueError("denoising (noise > 0) needs an explicit random Generator")
    keep = rng.random(x.shape) >= noise  # (batch, features)
    return x * keep


class Autoencoder:
    """Tied-weight autoencoder around `encoder`; `params`/`grads` hold W and b (the encoder's own arrays) and c.

    Training it updates the encoder layer in place: after pretraining, the layer goes into the network as is.
    """

    def __init__(self, encoder: Layer, loss: str = "mse", noise: float = 0.0):
        if loss not in RECON_LOSSES:
            raise ValueError(f"unknown reconstruction loss {loss!r}; allowed: {', '.join(RECON_LOSSES)}")
        if not 0.0 <= noise < 1.0:
            raise ValueError(f"noise must be in [0, 1), got {noise}")
        if encoder.norm is not None or encoder.residual or "b" not in encoder.params:
            raise ValueError("an autoencoder's encoder is a plain dense + activation layer (no batch norm, no skip)")
        self.encoder = encoder
        self.loss = loss
        self.noise = float(noise)
        fan_in = encoder.W.shape[0]
        self.params = {"W": encoder.params["W"], "b": encoder.params["b"]}
        self.params["c"] = np.zeros(fan_in, dtype=encoder.W.dtype)  # (fan_in,) decoder bias
        self.grads = {"W": encoder.grads["W"], "b": encoder.grads["b"], "c": np.zeros_like(self.params["c"])}
        self.encoder.dense.need_input_grad = False  # nothing below the layer being trained learns

    def center_decoder(self, x: np.ndarray) -> None:
        """Set c so the decoder's pre-activation at the mean code is the mean input: c = mean(x) - mean(h) W^T.

        The autoencoder then starts near the trivial reconstruction (every input by the mean input) instead of
        spending its first epochs learning an offset: the codes of a sigmoid layer sit near 0.5, so h W^T alone is
        far from inputs of any mean. (With cross-entropy this centres the logits, not the sigmoid's output.)
        """
        h = self.encode(x)
        c = x.mean(axis=0) - h.mean(axis=0) @ self.params["W"].T  # (fan_in,)
        np.copyto(self.params["c"], c, casting="same_kind")

    def reconstruct(self, x_in: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(h, s, r): the code, the decoder's pre-activation and the reconstruction of x_in."""
        h = self.encoder.forward(x_in, train=True)  # (batch, width)
        s = h @ self.params["W"].T  # (batch, fan_in)
        s += self.params["c"]
        r = expit(s) if self.loss == "cross_entropy" else s
        return h, s, r

    def value(self, x_in: np.ndarray, target: np.ndarray) -> float:
        """The reconstruction loss of target from x_in (no gradients)."""
        _, s, r = self.reconstruct(x_in)
        return self._loss(s, r, target)

    def _loss(self, s: np.ndarray, r: np.ndarray, target: np.ndarray) -> float:
        if self.loss == "cross_entropy":
            # -x log sigmoid(s) - (1 - x) log(1 - sigmoid(s)) = softplus(s) - x s, stable for large |s|
            return float(np.mean(np.logaddexp(0.0, s) - target * s))
        diff = r - target
        return float(np.vdot(diff, diff)) / diff.size

    def loss_and_grads(self, x_in: np.ndarray, target: np.ndarray) -> float:
        """Forward and backward on a batch (x_in the corrupted input, target the clean one); fills `grads`."""
        h, s, r = self.reconstruct(x_in)
        value = self._loss(s, r, target)
        # dL/ds: mse with identity g: 2 (r - x) / (n d); cross-entropy with sigmoid g: (r - x) / (n d)
        ds = r - target  # (batch, fan_in)
        ds *= (2.0 if self.loss == "mse" else 1.0) / ds.size
        W = self.params["W"]
        np.sum(ds, axis=0, out=self.grads["c"])
        dh = ds @ W  # (batch, width): through the transposed decoder
        self.encoder.backward(dh)  # writes x~^T dz into grads W and dz summed into grads b
        self.grads["W"] += ds.T @ h  # the decoder's share of the tied weight, (fan_in, width)
        return value

    def step(self, x: np.ndarray, optimizer, rng: np.random.Generator | None = None) -> float:
        """One update on the clean batch x (corrupted here when noise > 0); returns the batch loss."""
        value = self.loss_and_grads(corrupt(x, self.noise, rng), x)
        optimizer.step(self.params, self.grads)
        return value

    def encode(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """The (clean) codes of x: the input of the next layer up, computed in chunks."""
        parts = [self.encoder.forward(x[i : i + batch_size], train=False) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.empty((0, self.encoder.W.shape[1]), dtype=self.encoder.W.dtype)

    def evaluate(self, x: np.ndarray, batch_size: int = 4096) -> float:
        """Mean reconstruction loss of clean x (no corruption), in chunks."""
        total = 0.0
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            total += self.value(xb, xb) * len(xb)
        return total / len(x) if len(x) else float("nan")


def check_autoencoder(
    ae: Autoencoder, x: np.ndarray, rng: np.random.Generator | None = None, h: float = 1e-4, kink_margin: float = 1e-2
) -> list:
    """Backprop against central differences for W, b and c (a float64 autoencoder), like engine.gradcheck.

    The corruption is drawn once (from `rng`) and held fixed: the checked function is the loss of the clean x
    from that corrupted input. Examples within `kink_margin` of a ReLU kink are dropped first.
    """
    from pipeline.engine.gradcheck import compare_tensors

    if ae.params["W"].dtype != np.float64:
        raise ValueError("gradient checks need a float64 autoencoder: float32 round-off swamps the differences")
    x_in = corrupt(x, ae.noise, rng)
    if ae.encoder.activation.kink_at_zero:
        ae.reconstruct(x_in)
        keep = np.abs(ae.encoder.cache["z"]).min(axis=1) > kink_margin
        if keep.sum() < 2:
            raise ValueError(f"no 2 examples stay {kink_margin:g} away from every ReLU kink")
        x, x_in = x[keep], x_in[keep]
    ae.loss_and_grads(x_in, x)
    analytic = {k: g.copy() for k, g in ae.grads.items()}
    f_value = ae.value(x_in, x)
    return compare_tensors(ae.params, analytic, lambda: ae.value(x_in, x), f_value, h, lambda w: np.arange(w.size))
