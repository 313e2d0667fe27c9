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

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from pipeline.engine.activations import Activation, Identity, ReLU, Sigmoid, Tanh
from pipeline.engine.initializers import Initializer
from pipeline.engine.layer import Layer


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


class _Cache(dict):
    """A cell's cache: entries registered with `later` are computed on their first read, then kept."""

    def __init__(self) -> None:
        super().__init__()
        self._later: dict[str, Callable[[], np.ndarray]] = {}

    def later(self, key: str, make: Callable[[], np.ndarray]) -> None:
        self.pop(key, None)
        self._later[key] = make

    def __missing__(self, key: str) -> np.ndarray:
        value = self[key] = self._later.pop(key)()  # KeyError for a key never set
        return value


def _rows(steps: np.ndarray) -> np.ndarray:
    """(time, H, batch) -> (batch*time, H): one row per step of each example, examples first (a copy)."""
    t, h, b = steps.shape
    out = np.empty((b, t, h), dtype=steps.dtype)
    for s in range(t):  # step by step: one (H, batch) block at a time stays in cache, a whole-array transpose does not
        out[:, s] = steps[s].T
    return out.reshape(b * t, h)


def _columns(steps: np.ndarray) -> np.ndarray:
    """(time, H, batch) -> (H, time*batch): every step of every example as one column (a cheap copy)."""
    t, h, b = steps.shape
    return np.ascontiguousarray(steps.transpose(1, 0, 2)).reshape(h, t * b)


def _norms(a: np.ndarray) -> np.ndarray:
    """(steps, H, batch) -> (steps,): the Euclidean norm of each step's slice, float64."""
    return np.linalg.norm(a.reshape(len(a), -1), axis=1).astype(np.float64)


class Recurrent:
    """The shared part of the cells: parameters, gradient buffers, truncation, per-step gradient norms.

    The time loops keep every array as (time, units, batch): a step's slice, and each gate block of it, is one
    contiguous block, so a step is a few whole-array NumPy calls (products W^T h_{s-1}, elementwise work in
    place) into buffers allocated once per pass. The cache holds those arrays under `*_tm` keys; `hs`, `cs`,
    `gates`, `zs`, `tcs` are (batch, time, ...) views of them; the probes' `z` and `a`, (batch*time, H), are
    copied on first read.
    """

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
        self.cache = _Cache()
        self._dpre: np.ndarray | None = None  # (time, G*H, batch): dL/d(pre-activation) of the last backward
        self._dz: np.ndarray | None = None  # the same as (batch*time, G*H) rows, made when `dz` is read
        self.dh_norms = np.zeros(0)  # (time,): ||dL/dh_t|| of the last backward, t = 1..T
        self.dh0: np.ndarray | None = None  # (batch, H): dL/dh_0, the gradient reaching the initial state

    @property
    def W(self) -> np.ndarray:
        """The input weights (fan_in, G*H): what the per-layer weight probes of an MLP layer read as W."""
        return self.params["W_xh"]

    def window(self, steps: int) -> int:
        """The first step (0-based) that backward reaches: 0 for full BPTT, T - k when truncated to k."""
        return 0 if self.bptt is None else max(0, steps - self.bptt)

    def _project(self, x: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        """W_xh^T x_t + b of every step, (time, G*H, batch): one product per step, all in one call.

        `scale` (G*H,) multiplies the result's rows, through the weights (a small product, not a big one).
        """
        w, bias = self.params["W_xh"], self.params["b"]
        if scale is not None:
            w, bias = w * scale, bias * scale
        xs = np.ascontiguousarray(x.transpose(1, 2, 0))  # (time, F, batch)
        pre = np.matmul(w.T, xs)  # (time, G*H, batch)
        pre += bias[:, None]
        return pre

    def _states(self, t: int, b: int, state0: np.ndarray | None) -> np.ndarray:
        """An empty (time+1, H, batch) state buffer holding the initial state (0 or given) at step 0."""
        states = np.empty((t + 1, self.hidden, b), dtype=self.dtype)
        states[0] = 0.0 if state0 is None else state0.T
        return states

    def _keep(self, x: np.ndarray, hs: np.ndarray, z: np.ndarray, **steps: np.ndarray) -> None:
        """Cache the forward pass: x, hidden states, `steps` (time-major), their (batch, time, ...) views.

        `z` (time, H, batch) is what the probes read as the layer's pre-activation: the RNN's, the LSTM's c_t.
        """
        self.cache.clear()
        self.cache.update(x=x, h_tm=hs, hs=hs.transpose(2, 0, 1))
        for name, a in steps.items():
            self.cache[f"{name}_tm"], self.cache[name] = a, a.transpose(2, 0, 1)
        # the probes' view: every step of every example is one example, (batch*time, H)
        self.cache.later("z", lambda: _rows(z))
        self.cache.later("a", lambda: _rows(hs[1:]))

    def _weight_grads(self, dpre: np.ndarray) -> None:
        """dW_xh, dW_hh, db from dL/d(pre-activation) (time, G*H, batch), zero outside the window: one product each."""
        x, hs = self.cache["x"], self.cache["h_tm"]  # (batch, time, F), (time+1, H, batch)
        t = dpre.shape[0]
        d = _columns(dpre)  # (G*H, time*batch)
        np.matmul(_columns(x.transpose(1, 2, 0)), d.T, out=self.grads["W_xh"])  # (fan_in, G*H)
        np.matmul(_columns(hs[:t]), d.T, out=self.grads["W_hh"])  # (H, G*H): h_{s-1}
        np.sum(d, axis=1, out=self.grads["b"])  # (G*H,)
        self._dpre = dpre
        self._dz = None

    @property
    def dz(self) -> np.ndarray | None:
        """dL/d(pre-activation) of the last backward, (batch*time, G*H), zero outside the window (copied on read)."""
        if self._dz is None and self._dpre is not None:
            self._dz = _rows(self._dpre)
        return self._dz


def _into(activation: Activation):
    """f(z, out=...) for the activations NumPy/SciPy compute in place, else f(z) copied into `out`."""
    if type(activation) is Tanh:
        return np.tanh
    if type(activation) is Sigmoid:
        return expit
    if type(activation) is ReLU:
        return lambda z, out: np.maximum(z, 0.0, out=out)

    def copy_into(z, out):
        out[...] = activation.fn(z)

    return copy_into


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
        w_t, f = self.params["W_hh"].T, _into(self.activation)  # (H, H)
        z = self._project(x)  # (time, H, batch): W_xh^T x_t + b, then + W_hh^T h_{t-1} in place
        hs = self._states(t, b, None if state0 is None else state0[0])  # (time+1, H, batch)
        rec = np.empty((self.hidden, b), dtype=self.dtype)  # (H, batch): W_hh^T h_{s-1}
        for s in range(t):
            np.matmul(w_t, hs[s], out=rec)
            z[s] += rec
            f(z[s], out=hs[s + 1])
        self._keep(x, hs, z, zs=z)
        return np.ascontiguousarray(hs[t].T)

    def state(self, step: int) -> tuple[np.ndarray, ...]:
        """(h_step,) of the last forward: the state after `step` steps (0 = the initial state)."""
        return (self.cache["h_tm"][step].T.copy(),)

    def backward(self, dh_last: np.ndarray) -> None:
        """Backprop through time from dL/dh_T (batch, H) to the parameters' gradients."""
        z, hs, w_hh = self.cache["zs_tm"], self.cache["h_tm"], self.params["W_hh"]
        t, h, b = z.shape
        start = self.window(t)
        # f'(z_s) of every step in the window at once, overwritten step by step with dL/dz_s = dL/dh_s f'(z_s)
        dzw = self.activation.grad(z[start:], hs[start + 1 :])  # (window, H, batch)
        dz = dzw if start == 0 else np.concatenate([np.zeros_like(z[:start]), dzw])  # (time, H, batch)
        dzw = dz[start:]
        dhs = np.empty((t - start + 1, h, b), dtype=self.dtype)  # dhs[k] = dL/dh_{start+k}, total
        dhs[-1] = dh_last.T
        for k in range(t - start - 1, -1, -1):  # step s = start + k
            np.multiply(dhs[k + 1], dzw[k], out=dzw[k])
            if k or start == 0:  # dL/dh_{start} is needed only as dL/dh_0
                np.matmul(w_hh, dzw[k], out=dhs[k])
        self.dh_norms = np.zeros(t)
        self.dh_norms[start:] = _norms(dhs[1:])
        self.dh0 = dhs[0].T if start == 0 else None
        self._weight_grads(dz)


class LSTMCell(Recurrent):
    """Hochreiter & Schmidhuber's LSTM with a forget gate (Gers et al.), gate blocks i, f, o, g:

    i, f, o = sigmoid(.), g = tanh(.) of x_t W_xh + h_{t-1} W_hh + b; c_t = f c_{t-1} + i g; h_t = o tanh(c_t).
    The three sigmoids go through tanh, sigmoid(a) = (1 + tanh(a / 2)) / 2, so each step activates all four
    blocks in one tanh call: their pre-activations come halved from weights halved once per forward (exact:
    a product by 0.5 only shifts the exponent).
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
        self._half = np.ones(4 * hidden, dtype=self.dtype)  # (4H,): 1/2 on the sigmoid blocks, 1 on g
        self._half[: 3 * hidden] = 0.5

    def forward(self, x: np.ndarray, train: bool = True, state0: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
        b, t, _ = x.shape
        h = self.hidden
        w_t = (self.params["W_hh"] * self._half).T  # (4H, H): a / 2 for i, f, o, a for g
        gates = self._project(x, self._half)  # (time, 4H, batch): pre-activations, activated in place below
        hs = self._states(t, b, None if state0 is None else state0[0])  # (time+1, H, batch)
        cs = self._states(t, b, None if state0 is None else state0[1])  # (time+1, H, batch): cell states
        tcs = np.empty((t, h, b), dtype=self.dtype)  # (time, H, batch): tanh(c_t)
        rec = np.empty((4 * h, b), dtype=self.dtype)  # (4H, batch): W_hh^T h_{s-1}
        ig = np.empty((h, b), dtype=self.dtype)  # (H, batch): i g
        for s in range(t):
            g = gates[s]  # (4H, batch)
            np.matmul(w_t, hs[s], out=rec)
            g += rec
            np.tanh(g, out=g)
            sig = g[: 3 * h]  # tanh(a / 2) -> sigmoid(a) for i, f, o
            sig *= 0.5
            sig += 0.5
            np.multiply(g[h : 2 * h], cs[s], out=cs[s + 1])
            np.multiply(g[:h], g[3 * h :], out=ig)
            cs[s + 1] += ig
            np.tanh(cs[s + 1], out=tcs[s])
            np.multiply(g[2 * h : 3 * h], tcs[s], out=hs[s + 1])
        # the probes read the cell states as the layer's "z"
        self._keep(x, hs, cs[1:], gates=gates, cs=cs, tcs=tcs)
        return np.ascontiguousarray(hs[t].T)

    def state(self, step: int) -> tuple[np.ndarray, ...]:
        """(h_step, c_step) of the last forward."""
        return self.cache["h_tm"][step].T.copy(), self.cache["cs_tm"][step].T.copy()

    def backward(self, dh_last: np.ndarray) -> None:
        gates, cs, tcs = self.cache["gates_tm"], self.cache["cs_tm"], self.cache["tcs_tm"]
        w_hh = self.params["W_hh"]  # (H, 4H)
        t, h, b = tcs.shape
        start = self.window(t)
        act = gates[start:]  # (window, 4H, batch): i, f, o, g of every step in the window
        i, f, o, g = (act[:, k * h : (k + 1) * h] for k in range(4))
        tc = tcs[start:]  # (window, H, batch)
        # Every step's local derivatives at once. dL/d(pre-activation) of i, f, g is dL/dc_s times
        # k_i = s'(i) g, k_f = s'(f) c_{s-1}, k_g = i tanh'(g) (s' = s(1 - s), tanh' = 1 - g^2); o's is dL/dh_s
        # times k_o = s'(o) tanh(c_s); and dL/dc_s gets dL/dh_s times o tanh'(c_s). k lives where dpre goes.
        dpre = np.empty_like(gates)  # (time, 4H, batch); zero before the window
        dpre[:start] = 0.0
        k = dpre[start:]  # (window, 4H, batch)
        np.subtract(1.0, act[:, : 3 * h], out=k[:, : 3 * h])
        k[:, : 3 * h] *= act[:, : 3 * h]  # s'(i), s'(f), s'(o)
        k_o = k[:, 2 * h : 3 * h] * tc  # (window, H, batch), kept apart: the o block is overwritten per step
        k[:, :h] *= g
        k[:, h : 2 * h] *= cs[start:t]
        kg = k[:, 3 * h :]
        np.multiply(g, g, out=kg)
        np.subtract(1.0, kg, out=kg)
        kg *= i
        o_dtc = tc * tc  # (window, H, batch): o tanh'(c_s)
        np.subtract(1.0, o_dtc, out=o_dtc)
        o_dtc *= o
        dhs = np.empty((t - start + 1, h, b), dtype=self.dtype)  # dhs[j] = dL/dh_{start+j}, total
        dcs = np.empty((t - start, h, b), dtype=self.dtype)  # dcs[j] = dL/dc_{start+j+1}, total
        dhs[-1] = dh_last.T
        carry = np.empty((h, b), dtype=self.dtype)  # (H, batch): dL/dc_{s+1} f_{s+1}
        k4 = k.reshape(t - start, 4, h, b)  # (window, 4, H, batch): the gate blocks as an axis
        for j in range(t - start - 1, -1, -1):  # step s = start + j
            dc = dcs[j]
            np.multiply(dhs[j + 1], o_dtc[j], out=dc)
            if j < t - start - 1:
                np.multiply(dcs[j + 1], f[j + 1], out=carry)
                dc += carry
            k4[j] *= dc  # i, f, (o), g: dL/d(pre-activation)
            np.multiply(k_o[j], dhs[j + 1], out=k4[j, 2])  # o
            if j or start == 0:  # dL/dh_{start} is needed only as dL/dh_0
                np.matmul(w_hh, k[j], out=dhs[j])
        self.dh_norms, self.dc_norms = np.zeros(t), np.zeros(t)
        self.dh_norms[start:] = _norms(dhs[1:])
        self.dc_norms[start:] = _norms(dcs)
        self.dh0 = dhs[0].T if start == 0 else None
        self._weight_grads(dpre)

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
        """[in_dim, H, G*H, out_dim]: what the BLAS thread choice reads, the per-step product H -> G*H included."""
        w_xh = self.cell.params["W_xh"]  # (in_dim, G*H)
        return [w_xh.shape[0], self.cell.hidden, w_xh.shape[1], self.output.W.shape[1]]

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
