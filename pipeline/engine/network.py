"""The multilayer perceptron: `depth` hidden layers of `width` units and a linear output layer."""

from __future__ import annotations

import numpy as np

from pipeline.engine.activations import Activation, Identity
from pipeline.engine.initializers import Initializer
from pipeline.engine.layer import Layer


def layer_name(index: int) -> str:
    """1-based, zero-padded layer name used in parameter and metric keys: layer_01, layer_02, ..."""
    return f"layer_{index:02d}"


class MLP:
    """Hidden layers 1..depth then the output layer (identity activation) producing logits.

    `params` and `grads` map "layer_XX.W" (and .b, .gamma, .beta) to the layers' own arrays;
    `weight_keys` are the W's, the only parameters that regularizers and weight decay touch.
    With `residual=True` every hidden layer after the first (whose input width differs) is residual.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int,
        width: int,
        activation: Activation,
        init: Initializer,
        rng: np.random.Generator,
        dtype=np.float32,
        batch_norm: bool = False,
        residual: bool = False,
        bias_value: float = 0.0,
    ):
        if depth < 0 or width < 1 or in_dim < 1 or out_dim < 1:
            raise ValueError(f"impossible shape: in_dim={in_dim}, out_dim={out_dim}, depth={depth}, width={width}")
        self.dtype = np.dtype(dtype)
        self.activation = activation
        self.layers: list[Layer] = []
        fan_in = in_dim
        for i in range(depth):
            self.layers.append(
                Layer(
                    fan_in,
                    width,
                    activation,
                    init,
                    rng,
                    dtype,
                    batch_norm=batch_norm,
                    residual=residual and i > 0,
                    bias_value=bias_value,
                )
            )
            fan_in = width
        self.layers.append(Layer(fan_in, out_dim, Identity(), init, rng, dtype, bias_value=0.0))
        self.layers[0].dense.need_input_grad = False
        self.params = {
            f"{layer_name(i)}.{k}": v for i, layer in enumerate(self.layers, 1) for k, v in layer.params.items()
        }
        self.grads = {
            f"{layer_name(i)}.{k}": v for i, layer in enumerate(self.layers, 1) for k, v in layer.grads.items()
        }
        self.weight_keys = tuple(k for k in self.params if k.endswith(".W"))

    @property
    def sizes(self) -> list[int]:
        """Widths from input to output: [in_dim, width, ..., out_dim]."""
        return [self.layers[0].W.shape[0]] + [layer.W.shape[1] for layer in self.layers]

    @property
    def hidden(self) -> list[Layer]:
        return self.layers[:-1]

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Logits (batch, out_dim); caches what backward and the probes read."""
        h = x if x.dtype == self.dtype else x.astype(self.dtype)
        for layer in self.layers:
            h = layer.forward(h, train)
        return h

    def backward(self, dlogits: np.ndarray) -> None:
        """Fill `grads` (and each layer's dz) from dL/dlogits of the last forward pass."""
        d: np.ndarray | None = dlogits
        for layer in reversed(self.layers):
            assert d is not None  # only the first layer returns None (no input gradient)
            d = layer.backward(d)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x, train=False).argmax(axis=1)

    def n_params(self) -> int:
        return sum(v.size for v in self.params.values())
