"""Central finite differences against the analytic gradients of the network's objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.engine.losses import Loss
from pipeline.engine.model import Network
from pipeline.engine.recurrent import RecurrentNet
from pipeline.engine.regularizers import Regularizer

# a tensor whose gradient is this many times smaller than the network's largest one, and whose
# disagreement is within round-off, is reported as negligible: central differences resolve a gradient
# g only to ~ eps * f / (h * g), so ~1e-7 gradients (batch norm's near scale invariance with
# 2 examples or 1 input feature, gamma in a linear net with batch norm) cannot be checked to 1e-6.
NEGLIGIBLE = 1e-5


@dataclass
class TensorCheck:
    """Result for one parameter tensor."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    analytic_norm: float
    numeric_norm: float
    diff_norm: float  # ||analytic - numeric||
    noise_floor: float  # what round-off alone can put into ||analytic - numeric||
    largest_norm: float = 0.0  # the largest analytic gradient norm among the network's tensors

    @property
    def negligible(self) -> bool:
        """Zero or negligibly small on both sides, and equal within round-off."""
        tiny = self.analytic_norm + self.numeric_norm <= NEGLIGIBLE * self.largest_norm
        zero = self.analytic_norm <= self.noise_floor and self.numeric_norm <= self.noise_floor
        return (tiny or zero) and self.diff_norm <= self.noise_floor

    @property
    def rel_error(self) -> float:
        """||a - n|| / (||a|| + ||n||); 0 for a negligible gradient (see NEGLIGIBLE)."""
        denom = self.analytic_norm + self.numeric_norm
        return 0.0 if self.negligible or denom == 0.0 else self.diff_norm / denom


def objective(
    net: Network, loss: Loss, regularizer: Regularizer | None, x: np.ndarray, y: np.ndarray, state0=None
) -> float:
    """Mean batch loss plus penalty: the function whose gradient the engine computes.

    `state0`: a recurrent net's initial state, held fixed (what truncated backprop through time differentiates).
    """
    if state0 is None:
        logits = net.forward(x, train=True)
    else:
        assert isinstance(net, RecurrentNet)
        logits = net.forward(x, train=True, state0=state0)
    value = loss.value(logits, y)
    if regularizer is not None:
        value += regularizer.penalty([net.params[k] for k in net.weight_keys])
    return value


def analytic_gradients(net, loss, regularizer, x, y) -> dict[str, np.ndarray]:
    """Backprop gradients of `objective`, copied out of the network's buffers."""
    _, dlogits = loss(net.forward(x, train=True), y)
    net.backward(dlogits)
    grads = {k: g.copy() for k, g in net.grads.items()}
    if regularizer is not None:
        for k in net.weight_keys:
            grads[k] += regularizer.grad(net.params[k])
    return grads


def kink_distance(net: Network, loss: Loss, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per example, the smallest distance of any kinked pre-activation or hinge margin from its kink."""
    logits = net.forward(x, train=True)
    dist = loss.kink_distance(logits, y)
    for layer in net.layers:
        if layer.activation.kink_at_zero:
            # (batch, width), or a recurrent layer's (batch*time, H): every step of an example counts
            dist = np.minimum(dist, np.abs(layer.cache["z"]).reshape(len(dist), -1).min(axis=1))
    return dist


def away_from_kinks(net, loss, x, y, margin: float, min_examples: int = 2, rounds: int = 20):
    """Drop the examples that sit within `margin` of a kink (ReLU at 0, hinge margin at 0).

    Finite differences across a kink measure neither one-sided derivative, so a check there would
    fail a correct backprop. Batch norm couples examples, hence the repeat until the batch is clean.
    """
    for _ in range(rounds):
        keep = kink_distance(net, loss, x, y) > margin
        if keep.all():
            return x, y
        if keep.sum() < min_examples:
            break
        x, y = x[keep], y[keep]
    raise ValueError(
        f"no batch of >= {min_examples} examples stays {margin:g} away from every ReLU/hinge kink "
        "(a zeros or constant init puts every unit on the kink): use another init"
    )


def nudge_from_zero(net: Network, regularizer: Regularizer | None, margin: float) -> None:
    """Move weights within `margin` of 0 out to +-margin, where |w| of l1/elastic is differentiable."""
    if regularizer is None or not regularizer.kink_at_zero:
        return
    for k in net.weight_keys:
        w = net.params[k]
        near = np.abs(w) < margin
        w[near] = np.where(w[near] < 0, -margin, margin)


# the fourth-order central stencil: (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h. Its truncation error
# is O(h^4), so h can be 100x larger than for the two-point rule, and round-off (~ eps * f / h)
# 100x smaller: small true gradients (batch norm's near scale invariance) stay measurable.
STENCIL = ((-2.0, 1.0), (-1.0, -8.0), (1.0, 8.0), (2.0, -1.0))
STENCIL_DENOM = 12.0


def numerical_gradient(f, w: np.ndarray, h: float, entries: np.ndarray) -> np.ndarray:
    """Central differences of f at the flat indices `entries` of w (modified in place, then restored)."""
    flat = w.reshape(-1)  # a view: writes go to the network's array
    out = np.empty(len(entries))
    for j, i in enumerate(entries):
        original = flat[i]
        total = 0.0
        for offset, weight in STENCIL:
            flat[i] = original + offset * h
            total += weight * f()
        flat[i] = original
        out[j] = total / (STENCIL_DENOM * h)
    return out


def noise_floor(f_value: float, h: float, entries: int) -> float:
    """Norm that round-off alone puts into `entries` central differences: ~ 100 ulp of f over h each.

    Measured disagreements of correct gradients stay ~100x below it; a wrong gradient exceeds it
    by the size of the gradient itself.
    """
    return 100.0 * np.finfo(np.float64).eps * max(1.0, abs(f_value)) / h * np.sqrt(entries)


def check_gradients(
    net: Network,
    loss: Loss,
    regularizer: Regularizer | None,
    x: np.ndarray,
    y: np.ndarray,
    h: float = 1e-4,
    max_entries: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[TensorCheck]:
    """Compare every parameter tensor's backprop gradient with central differences (float64 nets).

    `max_entries` samples that many entries per tensor (all when None). A recurrent net with truncated
    backprop through time (`bptt = k`) is checked against the objective it differentiates: the last k steps
    from the state before them, that state held fixed.
    """
    if net.dtype != np.float64:
        raise ValueError("gradient checks need a float64 network: float32 round-off swamps the differences")
    analytic = analytic_gradients(net, loss, regularizer, x, y)
    x_num, state0 = net.stopped_prefix(x) if isinstance(net, RecurrentNet) else (x, None)
    f_value = objective(net, loss, regularizer, x_num, y, state0)
    rng = rng or np.random.default_rng(0)

    def entries_for(w: np.ndarray) -> np.ndarray:
        if max_entries is None or w.size <= max_entries:
            return np.arange(w.size)
        return np.sort(rng.choice(w.size, size=max_entries, replace=False))

    return compare_tensors(
        net.params, analytic, lambda: objective(net, loss, regularizer, x_num, y, state0), f_value, h, entries_for
    )


def compare_tensors(
    params: dict[str, np.ndarray],
    analytic: dict[str, np.ndarray],
    value: Callable[[], float],
    f_value: float,
    h: float,
    entries_for: Callable[[np.ndarray], np.ndarray],
) -> list[TensorCheck]:
    """Each tensor's analytic gradient against central differences of `value()` on the entries `entries_for`
    picks; every check knows the largest analytic norm (what "negligible" is relative to)."""
    results = []
    for name, w in params.items():
        entries = entries_for(w)
        numeric = numerical_gradient(value, w, h, entries)
        a = analytic[name].reshape(-1)[entries]
        results.append(
            TensorCheck(
                name,
                w.shape,
                len(entries),
                float(np.linalg.norm(a)),
                float(np.linalg.norm(numeric)),
                float(np.linalg.norm(a - numeric)),
                float(noise_floor(f_value, h, len(entries))),
            )
        )
    largest = max(c.analytic_norm for c in results)
    for c in results:
        c.largest_norm = largest
    return results
