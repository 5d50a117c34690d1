"""``fastdrop explain``: the inverted-dropout questions of the seed thread, answered by measurement.

Every experiment is a function that runs live on fastdrop and returns its numbers (a frozen
dataclass), so that tests can check them; `format_report` turns them into plain words and `plot`
draws them (matplotlib, the optional extra ``fastdropout[plot]``).

The experiments, in the order of the thread's questions:

1. `why_divide` -- dividing by keep_prob makes magnitudes larger (the thread's own numbers).
2. `expectation` -- the average of many inverted-dropout outputs converges to the activation
   (like 1/sqrt(N)); without the 1/keep_prob factor it converges to keep_prob times it; the
   squared 2-norm is not preserved.
3. `mask_sharing` -- one mask per sample against one mask shared by the batch.
4. `classic_vs_inverted` -- the 2014 paper's dropout (weights times q at test time) and inverted
   dropout give the same network when the learning rate of the weights after a dropout layer is
   multiplied by q**2.
5. `regularisation` -- on a setup that overfits, dropout narrows the train/test gap.
6. `monte_carlo` -- dropout is off at test time, except on purpose (Monte-Carlo dropout).

All training uses one small course-style network, `MLP` (two ReLU hidden layers, each followed
by dropout, and a sigmoid output), trained with full-batch gradient descent on 2-D data made by
`make_moons`.  Everything is deterministic: data and weights come from seeded NumPy generators,
masks from seeded `fastdrop.Stream` objects.

The report reads the same on every CPU.  NumPy's norms, dot products and matrix products go
through BLAS, and OpenBLAS picks its kernels per CPU, each adding in its own order: ||A / 0.8||
is 3.3410134156025215 with OpenBLAS's Haswell kernels and 3.341013415602521 with its SkylakeX
ones.  So experiments 1-3 compute their sums with `math.fsum` and their norms exactly (`_norm`),
which leaves nothing for the CPU to decide; experiments 4-6 train with BLAS matrix products, so
their numbers are printed rounded to a few digits, and the differences that only rounding makes
as a bound (`ROUNDING_LEVEL`).
"""
from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastdrop

__all__ = [
    "KEEP_PROB",
    "MLP",
    "ClassicVsInverted",
    "Expectation",
    "MaskSharing",
    "MonteCarlo",
    "Regularisation",
    "Report",
    "WhyDivide",
    "classic_vs_inverted",
    "expectation",
    "figures",
    "format_report",
    "make_moons",
    "mask_sharing",
    "monte_carlo",
    "plot",
    "regularisation",
    "run",
    "thread_matrix",
    "why_divide",
]

#: keep_prob of the thread's examples (its 1/0.8 = 1.25).
KEEP_PROB = 0.8
#: The sample counts of experiment 2.
AVERAGE_COUNTS = (10, 100, 1_000, 10_000)
#: Significant digits of every norm in the report: the 15 that a float64 holds faithfully
#: (C's DBL_DIG), so that a norm and the product |m| x ||A|| equal to it read the same, where
#: the shortest round-trip form (up to 17 digits) would show the last bit in which two roundings
#: differ.
NORM_DIGITS = 15
#: Differences below this are rounding errors, printed as "< ROUNDING_LEVEL": their digits
#: depend on the CPU's BLAS kernels.
ROUNDING_LEVEL = 1e-12


# ---------------------------------------------------------------------------------------------
# Sums and norms that no CPU can change
# ---------------------------------------------------------------------------------------------

def _sum(values: np.ndarray) -> float:
    """The sum of `values`, exactly rounded (math.fsum), so independent of the order of the
    terms, unlike np.sum (pairwise) or a BLAS reduction (the kernel's order)."""
    return math.fsum(np.ravel(values).tolist())


def _mean(values: np.ndarray) -> float:
    """The mean of `values`, from their exactly rounded sum."""
    return _sum(values) / np.size(values)


def _slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x, from exactly rounded sums."""
    mean_x, mean_y = math.fsum(x) / len(x), math.fsum(y) / len(y)
    return (math.fsum((a - mean_x) * (b - mean_y) for a, b in zip(x, y))
            / math.fsum((a - mean_x) ** 2 for a in x))


def _norm(a: np.ndarray) -> float:
    """The Frobenius norm of `a`, correctly rounded: the float nearest sqrt(sum of a_i**2).

    The sum of squares is exact (fractions) and its square root is taken in integers, so the
    result depends on the values of `a` alone.  math.sqrt(math.fsum(...)) would round twice
    (2.6728107324820174 instead of 2.672810732482017 for the thread's matrix), and math.hypot
    is only documented to be within 1 ulp.  For finite norms in the normal range.
    """
    squares = sum(Fraction(x) ** 2 for x in np.ravel(a).tolist())
    if squares == 0:
        return 0.0
    numerator, denominator = squares.numerator, squares.denominator
    # Scaled by 4**k, the integer root has at least 56 bits: 53 kept, the rest to round on.
    k = max(0, 56 - (numerator.bit_length() - denominator.bit_length()) // 2)
    scaled, remainder = divmod(numerator << (2 * k), denominator)
    root = math.isqrt(scaled)  # floor(sqrt(squares) * 2**k)
    exact = remainder == 0 and root * root == scaled
    shift = root.bit_length() - 53
    significand = root >> shift
    below = root - (significand << shift)  # the true value lies in [below, below + 1)
    half = 1 << (shift - 1)
    if below > half or (below == half and (not exact or significand & 1)):
        significand += 1  # round to nearest, ties to even
    return math.ldexp(significand, shift - k)


# ---------------------------------------------------------------------------------------------
# 1. Why divide by keep_prob
# ---------------------------------------------------------------------------------------------

def thread_matrix() -> np.ndarray:
    """The thread's matrix: ``np.random.seed(42); A = np.random.randn(3, 4)``.

    Drawn from a private ``RandomState(42)``, which gives the same numbers as the legacy global
    seed without touching the caller's global NumPy state.

    Returns
    -------
    numpy.ndarray
        float64, shape (3, 4).
    """
    return np.random.RandomState(42).randn(3, 4)


@dataclass(frozen=True)
class WhyDivide:
    """The numbers of experiment 1 (see `why_divide`)."""

    keep_prob: float
    quotients: Dict[float, float]          # x -> x / keep_prob (the thread's 42 and -0.573)
    A: np.ndarray                           # the thread's matrix
    scaled: np.ndarray                      # A * (1 / keep_prob), the thread's B (see below)
    norm_A: float                           # ||A||, Frobenius ("2-norm" in the thread)
    norm_scaled: float                      # ||A * (1 / keep_prob)||
    scalars: Dict[float, Tuple[float, float]]  # m -> (||m A||, |m| ||A||)
    dropped: np.ndarray                     # one inverted-dropout output of A
    norm_dropped: float                     # its norm
    kept_ratio: float                       # dropped / A on the kept units (1 / keep_prob)
    kept: int                               # how many units of A were kept
    norm_dropped_unscaled: float            # the norm of the same mask without 1 / keep_prob


def why_divide(keep_prob: float = KEEP_PROB, seed: int = 0) -> WhyDivide:
    """Experiment 1: dividing by a number in (0, 1) makes magnitudes larger.

    Reproduces the thread's numbers (42 / 0.8, -0.573 / 0.8, ||A|| and ||B|| for its matrix,
    ||m A|| = |m| ||A||) and applies one real inverted-dropout mask to A, with and without the
    1 / keep_prob factor.  The thread computes ``B = A * (1/0.8)``, the factor rounded once and
    then multiplied in, which is what fastdrop's kernel does to the kept units; ``A / 0.8``
    differs from it in the last bit of 3 of the 12 elements.  Norms are correctly rounded
    (`_norm`): the same on every CPU.

    Parameters
    ----------
    keep_prob : float, optional
        Probability that a unit is kept.
    seed : int, optional
        Seed of the dropout mask.

    Returns
    -------
    WhyDivide
    """
    A = thread_matrix()
    scaled = A * (1 / keep_prob)
    norm_A = _norm(A)
    scalars = {m: (_norm(m * A), abs(m) * norm_A) for m in (1 / keep_prob, -2.0, 0.5)}
    dropped, _ = fastdrop.dropout(A, keep_prob, seed=seed)
    # The same decisions without the factor: classic mode draws the same mask from the same seed.
    unscaled, _ = fastdrop.dropout(A, keep_prob, seed=seed, mode="classic")
    kept = unscaled != 0
    return WhyDivide(
        keep_prob=keep_prob,
        quotients={x: x / keep_prob for x in (42.0, -0.573)},
        A=A, scaled=scaled, norm_A=norm_A, norm_scaled=_norm(scaled), scalars=scalars,
        dropped=dropped, norm_dropped=_norm(dropped),
        kept_ratio=_mean(dropped[kept] / A[kept]), kept=int(np.count_nonzero(kept)),
        norm_dropped_unscaled=_norm(unscaled))


# ---------------------------------------------------------------------------------------------
# 2. "Output at test time = expected output at training time"
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expectation:
    """The numbers of experiment 2 (see `expectation`)."""

    keep_prob: float
    counts: Tuple[int, ...]                 # N
    max_error: Tuple[float, ...]            # max |mean of N inverted outputs - A|
    rms_error: Tuple[float, ...]            # RMS of (mean - A)
    rms_predicted: Tuple[float, ...]        # sqrt((1 - q) / q) * rms(A) / sqrt(N)
    slope: float                            # least-squares slope of log max_error on log N
    rms_slope: float                        # the same for rms_error
    max_error_unscaled: Tuple[float, ...]   # max |mean of N outputs without 1/q - q A|
    ratio_unscaled: float                   # sum(mean without 1/q) / sum(A) at the largest N
    max_error_unscaled_to_A: float          # max |mean without 1/q - A| at the largest N
    squared_norm_ratio: float               # mean ||y||^2 / ||A||^2 over the samples (-> 1/q)
    squared_norm_ratio_unscaled: float      # the same without 1/q (-> q)
    norm_ratio: float                       # mean ||y|| / ||A||


def expectation(keep_prob: float = KEEP_PROB, counts: Sequence[int] = AVERAGE_COUNTS,
                seed: int = 1) -> Expectation:
    """Experiment 2: the average of N inverted-dropout outputs of a fixed activation.

    For a fixed activation A (the thread's matrix), element-wise
    E[m a / q] = q a / q = a, so the mean of N outputs converges to A, with a standard error
    sqrt((1 - q) / q) |a| / sqrt(N).  Without the factor, E[m a] = q a.  The squared 2-norm
    is not preserved: E||m A / q||^2 = sum q a^2 / q^2 = ||A||^2 / q.

    The N outputs are one call on N stacked copies of A: with per-sample masks that is exactly
    N independent forward passes, each with a fresh mask.  The means for the smaller N are
    running means of the same draws (the first N of them).  Sums over units and samples are
    exactly rounded (`_sum`), and the slopes are fitted in closed form from such sums rather
    than by np.polyfit (LAPACK, and so BLAS).

    Parameters
    ----------
    keep_prob : float, optional
        Probability that a unit is kept.
    counts : sequence of int, optional
        The values of N, increasing.
    seed : int, optional
        Seed of the masks.

    Returns
    -------
    Expectation
    """
    A = thread_matrix()
    counts = tuple(int(n) for n in counts)
    stacked = np.broadcast_to(A, (max(counts),) + A.shape)
    outputs, _ = fastdrop.dropout(stacked, keep_prob, seed=seed)
    # Same seed, same decisions: the classic (unscaled) outputs use the very same masks.
    unscaled, _ = fastdrop.dropout(stacked, keep_prob, seed=seed, mode="classic")
    running = np.cumsum(outputs, axis=0) / np.arange(1, len(outputs) + 1)[:, None, None]
    running_unscaled = (np.cumsum(unscaled, axis=0)
                        / np.arange(1, len(unscaled) + 1)[:, None, None])
    means = [running[n - 1] for n in counts]
    means_unscaled = [running_unscaled[n - 1] for n in counts]
    max_error = tuple(float(np.max(np.abs(mean - A))) for mean in means)
    rms_A = math.sqrt(_mean(A ** 2))
    rms_error = tuple(math.sqrt(_mean((mean - A) ** 2)) for mean in means)
    log_counts = [math.log(n) for n in counts]
    slope, rms_slope = (_slope(log_counts, [math.log(e) for e in errors])
                        for errors in (max_error, rms_error))
    squared, squared_unscaled = (np.array([_sum(sample) for sample in y ** 2])
                                 for y in (outputs, unscaled))
    norm_A2 = _sum(A ** 2)
    return Expectation(
        keep_prob=keep_prob, counts=counts, max_error=max_error,
        rms_error=rms_error,
        rms_predicted=tuple(math.sqrt((1 - keep_prob) / keep_prob) * rms_A / math.sqrt(n)
                            for n in counts),
        slope=slope, rms_slope=rms_slope,
        max_error_unscaled=tuple(float(np.max(np.abs(mean - keep_prob * A)))
                                 for mean in means_unscaled),
        ratio_unscaled=_sum(means_unscaled[-1]) / _sum(A),
        max_error_unscaled_to_A=float(np.max(np.abs(means_unscaled[-1] - A))),
        squared_norm_ratio=_mean(squared) / norm_A2,
        squared_norm_ratio_unscaled=_mean(squared_unscaled) / norm_A2,
        norm_ratio=_mean(np.sqrt(squared)) / math.sqrt(norm_A2))


# ---------------------------------------------------------------------------------------------
# 3. Per-sample versus shared masks
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskSharing:
    """The numbers of experiment 3 (see `mask_sharing`)."""

    keep_prob: float
    per_sample: np.ndarray    # 0/1 mask, shape (samples, units): a fresh row per sample
    shared: np.ndarray        # 0/1 mask, every row equal (shared_axes=0)
    distinct_rows_per_sample: int
    distinct_rows_shared: int
    decisions_per_sample: int  # random decisions drawn
    decisions_shared: int


def mask_sharing(keep_prob: float = 0.5, samples: int = 6, units: int = 10,
                 seed: int = 3) -> MaskSharing:
    """Experiment 3: the thread's "two ways to implement dropout" on one batch.

    A batch of `samples` rows (samples) by `units` columns (units) goes through dropout twice:
    with a fresh decision for every element (the course's way, one thinned network per sample)
    and with ``shared_axes=0`` (one mask for the whole batch, one thinned network per
    iteration).  The masks are read off by dropping a batch of ones with mode="classic".

    Parameters
    ----------
    keep_prob : float, optional
        Probability that a unit is kept (0.5 makes the masks easy to read).
    samples, units : int, optional
        Shape of the batch.
    seed : int, optional
        Seed of the masks.

    Returns
    -------
    MaskSharing
    """
    ones = np.ones((samples, units))
    per_sample, _ = fastdrop.dropout(ones, keep_prob, mode="classic", seed=seed)
    shared, _ = fastdrop.dropout(ones, keep_prob, mode="classic", seed=seed, shared_axes=0)
    return MaskSharing(
        keep_prob=keep_prob, per_sample=per_sample.astype(np.int8),
        shared=shared.astype(np.int8),
        distinct_rows_per_sample=len({row.tobytes() for row in per_sample}),
        distinct_rows_shared=len({row.tobytes() for row in shared}),
        decisions_per_sample=per_sample.size, decisions_shared=units)


# ---------------------------------------------------------------------------------------------
# The network of experiments 4-6
# ---------------------------------------------------------------------------------------------

def make_moons(n: int, noise: float, seed: int, flip: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles in 2-D, in the course's layout.

    Parameters
    ----------
    n : int
        Number of points (half in each class).
    noise : float
        Standard deviation of the Gaussian noise added to the coordinates.
    seed : int
        Seed of the NumPy generator.
    flip : float, optional
        Fraction of labels flipped at random (label noise that a big network can memorise).

    Returns
    -------
    X : numpy.ndarray
        Shape (2, n), float64: one column per point.
    Y : numpy.ndarray
        Shape (1, n), float64, 0 or 1.
    """
    rng = np.random.default_rng(seed)
    half = n // 2
    angle = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(angle[:half]), np.sin(angle[:half])])
    lower = np.stack([1 - np.cos(angle[half:]), 0.5 - np.sin(angle[half:])])
    X = np.concatenate([upper, lower], axis=1) + rng.normal(0, noise, (2, n))
    Y = np.concatenate([np.zeros(half), np.ones(n - half)])
    flipped = rng.random(n) < flip
    Y[flipped] = 1 - Y[flipped]
    return X, Y[None, :]


def _relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-z)) written so that large |z| neither overflows nor warns.
    return np.exp(-np.logaddexp(0.0, -z))


#: Per layer: its input, its pre-activation and its dropout mask (None: no dropout).
_CacheEntry = Tuple[np.ndarray, np.ndarray, Optional[fastdrop.DropoutMask]]


class MLP:
    """The course's network: LINEAR -> RELU -> DROPOUT -> LINEAR -> RELU -> DROPOUT -> LINEAR ->
    SIGMOID, with binary cross-entropy and full-batch gradient descent.

    Columns are samples (X has shape (features, samples)), as in the course.  Dropout is
    ``fastdrop.dropout`` / ``fastdrop.dropout_backward`` on each hidden layer, with one
    `fastdrop.Stream` per layer, so the masks are a function of `mask_seed` alone: two networks
    built with the same mask seed and keep_prob draw exactly the same masks, whatever the mode.

    Parameters
    ----------
    sizes : sequence of int
        Units per layer, input first and 1 last, e.g. (2, 20, 10, 1): three weight layers.
    seed : int
        Seed of the He-initialised weights (biases start at zero).
    keep_prob : float, optional
        Probability that a hidden unit is kept in training; 1 is no dropout.
    mode : {"inverted", "classic"}, optional
        "inverted": activations / keep_prob in training, the weights used as they are at test
        time.  "classic" (the 2014 paper): no scaling in training, and at test time the weights
        after each dropout layer are multiplied by keep_prob.
    mask_seed : int, optional
        Seed of the dropout streams (hidden layer l uses subsequence l).
    """

    def __init__(self, sizes: Sequence[int], seed: int, keep_prob: float = 1.0,
                 mode: str = "inverted", mask_seed: int = 0) -> None:
        if mode not in ("inverted", "classic"):
            raise ValueError(f"mode must be 'inverted' or 'classic', got {mode!r}")
        rng = np.random.default_rng(seed)
        self.layers = len(sizes) - 1
        self.params: Dict[str, np.ndarray] = {}
        for layer in range(1, self.layers + 1):
            self.params[f"W{layer}"] = rng.normal(0, math.sqrt(2 / sizes[layer - 1]),
                                                  (sizes[layer], sizes[layer - 1]))
            self.params[f"b{layer}"] = np.zeros((sizes[layer], 1))
        self.keep_prob = keep_prob
        self.mode = mode
        self.streams = [fastdrop.Stream(mask_seed, layer) for layer in range(1, self.layers)]

    @property
    def dropped_weights(self) -> List[str]:
        """The weights that read a dropout layer's output (W2, W3, ...): those the paper scales
        by keep_prob at test time."""
        return [f"W{layer}" for layer in range(2, self.layers + 1)]

    def scale_dropped_weights(self, factor: float) -> "MLP":
        """Multiply the `dropped_weights` by `factor` in place; returns the network."""
        for name in self.dropped_weights:
            self.params[name] = self.params[name] * factor
        return self

    def _forward(self, X: np.ndarray, dropout: bool,
                 streams: Optional[Sequence[fastdrop.Stream]] = None,
                 weight_scale: float = 1.0) -> Tuple[np.ndarray, List[_CacheEntry]]:
        """Probabilities and the cache for backprop.  `weight_scale` multiplies the dropped
        weights (the paper's test-time W * q)."""
        streams = self.streams if streams is None else streams
        A = X
        cache: List[_CacheEntry] = []
        for layer in range(1, self.layers + 1):
            W = self.params[f"W{layer}"]
            if layer > 1 and weight_scale != 1.0:
                W = W * weight_scale
            Z = W @ A + self.params[f"b{layer}"]
            if layer == self.layers:
                cache.append((A, Z, None))
                return _sigmoid(Z), cache
            H = _relu(Z)
            mask = None
            if dropout and self.keep_prob < 1:
                out, mask = fastdrop.dropout(H, self.keep_prob, mode=self.mode,
                                             stream=streams[layer - 1])
            else:
                out = H
            cache.append((A, Z, mask))
            A = out
        raise AssertionError("unreachable")

    def step(self, X: np.ndarray, Y: np.ndarray, lr: float,
             dropped_lr: Optional[float] = None) -> float:
        """One full-batch gradient-descent step with dropout; returns the loss before it.

        Parameters
        ----------
        X, Y : numpy.ndarray
            Inputs (features, samples) and 0/1 labels (1, samples).
        lr : float
            Learning rate of W1 and every bias.
        dropped_lr : float, optional
            Learning rate of the `dropped_weights`; default `lr`.

        Returns
        -------
        float
            The cross-entropy of this step's (thinned) forward pass.
        """
        P, cache = self._forward(X, dropout=True)
        m = X.shape[1]
        eps = 1e-12
        loss = float(-np.mean(Y * np.log(P + eps) + (1 - Y) * np.log(1 - P + eps)))
        dZ = (P - Y) / m  # sigmoid + cross-entropy
        grads = {}
        for layer in range(self.layers, 0, -1):
            A_prev, _, _ = cache[layer - 1]
            grads[f"W{layer}"] = dZ @ A_prev.T
            grads[f"b{layer}"] = np.sum(dZ, axis=1, keepdims=True)
            if layer > 1:
                dA = self.params[f"W{layer}"].T @ dZ
                _, Z_prev, mask = cache[layer - 2]
                if mask is not None:
                    dA = fastdrop.dropout_backward(dA, mask)
                dZ = dA * (Z_prev > 0)
        dropped = set(self.dropped_weights)
        for name, grad in grads.items():
            rate = dropped_lr if (name in dropped and dropped_lr is not None) else lr
            self.params[name] -= rate * grad
        return loss

    def fit(self, X: np.ndarray, Y: np.ndarray, lr: float, iterations: int,
            dropped_lr: Optional[float] = None) -> List[float]:
        """`iterations` gradient-descent steps; returns the losses."""
        return [self.step(X, Y, lr, dropped_lr) for _ in range(iterations)]

    def predict_proba(self, X: np.ndarray, mc: bool = False,
                      streams: Optional[Sequence[fastdrop.Stream]] = None) -> np.ndarray:
        """Test-time probabilities, shape (1, samples).

        Dropout is off (no randomness): inverted networks use their weights as they are,
        classic ones the weights after dropout times keep_prob.  ``mc=True`` keeps dropout on
        (Monte-Carlo dropout): every call draws fresh masks from `streams` (default: the
        network's own training streams).
        """
        if mc:
            return self._forward(X, dropout=True, streams=streams)[0]
        scale = self.keep_prob if self.mode == "classic" else 1.0
        return self._forward(X, dropout=False, weight_scale=scale)[0]

    def accuracy(self, X: np.ndarray, Y: np.ndarray) -> float:
        """Fraction of test-time predictions (threshold 0.5) equal to Y."""
        return float(np.mean((self.predict_proba(X) > 0.5) == (Y > 0.5)))


# ---------------------------------------------------------------------------------------------
# 4. Classic dropout (the paper) against inverted dropout
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassicVsInverted:
    """The numbers of experiment 4 (see `classic_vs_inverted`)."""

    keep_prob: float
    lr: float
    iterations: int
    sizes: Tuple[int, ...]
    max_weight_difference: float      # max |W'_inverted - q W_classic| after training
    max_prediction_difference: float  # max |p_classic - p_inverted| on the test set, lr * q**2
    accuracy_classic: float
    accuracy_inverted: float
    max_prediction_difference_equal_lr: float  # the same, inverted with the classic lr
    accuracy_inverted_equal_lr: float
    final_loss_classic: float
    final_loss_inverted: float
    final_loss_inverted_equal_lr: float


def classic_vs_inverted(keep_prob: float = KEEP_PROB, quick: bool = False,
                        seed: int = 4) -> ClassicVsInverted:
    """Experiment 4: the paper's classic dropout and inverted dropout train the same network.

    Classic (paper): training uses ``m * a`` and weights W; test time uses ``q W``.  Inverted:
    training uses ``m * a / q`` and weights W'; test time uses W'.  Suppose W' = q W for every
    weight W after a dropout layer.  Then the training forward passes are identical,
    W' (m a / q) = q W m a / q = W m a, so the losses and the back-propagated gradients dZ
    are identical too, and so are the gradients of W1 and of every bias.  But the gradient of W'
    is dZ (m a / q)^T = (1 / q) dL/dW.  To keep W' = q W after a step we need
    W' - lr' (1 / q) dL/dW = q (W - lr dL/dW), that is lr' = q**2 lr for the weights after a
    dropout layer (W1 and the biases keep lr).  Started from W'_0 = q W_0 and fed the same
    masks, the two runs stay equal step by step, and the classic test network q W is the
    inverted network W': the test predictions agree to rounding.  With equal learning rates,
    the inverted run moves those weights 1 / q**2 times too far each step (1.5625 times at
    q = 0.8), and the two networks drift apart.

    Parameters
    ----------
    keep_prob : float, optional
        Probability that a hidden unit is kept.
    quick : bool, optional
        Fewer iterations (for the tests): the equalities hold at any length.
    seed : int, optional
        Seed of the data, the weights and the masks.

    Returns
    -------
    ClassicVsInverted
    """
    sizes = (2, 20, 10, 1)
    lr, iterations = 0.5, (300 if quick else 2000)
    X, Y = make_moons(300, 0.2, seed)
    X_test, Y_test = make_moons(500, 0.2, seed + 1000)

    def network(mode: str) -> MLP:
        # The same weights and the same mask seed: only the mode differs.
        return MLP(sizes, seed, keep_prob=keep_prob, mode=mode, mask_seed=seed)

    classic = network("classic")
    inverted = network("inverted").scale_dropped_weights(keep_prob)
    equal_lr = network("inverted").scale_dropped_weights(keep_prob)
    loss_classic = classic.fit(X, Y, lr, iterations)[-1]
    loss_inverted = inverted.fit(X, Y, lr, iterations, dropped_lr=lr * keep_prob ** 2)[-1]
    loss_equal = equal_lr.fit(X, Y, lr, iterations)[-1]
    p_classic = classic.predict_proba(X_test)
    return ClassicVsInverted(
        keep_prob=keep_prob, lr=lr, iterations=iterations, sizes=sizes,
        max_weight_difference=max(
            float(np.max(np.abs(inverted.params[name] - keep_prob * classic.params[name])))
            for name in classic.dropped_weights),
        max_prediction_difference=float(np.max(np.abs(p_classic
                                                       - inverted.predict_proba(X_test)))),
        accuracy_classic=classic.accuracy(X_test, Y_test),
        accuracy_inverted=inverted.accuracy(X_test, Y_test),
        max_prediction_difference_equal_lr=float(np.max(np.abs(
            p_classic - equal_lr.predict_proba(X_test)))),
        accuracy_inverted_equal_lr=equal_lr.accuracy(X_test, Y_test),
        final_loss_classic=loss_classic, final_loss_inverted=loss_inverted,
        final_loss_inverted_equal_lr=loss_equal)


# ---------------------------------------------------------------------------------------------
# 5. Regularisation
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Regularisation:
    """The numbers of experiment 5 (see `regularisation`); the two trained networks ride along
    for experiment 6 and the plots."""

    keep_prob: float
    sizes: Tuple[int, ...]
    train_samples: int
    test_samples: int
    label_noise: float
    iterations: int
    train_accuracy_without: float
    test_accuracy_without: float
    train_accuracy_with: float
    test_accuracy_with: float
    X_train: np.ndarray = field(repr=False)
    Y_train: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    Y_test: np.ndarray = field(repr=False)
    without: MLP = field(repr=False)
    with_dropout: MLP = field(repr=False)

    @property
    def gap_without(self) -> float:
        """Train accuracy minus test accuracy without dropout."""
        return self.train_accuracy_without - self.test_accuracy_without

    @property
    def gap_with(self) -> float:
        """Train accuracy minus test accuracy with dropout."""
        return self.train_accuracy_with - self.test_accuracy_with


REGULARISATION_SIZES = (2, 64, 64, 1)


def regularisation(keep_prob: float = 0.5, quick: bool = False,
                   seed: int = 5) -> Regularisation:
    """Experiment 5: dropout narrows the gap between train and test accuracy.

    A setup built to overfit: few noisy training points (some labels flipped), a network far
    bigger than the problem needs, trained long.  Without dropout it fits the training set,
    noise included, and does worse on fresh points from the same distribution; with dropout
    (the same network, weights and data) it cannot rely on any single unit, fits the noise
    less, and the gap between train and test accuracy is smaller.

    Parameters
    ----------
    keep_prob : float, optional
        Probability that a hidden unit is kept in the dropout run.
    quick : bool, optional
        Fewer iterations (for the tests).
    seed : int, optional
        Seed of the data, the weights and the masks.

    Returns
    -------
    Regularisation
    """
    train_samples, test_samples, flip, noise = 100, 2000, 0.15, 0.2
    lr, iterations = 0.5, (2000 if quick else 6000)
    X, Y = make_moons(train_samples, noise, seed, flip=flip)
    # Test points from the same distribution, label noise included, so the gap measures
    # overfitting alone.
    X_test, Y_test = make_moons(test_samples, noise, seed + 1000, flip=flip)
    without = MLP(REGULARISATION_SIZES, seed)
    with_dropout = MLP(REGULARISATION_SIZES, seed, keep_prob=keep_prob, mask_seed=seed)
    without.fit(X, Y, lr, iterations)
    with_dropout.fit(X, Y, lr, iterations)
    return Regularisation(
        keep_prob=keep_prob, sizes=REGULARISATION_SIZES, train_samples=train_samples,
        test_samples=test_samples, label_noise=flip, iterations=iterations,
        train_accuracy_without=without.accuracy(X, Y),
        test_accuracy_without=without.accuracy(X_test, Y_test),
        train_accuracy_with=with_dropout.accuracy(X, Y),
        test_accuracy_with=with_dropout.accuracy(X_test, Y_test),
        X_train=X, Y_train=Y, X_test=X_test, Y_test=Y_test, without=without,
        with_dropout=with_dropout)


# ---------------------------------------------------------------------------------------------
# 6. Dropout is off at test time; Monte-Carlo dropout is the deliberate exception
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonteCarlo:
    """The numbers of experiment 6 (see `monte_carlo`)."""

    keep_prob: float
    passes: int
    deterministic_repeatable: bool   # two test-time predictions are bit-identical
    deterministic_std: float         # max std of repeated test-time predictions (0)
    mean_std: float                  # mean over the points of the MC standard deviation
    max_std: float
    mean_std_confident: float        # over points the test-time network puts at p < .1 or > .9
    mean_std_uncertain: float        # over points with 0.3 < p < 0.7
    max_mean_difference: float       # max |MC mean - test-time prediction|
    accuracy_deterministic: float
    accuracy_mc_mean: float
    std: np.ndarray = field(repr=False)   # per point, shape (1, points)


def monte_carlo(result: Optional[Regularisation] = None, passes: int = 100, quick: bool = False,
                seed: int = 6) -> MonteCarlo:
    """Experiment 6: test-time predictions are deterministic; Monte-Carlo dropout is not.

    On the dropout network of experiment 5: the ordinary test-time prediction uses no dropout,
    so repeating it gives the same bits.  Monte-Carlo dropout (Gal and Ghahramani 2016) keeps
    dropout on at test time on purpose (``mc=True``): `fastdrop.mc_predict` averages `passes`
    thinned networks, and the spread of their predictions is an uncertainty estimate, larger
    near the decision boundary than far from it.

    Parameters
    ----------
    result : Regularisation, optional
        Experiment 5's result (its dropout network and test set); None runs it.
    passes : int, optional
        Monte-Carlo forward passes.
    quick : bool, optional
        Passed to `regularisation` when `result` is None.
    seed : int, optional
        Seed of the Monte-Carlo masks (streams of their own, so the training streams are left
        alone and the result does not depend on what ran before).

    Returns
    -------
    MonteCarlo
    """
    if result is None:
        result = regularisation(quick=quick)
    net, X, Y = result.with_dropout, result.X_test, result.Y_test
    first, second = net.predict_proba(X), net.predict_proba(X)
    streams = [fastdrop.Stream(seed, layer) for layer in range(1, net.layers)]
    mean, std = fastdrop.mc_predict(lambda points: net.predict_proba(points, mc=True,
                                                                     streams=streams),
                                    X, n=passes)
    _, deterministic_std = fastdrop.mc_predict(net.predict_proba, X, n=3)
    confident = (first < 0.1) | (first > 0.9)
    uncertain = (first > 0.3) & (first < 0.7)
    return MonteCarlo(
        keep_prob=net.keep_prob, passes=passes,
        deterministic_repeatable=bool(np.array_equal(first, second)),
        deterministic_std=float(np.max(deterministic_std)),
        mean_std=float(np.mean(std)), max_std=float(np.max(std)),
        mean_std_confident=float(np.mean(std[confident])),
        mean_std_uncertain=float(np.mean(std[uncertain])),
        max_mean_difference=float(np.max(np.abs(mean - first))),
        accuracy_deterministic=float(np.mean((first > 0.5) == (Y > 0.5))),
        accuracy_mc_mean=float(np.mean((mean > 0.5) == (Y > 0.5))), std=std)


# ---------------------------------------------------------------------------------------------
# All of them, in words and in pictures
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    """Every experiment's result."""

    why_divide: WhyDivide
    expectation: Expectation
    mask_sharing: MaskSharing
    classic_vs_inverted: ClassicVsInverted
    regularisation: Regularisation
    monte_carlo: MonteCarlo


def run(quick: bool = False) -> Report:
    """Run the six experiments (experiment 6 reuses experiment 5's network).

    Parameters
    ----------
    quick : bool, optional
        Shorter training in experiments 4 and 5; the conclusions hold either way.

    Returns
    -------
    Report
    """
    reg = regularisation(quick=quick)
    return Report(why_divide=why_divide(), expectation=expectation(),
                  mask_sharing=mask_sharing(), classic_vs_inverted=classic_vs_inverted(quick=quick),
                  regularisation=reg, monte_carlo=monte_carlo(reg))


#: Width of the report's prose; longer lines are wrapped, indented under their first line.
WIDTH = 96


def _wrap(line: str) -> str:
    """`line` wrapped at WIDTH, continuation lines indented two more than the first."""
    if len(line) <= WIDTH:
        return line
    indent = " " * (len(line) - len(line.lstrip()))
    return textwrap.fill(line.strip(), WIDTH, initial_indent=indent,
                         subsequent_indent=indent + "  ", break_on_hyphens=False)


def _grid(mask: np.ndarray) -> List[str]:
    """A 0/1 mask as lines of digits, one line per sample."""
    return ["      sample %d: %s" % (i, " ".join(str(int(v)) for v in row))
            for i, row in enumerate(mask)]


def _at_rounding_level(difference: float) -> str:
    """A difference that only rounding makes, as a bound that reads the same on every CPU."""
    if difference < ROUNDING_LEVEL:
        return f"< {ROUNDING_LEVEL:g}"
    return f"= {difference:.3g}"


def _norm_text(value: float) -> str:
    """A norm as the report prints it: NORM_DIGITS significant digits."""
    return f"{value:.{NORM_DIGITS}g}"


def _matrix(a: np.ndarray) -> List[str]:
    return ["      [" + " ".join(f"{v:11.8f}" for v in row) + "]" for row in a]


#: The report's first sentence: what "the thread" and "the course" are.
INTRODUCTION = (
    "The thread is a forum discussion in which learners of Andrew Ng's deep-learning course (the "
    "course, whose NumPy exercises write inverted dropout as D = np.random.rand(*A.shape) < "
    "keep_prob; A = A * D / keep_prob) asked why dropout divides by keep_prob; each section "
    "below answers one of its questions.")

SECTIONS = (
    "1. Why divide by keep_prob?",
    "2. \"Output at test time = expected output at training time\"",
    "3. One mask per sample, or one mask for the whole batch?",
    "4. The paper's classic dropout against inverted dropout",
    "5. Does dropout still regularise after the 1/keep_prob compensation?",
    "6. Dropout at test time: off, except Monte-Carlo dropout",
)


def format_report(report: Report) -> str:
    """The report in plain words, with the numbers.

    Parameters
    ----------
    report : Report
        From `run`.

    Returns
    -------
    str
        Several paragraphs, one section per experiment (titles in `SECTIONS`).
    """
    w, e, s = report.why_divide, report.expectation, report.mask_sharing
    c, r, m = report.classic_vs_inverted, report.regularisation, report.monte_carlo
    q = w.keep_prob
    lines = ["fastdrop explain: the inverted-dropout questions, answered by measurement",
             f"(fastdrop {fastdrop.__version__}, numpy {np.__version__}; every number below was "
             "computed just now, with fixed seeds)", "", INTRODUCTION, ""]

    lines += [SECTIONS[0],
              f"  keep_prob q = {q} is a number in (0, 1), so dividing by it makes magnitudes "
              "larger:"]
    lines += [f"    {x:g} / {q} = {v:.10g}   (|{v:.10g}| > |{x:g}|)"
              for x, v in w.quotients.items()]
    lines += ["  The thread's matrix, np.random.seed(42); A = np.random.randn(3, 4):"]
    lines += _matrix(w.A)
    inverse = f"(1/{q})"
    lines += [f"  B = A * {inverse} as in the thread: 1/{q} rounded once (to {1 / q!r}), then "
              "multiplied in, as fastdrop does to the kept units.  Norms correctly rounded, "
              f"to {NORM_DIGITS} digits:",
              f"    ||A||{' ' * (len(inverse) + 3)} = {_norm_text(w.norm_A)}",
              f"    ||A * {inverse}|| = {_norm_text(w.norm_scaled)}   = {1 / q:g} x ||A||"]
    for factor, (norm, product) in w.scalars.items():
        lines.append(f"    ||{factor:g} A|| = {_norm_text(norm)}   |{factor:g}| x ||A|| = "
                     f"{_norm_text(product)}")
    lines += [f"  One real dropout mask (fastdrop.dropout(A, {q}, seed=0)) kept {w.kept} of "
              f"{w.A.size} units and multiplied each kept unit by {w.kept_ratio:g}:",
              f"    ||mask * A|| = {w.norm_dropped_unscaled:.4f} without the factor, "
              f"{w.norm_dropped:.4f} with it (||A|| = {w.norm_A:.4f}).",
              "  Answer: dropping units removes some of the layer's output; dividing the kept "
              "units by q scales them up so that the layer's total output stays the same on "
              "average (section 2).  The kept units still differ from one iteration to the "
              "next, so dropout keeps its effect (section 5).", ""]

    lines += [SECTIONS[1],
              f"  Average N inverted-dropout outputs m * A / {q} of the same A, each with a fresh "
              "mask, and compare with A:",
              "         N   max |mean - A|   RMS |mean - A|   predicted RMS "
              "sqrt((1-q)/q) rms(A)/sqrt(N)"]
    for n, mx, rms, pred in zip(e.counts, e.max_error, e.rms_error, e.rms_predicted):
        lines.append(f"    {n:6d}   {mx:14.5f}   {rms:14.5f}   {pred:13.5f}")
    lines += [f"  The error shrinks like 1/sqrt(N): the log-log slope of max |mean - A| against N "
              f"is {e.slope:.2f}, of the RMS error {e.rms_slope:.2f} (1/sqrt(N) is -0.5).  "
              "The maximum over 12 units of one run is noisy from decade to decade; the RMS "
              "error follows the predicted sqrt((1-q)/q) rms(A)/sqrt(N).",
              f"  Without the 1/q factor (m * A) the average tends to q A, not A: at N = "
              f"{e.counts[-1]}, sum(mean) / sum(A) = {e.ratio_unscaled:.4f} (q = {q}), "
              f"max |mean - q A| = {e.max_error_unscaled[-1]:.5f} but max |mean - A| = "
              f"{e.max_error_unscaled_to_A:.5f}.",
              "  Answer: with the 1/q factor, the expected output of a unit in training equals "
              "its output at test time, where nothing is dropped or scaled.  That is the "
              "statement \"output at test time = expected output at training time\"; it holds "
              "on average, not for any single iteration.",
              "  What is not preserved: the squared 2-norm grows by 1/q on average, because "
              f"E[(m a / q)^2] = a^2 / q.  Measured: mean ||m A / q||^2 / ||A||^2 = "
              f"{e.squared_norm_ratio:.4f} (1/q = {1 / q:g}); without the factor "
              f"{e.squared_norm_ratio_unscaled:.4f} (q = {q}); mean ||m A / q|| / ||A|| = "
              f"{e.norm_ratio:.4f}.  The 1/q factor preserves the mean (the \"energy\" as a sum "
              "of outputs), not the norm.", ""]

    lines += [SECTIONS[2],
              f"  A batch of {s.per_sample.shape[0]} samples x {s.per_sample.shape[1]} units, "
              f"keep_prob {s.keep_prob}.  1 = kept, 0 = dropped.",
              f"  Per-sample masks (the course's way; {s.decisions_per_sample} random decisions, "
              f"{s.distinct_rows_per_sample} different rows):"]
    lines += _grid(s.per_sample)
    lines += [f"  One mask shared by the batch (shared_axes=0; {s.decisions_shared} decisions, "
              f"{s.distinct_rows_shared} different row):"]
    lines += _grid(s.shared)
    lines += ["  Answer: with per-sample masks, one iteration over 100 examples trains 100 "
              "different thinned networks; with a shared mask, one thinned network per "
              "iteration.  Both have the same expectation; per-sample masks average over more "
              "thinned networks per step.  The course does it this way, and the paper samples "
              "\"a thinned network for each training case in a mini-batch\".", ""]

    lines += [SECTIONS[3],
              f"  The same network {'-'.join(map(str, c.sizes))} (ReLU, ReLU, sigmoid), the same "
              f"data, the same initial weights and the same masks, q = {c.keep_prob}, "
              f"{c.iterations} gradient-descent steps:",
              f"    classic  (paper): train with m * a and weights W at lr {c.lr}; test with "
              f"W x q.",
              f"    inverted (course): train with m * a / q and weights W' = q W at the start; "
              f"lr {c.lr} for W1 and the biases, lr x q^2 = {c.lr * c.keep_prob ** 2:g} for "
              "the weights after a dropout layer; test with W' as it is.",
              "  max |test prediction classic - inverted| "
              f"{_at_rounding_level(c.max_prediction_difference)} (max |W' - q W| after "
              f"training {_at_rounding_level(c.max_weight_difference)}): rounding errors, whose "
              f"digits depend on the CPU's BLAS kernels; test accuracy {c.accuracy_classic:.3f} "
              f"and {c.accuracy_inverted:.3f}.",
              f"  With equal learning rates (lr {c.lr} everywhere), max |difference| = "
              f"{c.max_prediction_difference_equal_lr:.3g}; test accuracy "
              f"{c.accuracy_inverted_equal_lr:.3f}; final training loss "
              f"{c.final_loss_inverted_equal_lr:.4f} against {c.final_loss_classic:.4f}.",
              "  Why: with W' = q W the forward passes are identical (W' (m a / q) = W m a), but "
              "the gradient of W' is (1/q) times the gradient of W, and W' must move q times "
              "as far as W: so its learning rate must be q^2 times smaller.  With equal rates "
              f"the inverted run takes 1/q^2 = {1 / c.keep_prob ** 2:g} times larger steps on "
              "those weights.",
              "  Answer: the paper's \"w for training and w p for testing\" and the course's "
              "\"w'/p for training and w' for testing\" are the same network (w' = p w); "
              "inverted dropout moves the scaling into training, so test-time code needs no "
              "change.", ""]

    lines += [SECTIONS[4],
              f"  {r.train_samples} training points of two noisy moons with {r.label_noise:.0%} "
              f"of labels flipped, a {'-'.join(map(str, r.sizes))} network, {r.iterations} "
              f"steps; {r.test_samples} fresh test points from the same distribution:",
              "                        train acc   test acc   gap (train - test)",
              f"    without dropout       {r.train_accuracy_without:9.3f}   "
              f"{r.test_accuracy_without:8.3f}   {r.gap_without:8.3f}",
              f"    with dropout q={r.keep_prob}    {r.train_accuracy_with:9.3f}   "
              f"{r.test_accuracy_with:8.3f}   {r.gap_with:8.3f}",
              "  Answer: the 1/q factor only keeps the average level of the outputs; which units "
              "are kept still changes every iteration, so no unit can count on any other and "
              "the network cannot memorise the flipped labels as well: the gap narrows "
              f"from {r.gap_without:.3f} to {r.gap_with:.3f}.", ""]

    lines += [SECTIONS[5],
              "  At test time dropout is off: no zeroing and no 1/q (inverted mode does nothing "
              "in evaluation).  On the dropout network of section 5:",
              f"    two test-time predictions are bit-identical: {m.deterministic_repeatable} "
              f"(std over repeats {m.deterministic_std:g}); test accuracy "
              f"{m.accuracy_deterministic:.3f}.",
              f"  Monte-Carlo dropout keeps dropout on at test time on purpose (mc=True, "
              f"fastdrop.mc_predict, {m.passes} passes): the predictions now vary.",
              f"    std of the predicted probability: mean {m.mean_std:.4f}, max {m.max_std:.4f}; "
              f"{m.mean_std_confident:.4f} where the network is confident (p < 0.1 or > 0.9), "
              f"{m.mean_std_uncertain:.4f} near the boundary (0.3 < p < 0.7).",
              f"    the MC mean is not the test-time prediction (max difference "
              f"{m.max_mean_difference:.3f}): the test-time network (weights used once, no "
              "dropout) is a cheap approximation of the average over thinned networks, exact "
              f"only for a linear network; the MC mean's accuracy is {m.accuracy_mc_mean:.3f}.",
              "  Answer: regularisation (dropout included) only happens in training.  Keeping "
              "dropout on at test time is a deliberate choice, for an uncertainty estimate, "
              "never the default."]
    return "\n".join(_wrap(line) for line in lines)


#: Colours of the two classes of experiments 5 and 6 (points), and of the regions a network
#: assigns to them (lighter).
CLASS_COLOURS = ("#3b4cc0", "#b40426")
REGION_COLOURS = ("#c6dbef", "#fdd0a2")


def _grid_over(points: np.ndarray, steps: int = 200) -> Tuple[np.ndarray, np.ndarray]:
    """A steps x steps grid of 2-D points spanning `points` (shape (2, n)): the grid's x and y
    coordinates, each (steps, steps)."""
    xs = np.linspace(points[0].min(), points[0].max(), steps)
    ys = np.linspace(points[1].min(), points[1].max(), steps)
    return np.meshgrid(xs, ys)


def _probability_on(net: "MLP", gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The test-time network's predicted probability of class 1 at each point of a grid."""
    return net.predict_proba(np.stack([gx.ravel(), gy.ravel()])).reshape(gx.shape)


def figures(report: Report) -> Dict[str, "matplotlib.figure.Figure"]:
    """The experiments drawn as matplotlib figures, by the file name `plot` gives each.

    Uses matplotlib's Agg canvas directly, without pyplot, so the global backend is untouched.

    Parameters
    ----------
    report : Report
        From `run`.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
        expectation.png (experiment 2), masks.png (3), regularisation.png (5) and
        monte_carlo.png (6).

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install "fastdropout[plot]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    def new_figure(width: float, height: float, columns: int):
        figure = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(figure)
        return figure, figure.subplots(1, columns, squeeze=False)[0]

    drawn = {}
    e = report.expectation
    figure, (ax,) = new_figure(6.5, 4.5, 1)
    ax.loglog(e.counts, e.max_error, "o-", label="max |mean - A| (inverted)")
    ax.loglog(e.counts, e.rms_error, "s-", label="RMS |mean - A| (inverted)")
    ax.loglog(e.counts, e.rms_predicted, "k--", label="predicted RMS, sqrt((1-q)/q) rms(A)/sqrt(N)")
    ax.loglog(e.counts, e.max_error_unscaled, "^:", label="max |mean - qA| (no 1/q factor)")
    ax.set_xlabel("N, number of dropout outputs averaged")
    ax.set_ylabel("error")
    ax.set_title(f"The average of N dropout outputs converges like 1/sqrt(N) (q = {e.keep_prob})")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    drawn["expectation.png"] = figure

    s = report.mask_sharing
    figure, axes = new_figure(8, 3.9, 2)
    for ax, mask, title in ((axes[0], s.per_sample, "per-sample masks"),
                            (axes[1], s.shared, "one mask shared by the batch (shared_axes=0)")):
        ax.imshow(mask, cmap="gray", vmin=0, vmax=1)  # 1, kept: white; 0, dropped: black
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("unit")
        ax.set_ylabel("sample")
    figure.legend(handles=[Patch(facecolor="white", edgecolor="black", label="kept (1)"),
                           Patch(facecolor="black", edgecolor="black", label="dropped (0)")],
                  loc="outside lower center", ncols=2, fontsize=9)
    drawn["masks.png"] = figure

    r = report.regularisation
    gx, gy = _grid_over(np.concatenate([r.X_train, r.X_test], axis=1))
    figure, axes = new_figure(11, 5, 2)
    for ax, net, title in (
            (axes[0], r.without, f"without dropout: train {r.train_accuracy_without:.2f}, "
                                 f"test {r.test_accuracy_without:.2f}"),
            (axes[1], r.with_dropout, f"dropout q = {r.keep_prob}: train "
                                      f"{r.train_accuracy_with:.2f}, "
                                      f"test {r.test_accuracy_with:.2f}")):
        ax.contourf(gx, gy, _probability_on(net, gx, gy), levels=[0, 0.5, 1],
                    colors=list(REGION_COLOURS))
        labels = r.Y_train[0] > 0.5
        for label, colour in enumerate(CLASS_COLOURS):
            chosen = labels == bool(label)
            ax.scatter(r.X_train[0, chosen], r.X_train[1, chosen], color=colour, s=14,
                       edgecolors="k", linewidths=0.4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x1 (first input feature)")
        ax.set_ylabel("x2 (second input feature)")
    handles = [Line2D([], [], linestyle="", marker="o", markerfacecolor=colour,
                      markeredgecolor="k", label=f"training point of class {label}")
               for label, colour in enumerate(CLASS_COLOURS)]
    handles += [Patch(facecolor=colour, label=f"region predicted as class {label}")
                for label, colour in enumerate(REGION_COLOURS)]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=9)
    drawn["regularisation.png"] = figure

    m = report.monte_carlo
    figure, (ax,) = new_figure(6.5, 5, 1)
    points = ax.scatter(r.X_test[0], r.X_test[1], c=m.std[0], cmap="viridis", s=6)
    figure.colorbar(points, ax=ax, label="std of the predicted probability")
    gx, gy = _grid_over(r.X_test)
    ax.contour(gx, gy, _probability_on(r.with_dropout, gx, gy), levels=[0.5], colors="red",
               linewidths=1.5)
    figure.legend(handles=[Line2D([], [], color="red", linewidth=1.5,
                                  label="decision boundary of the test-time network (p = 0.5)")],
                  loc="outside lower center", fontsize=9)
    ax.set_xlabel("x1 (first input feature)")
    ax.set_ylabel("x2 (second input feature)")
    ax.set_title(f"Monte-Carlo dropout, {m.passes} passes: uncertainty near the boundary",
                 fontsize=9)
    drawn["monte_carlo.png"] = figure
    return drawn


def plot(report: Report, directory: str) -> List[str]:
    """Draw the experiments (`figures`) as PNG files in `directory` (created if missing).

    Parameters
    ----------
    report : Report
        From `run`.
    directory : str
        Where to write the files.

    Returns
    -------
    list of str
        The paths written: expectation.png, masks.png, regularisation.png, monte_carlo.png.

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install "fastdropout[plot]"``).
    """
    drawn = figures(report)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, figure in drawn.items():
        path = os.path.join(directory, name)
        figure.savefig(path, dpi=110)
        paths.append(path)
    return paths
