"""Recurrent networks by hand: a vanilla RNN cell and an LSTM cell, full or truncated backprop through time.

Layout: x is (batch, time, features); the network reads out from the last hidden state h_T through a linear
(Dense + identity) output layer: many-to-one, for classification (logits) and regression (one output).

Parameters follow the MLP's naming: `layer_01.W_xh` (features, G*H), `layer_01.W_hh` (H, G*H), `layer_01.b`
(G*H,) with G = 1 for the RNN and G = 4 for the LSTM (gate blocks in the order input, forget, output,
candidate: the three sigmoids side by side), then the output layer's `layer_02.W`, `layer_02.b`. Only the
W's are weights (penalties, decay).

After `backward` the recurrent layer keeps `dh_norms` (time,): ||dL/dh_t|| over the batch for t = 1..T (the
total derivative, through every later step), the quantity of the vanishing/exploding-gradient-through-time
story; with truncation (`bptt = k`) the steps before the last k get no gradient and their norm is 0.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.engine.activations import Activation, Identity
from pipeline.engine.initializers import Initializer
from pipeline.engine.layer import Layer


def _sigmoid_(z: np.ndarray) -> None:
    """sigmoid(z) = (1 + tanh(z / 2)) / 2 in place: stable for any z, and in float32 faster than scipy's expit."""
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5


def _orthogonal_block(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random n x n orthogonal matrix (float64): every eigenvalue has modulus 1."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))  # (n, n), (n, n)
    return q * np.sign(np.diag(r))


def recurrent_weights(kind: str, hidden: int, blocks: int, gain: float, rng: np.random.Generator, dtype) -> np.ndarray:
    """W_hh (hidden, blocks * hidden): each (hidden, hidden) block orthogonal or identity times `gain`.

    Either way every block's spectral radius (largest |eigenvalue|) is exactly `gain` (Le, Jaitly &
    Hinton's IRNN is `identity` with gain 1; Saxe et al.'s orthogonal init with gain rho for Pascanu et al.'s
    condition rho < 1 vanishing, rho > 1 exploding).
    """
    if kind not in RECURRENT_INITS:
        raise ValueError(f"unknown recurrent init {kind!r}; allowed: {', '.join(RECURRENT_INITS)}")
    if not gain >= 0:
        raise ValueError(f"recurrent_gain must be >= 0, got {gain}")
    make = _orthogonal_block if kind == "orthogonal" else (lambda n, _rng: np.eye(n))
    w = np.concatenate([make(hidden, rng) for _ in range(blocks)], axis=1)  # (hidden, blocks * hidden)
    return (gain * w).astype(dtype)


RECURRENT_INITS = ("orthogonal", "identity")


def spectral_radius(w_hh: np.ndarray, block: int = 0) -> float:
    """Largest |eigenvalue| of W_hh's `block`-th (hidden, hidden) block (the only one for the RNN)."""
    h = w_hh.shape[0]
    return float(np.abs(np.linalg.eigvals(w_hh[:, block * h : (block + 1) * h].astype(np.float64))).max())


class Recurrent:
    """The shared part of the cells: parameters, gradient buffers, truncation, per-step gradient norms."""

    gates = 1  # blocks of hidden units in W_xh, W_hh, b
    weight_names = ("W_xh", "W_hh")

    def __init__(
        self,
        fan_in: int,
        hidden: int,
        init: Initializer,
        rng: np.random.Generator,
        dtype=np.float32,
        recurrent_init: str = "orthogonal",
        recurrent_gain: float = 1.0,
        bptt: int | None = None,
    ):
        if fan_in < 1 or hidden < 1:
            raise ValueError(f"impossible recurrent shape: fan_in={fan_in}, hidden={hidden}")
        if bptt is not None and bptt < 1:
            raise ValueError(f"bptt must be >= 1 or None (full backprop through time), got {bptt}")
        self.hidden, self.bptt, self.dtype = hidden, bptt, np.dtype(dtype)
        g = self.gates * hidden
        self.params: dict[str, np.ndarray] = {
            "W_xh": init(fan_in, g, rng, dtype),  # (fan_in, G*H), the usual `init` group
            "W_hh": recurrent_weights(recurrent_init, hidden, self.gates, recurrent_gain, rng, dtype),  # (H, G*H)
            "b": np.zeros(g, dtype=dtype),  # (G*H,)
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.cache: dict[str, np.ndarray] = {}
        self.dz: np.ndarray | None = None  # (batch*time, G*H): dL/d(pre-activation) of the last backward
        self.dh_norms = np.zeros(0)  # (time,): ||dL/dh_t|| of the last backward, t = 1..T
        self.dh0: np.ndarray | None = None  # (batch, H): dL/dh_0, the gradient reaching the initial state

    @property
    def W(self) -> np.ndarray:
        """The input weights (fan_in, G*H): what the per-layer weight probes of an MLP layer read as W."""
        return self.params["W_xh"]

    def window(self, steps: int) -> int:
        """The first step (0-based) that backward reaches: 0 for full BPTT, T - k when truncated to k."""
        return 0 if self.bptt is None else max(0, steps - self.bptt)

    def _project(self, x: np.ndarray) -> np.ndarray:
        """x W_xh + b for every step in one product: (batch, time, G*H)."""
        b, t, f = x.shape
        xp = x.reshape(b * t, f) @ self.params["W_xh"]  # (batch*time, G*H)
        xp += self.params["b"]
        return xp.reshape(b, t, -1)

    def _recurrent_grad(self, dpre: np.ndarray) -> None:
        """dW_hh = sum_t h_{t-1}^T dpre_t in one product over every step (dpre is zero outside the window)."""
        hs = self.cache["hs"]  # (batch, time+1, H)
        b, t, _ = dpre.shape
        prev = hs[:, :t].reshape(b * t, self.hidden)  # (batch*time, H): h_{t-1} (a copy: hs[:, :t] is strided)
        np.matmul(prev.T, dpre.reshape(b * t, -1), out=self.grads["W_hh"])  # (H, G*H)

    def _input_grads(self, dpre: np.ndarray) -> None:
        """dW_xh and db from dL/d(pre-activation) of every step (zero outside the truncation window)."""
        x = self.cache["x"]  # (batch, time, fan_in)
        b, t, f = x.shape
        flat = dpre.reshape(b * t, -1)  # (batch*time, G*H)
        np.matmul(x.reshape(b * t, f).T, flat, out=self.grads["W_xh"])  # (fan_in, G*H)
        np.sum(flat, axis=0, out=self.grads["b"])  # (G*H,)
        self.dz = flat


class RNNCell(Recurrent):
    """h_t = f(x_t W_xh + h_{t-1} W_hh + b), h_0 = 0 (or a given state), f = tanh, relu, sigmoid, ..."""

    def __init__(
        self, fan_in: int, hidden: int, activation: Activation, init: Initializer, rng, dtype=np.float32, **kw
    ):
        super().__init__(fan_in, hidden, init, rng, dtype, **kw)
        self.activation = activation

    def forward(self, x: np.ndarray, train: bool = True, state0: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """h_T (batch, H) from x (batch, time, fan_in); caches every step for backward and the probes."""
        b, t, _ = x.shape
        w_hh, f = self.params["W_hh"], self.activation.fn
        z = self._project(x)  # (batch, time, H): x_t W_xh + b, then + h_{t-1} W_hh in place
        hs = np.empty((b, t + 1, self.hidden), dtype=self.dtype)  # (batch, time+1, H); hs[:, 0] = h_0
        hs[:, 0] = 0.0 if state0 is None else state0[0]
        for s in range(t):
            z[:, s] += hs[:, s] @ w_hh  # (batch, H)
            hs[:, s + 1] = f(z[:, s])
        self.cache.update(x=x, zs=z, hs=hs)
        # the probes' view: every step of every example is one example, (batch*time, H)
        self.cache["z"], self.cache["a"] = z.reshape(b * t, -1), hs[:, 1:].reshape(b * t, -1)
        return hs[:, t]

    def state(self, step: int) -> tuple[np.ndarray, ...]:
        """(h_step,) of the last forward: the state after `step` steps (0 = the initial state)."""
        return (self.cache["hs"][:, step].copy(),)

    def backward(self, dh_last: np.ndarray) -> None:
        """Backprop through time from dL/dh_T (batch, H) to the parameters' gradients."""
        zs, hs, w_hh = self.cache["zs"], self.cache["hs"], self.params["W_hh"]
        b, t, h = zs.shape
        dz = np.zeros_like(zs)  # (batch, time, H); zero outside the truncation window
        self.dh_norms = np.zeros(t)
        dh = dh_last  # (batch, H): dL/dh_s, total through every later step
        for s in range(t - 1, self.window(t) - 1, -1):
            self.dh_norms[s] = math.sqrt(float(np.vdot(dh, dh)))
            dz[:, s] = self.activation.backprop(dh, zs[:, s], hs[:, s + 1])  # (batch, H)
            dh = dz[:, s] @ w_hh.T  # (batch, H): dL/dh_{s-1} (s = 0: the initial state)
        self.dh0 = dh if self.window(t) == 0 else None
        self._recurrent_grad(dz)
        self._input_grads(dz)


class LSTMCell(Recurrent):
    """Hochreiter & Schmidhuber's LSTM with a forget gate (Gers et al.), gate blocks i, f, o, g:

    i, f, o = sigmoid(.), g = tanh(.) of x_t W_xh + h_{t-1} W_hh + b; c_t = f c_{t-1} + i g; h_t = o tanh(c_t).
    The three sigmoid blocks sit side by side, so each step activates them in one call.
    The forget gate's bias starts at `forget_bias` (1.0, as Jozefowicz et al. 2015 recommend).
    """

    gates = 4
    activation = Identity()  # no single cell activation: probes that need one do not apply

    def __init__(
        self, fan_in: int, hidden: int, init: Initializer, rng, dtype=np.float32, forget_bias: float = 1.0, **kw
    ):
        super().__init__(fan_in, hidden, init, rng, dtype, **kw)
        self.params["b"][hidden : 2 * hidden] = forget_bias
        self.forget_bias = float(forget_bias)
        self.dc_norms = np.zeros(0)  # (time,): ||dL/dc_t|| of the last backward

    def forward(self, x: np.ndarray, train: bool = True, state0: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        b, t, _ = x.shape
        h = self.hidden
        w_hh = self.params["W_hh"]
        gates = self._project(x)  # (batch, time, 4H): pre-activations, activated in place below
        hs = np.empty((b, t + 1, h), dtype=self.dtype)  # (batch, time+1, H)
        cs = np.empty((b, t + 1, h), dtype=self.dtype)  # (batch, time+1, H): cell states
        tcs = np.empty((b, t, h), dtype=self.dtype)  # (batch, time, H): tanh(c_t)
        hs[:, 0] = 0.0 if state0 is None else state0[0]
        cs[:, 0] = 0.0 if state0 is None else state0[1]
        for s in range(t):
            g = gates[:, s]  # (batch, 4H), a view
            g += hs[:, s] @ w_hh
            _sigmoid_(g[:, : 3 * h])  # input, forget, output
            np.tanh(g[:, 3 * h :], out=g[:, 3 * h :])  # candidate
            cs[:, s + 1] = g[:, h : 2 * h] * cs[:, s] + g[:, :h] * g[:, 3 * h :]
            np.tanh(cs[:, s + 1], out=tcs[:, s])
            np.multiply(g[:, 2 * h : 3 * h], tcs[:, s], out=hs[:, s + 1])
        self.cache.update(x=x, gates=gates, hs=hs, cs=cs, tcs=tcs)
        # the probes' view: cell states as "z", hidden states as "a", (batch*time, H)
        self.cache["z"], self.cache["a"] = cs[:, 1:].reshape(b * t, -1), hs[:, 1:].reshape(b * t, -1)
        return hs[:, t]

    def state(self, step: int) -> tuple[np.ndarray, ...]:
        """(h_step, c_step) of the last forward."""
        return self.cache["hs"][:, step].copy(), self.cache["cs"][:, step].copy()

    def backward(self, dh_last: np.ndarray) -> None:
        gates, hs, cs, tcs = (self.cache[k] for k in ("gates", "hs", "cs", "tcs"))
        w_hh = self.params["W_hh"]
        b, t, h = tcs.shape
        start = self.window(t)
        dpre = np.zeros_like(gates)  # (batch, time, 4H): dL/d(pre-activation); zero outside the window
        # every step's activation derivatives at once: sigma' = s(1 - s) for i, f, o; tanh' = 1 - g^2; tanh'(c)
        act = gates[:, start:]  # (batch, window, 4H)
        dact = act * (1.0 - act)  # (batch, window, 4H)
        np.subtract(1.0, act[..., 3 * h :] ** 2, out=dact[..., 3 * h :])
        dtc = 1.0 - tcs[:, start:] ** 2  # (batch, window, H)
        self.dh_norms, self.dc_norms = np.zeros(t), np.zeros(t)
        dh = dh_last  # (batch, H)
        dc = np.zeros_like(dh)  # (batch, H): dL/dc_s through c_{s+1} (none after the last step)
        tmp = np.empty_like(dh)  # (batch, H)
        for s in range(t - 1, start - 1, -1):
            self.dh_norms[s] = math.sqrt(float(np.vdot(dh, dh)))
            gi, gf, go, gg = (gates[:, s, k * h : (k + 1) * h] for k in range(4))  # (batch, H) each
            np.multiply(dh, go, out=tmp)
            tmp *= dtc[:, s - start]
            dc += tmp  # total dL/dc_s
            self.dc_norms[s] = math.sqrt(float(np.vdot(dc, dc)))
            d = dpre[:, s]  # (batch, 4H), a view: dL/d(activated gate), then times its derivative
            np.multiply(dc, gg, out=d[:, :h])  # input gate
            np.multiply(dc, cs[:, s], out=d[:, h : 2 * h])  # forget gate
            np.multiply(dh, tcs[:, s], out=d[:, 2 * h : 3 * h])  # output gate
            np.multiply(dc, gi, out=d[:, 3 * h :])  # candidate
            d *= dact[:, s - start]
            dh = d @ w_hh.T  # (batch, H): dL/dh_{s-1}
            dc *= gf  # dL/dc_{s-1} through c_s
        self.dh0 = dh if start == 0 else None
        self._recurrent_grad(dpre)
        self._input_grads(dpre)

    # --- read-only views for the probes (pipeline/probes/recurrent.py): keep them when forward's buffers change ---

    def forget_gates(self) -> np.ndarray:
        """(batch, time, H): the forget gate f_t of every step of the last forward (a view)."""
        h = self.hidden
        return self.cache["gates"][:, :, h : 2 * h]

    def cell_states(self) -> np.ndarray:
        """(batch, time, H): the cell states c_1..c_T of the last forward (a view)."""
        return self.cache["cs"][:, 1:]


class RecurrentNet:
    """One recurrent layer (RNN or LSTM cell) over the sequence, then a linear output layer on h_T.

    The same interface as `MLP` (params, grads, weight_keys, layers with the output layer last, forward,
    backward, predict), so the Trainer, optimizers, regularizers, clipping and gradient checks work unchanged.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int,
        cell: str,
        init: Initializer,
        rng: np.random.Generator,
        dtype=np.float32,
        activation: Activation | None = None,
        recurrent_init: str = "orthogonal",
        recurrent_gain: float = 1.0,
        bptt: int | None = None,
        forget_bias: float = 1.0,
    ):
        if out_dim < 1:
            raise ValueError(f"impossible shape: out_dim={out_dim}")
        self.dtype = np.dtype(dtype)
        kw = dict(recurrent_init=recurrent_init, recurrent_gain=recurrent_gain, bptt=bptt)
        self.cell: RNNCell | LSTMCell
        if cell == "rnn":
            if activation is None:
                raise ValueError("an RNN cell needs an activation")
            self.cell = RNNCell(in_dim, hidden, activation, init, rng, dtype, **kw)
        elif cell == "lstm":
            self.cell = LSTMCell(in_dim, hidden, init, rng, dtype, forget_bias=forget_bias, **kw)
        else:
            raise ValueError(f"unknown cell {cell!r}; allowed: rnn, lstm")
        self.activation = self.cell.activation
        self.output = Layer(hidden, out_dim, Identity(), init, rng, dtype)
        self.layers: list = [self.cell, self.output]
        self.params = {f"layer_01.{k}": v for k, v in self.cell.params.items()}
        self.params.update({f"layer_02.{k}": v for k, v in self.output.params.items()})
        self.grads = {f"layer_01.{k}": v for k, v in self.cell.grads.items()}
        self.grads.update({f"layer_02.{k}": v for k, v in self.output.grads.items()})
        self.weight_keys = ("layer_01.W_xh", "layer_01.W_hh", "layer_02.W")

    @property
    def bptt(self) -> int | None:
        return self.cell.bptt

    @property
    def sizes(self) -> list[int]:
        """[in_dim, gates * hidden, out_dim]: the widths of the products (for the BLAS thread choice)."""
        return [self.cell.params["W_xh"].shape[0], self.cell.params["W_xh"].shape[1], self.output.W.shape[1]]

    @property
    def hidden(self) -> list:
        return self.layers[:-1]

    def forward(self, x: np.ndarray, train: bool = True, state0: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        """Logits (batch, out_dim) from x (batch, time, in_dim); `state0` = the cell's initial state."""
        if x.ndim != 3:
            raise ValueError(f"a recurrent net takes (batch, time, features), got shape {x.shape}")
        x = x if x.dtype == self.dtype else x.astype(self.dtype)
        return self.output.forward(self.cell.forward(x, train, state0), train)

    def backward(self, dlogits: np.ndarray) -> None:
        dh = self.output.backward(dlogits)  # (batch, H)
        assert dh is not None
        self.cell.backward(dh)

    def stopped_prefix(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """What truncated BPTT differentiates: the last `bptt` steps of x and the state before them, held fixed.

        The truncated gradient of x is the exact gradient of `forward(x_tail, state0=state)` at that state.
        """
        t = x.shape[1]
        start = self.cell.window(t)
        if start == 0:
            return x, None
        self.forward(x, train=True)
        return x[:, start:], self.cell.state(start)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x, train=False).argmax(axis=1)

    def n_params(self) -> int:
        return sum(v.size for v in self.params.values())
