"""PyTorch adapter: fastdrop as a drop-in for ``torch.nn.Dropout`` and its relatives on CPU tensors.

The functions and modules here take PyTorch's conventions (``p`` is the probability that a unit
is *dropped*; keep_prob = 1 - p) and PyTorch's semantics, and run fastdrop's kernels on the
tensors' memory through zero-copy NumPy views.  Autograd saves no tensor for backward: only the
`~fastdrop.DropoutMask`, a few integers from which the backward pass regenerates the decisions.

Masks come from fastdrop's streams (SPEC §3), not from torch's generator: seed them with
``fastdrop.manual_seed`` (before building the modules) or the modules' ``seed=`` and
``subsequence=`` arguments, e.g. ``subsequence=rank`` for one independent stream per process of a
distributed job.  Results match PyTorch's in distribution, not bit for bit, and dropped units are
exactly +0.0 (a select, so a dropped NaN does not survive, where PyTorch multiplies by 0).
Outputs and gradients live in memory NumPy allocated (see `_as_tensor`), so, like any tensor from
``torch.from_numpy``, they cannot be resized in place (``Tensor.resize_``).  Those of 32 MiB or
more come from a cache of freed outputs, as PyTorch's CUDA allocator does for GPU memory: see
`empty_cache`, `cached_bytes` and `set_cache_limit`.

Importing this module needs PyTorch (``pip install "fastdropout[torch]"``); ``import fastdrop``
does not.
"""
from __future__ import annotations

import threading
import warnings
from typing import List, Optional, Tuple

import numpy as np

try:
    import torch
except ImportError as error:  # pragma: no cover - exercised only where torch is missing
    raise ImportError(
        "fastdrop.torch needs PyTorch, which is not installed: "
        "pip install \"fastdropout[torch]\" (PyTorch 2.4 or newer)") from error

import fastdrop
from fastdrop._api import SUPPORTED_DTYPES
from fastdrop._core import DropoutMask, Stream, layer_stream

__all__ = [
    "AlphaDropout",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    "alpha_dropout",
    "cached_bytes",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "empty_cache",
    "feature_alpha_dropout",
    "set_cache_limit",
]

# The NumPy dtype each served torch dtype is viewed as: the dtypes fastdrop's core serves
# (bfloat16 only when ml_dtypes is installed), so the two lists cannot drift apart.
_NUMPY_DTYPES = {getattr(torch, dtype.name): dtype for dtype in SUPPORTED_DTYPES}
_SERVED = ", ".join(str(dtype) for dtype in _NUMPY_DTYPES)


# ---------------------------------------------------------------------------------------------
# Tensors as NumPy arrays
# ---------------------------------------------------------------------------------------------

def _refuse(tensor: torch.Tensor, name: str) -> None:
    """Raises the error that says why `tensor` cannot be served."""
    if tensor.device.type != "cpu":
        # NotImplementedError, a RuntimeError, as PyTorch raises for an operator that has no
        # kernel for a device.
        raise NotImplementedError(
            f"fastdrop.torch runs on CPU tensors only; {name} is on device "
            f"'{tensor.device}'. Move it with .cpu(), or use torch.nn.functional's dropout "
            "on that device")
    if tensor.layout is not torch.strided:
        raise TypeError(f"fastdrop.torch needs a strided (dense) tensor; {name} has layout "
                        f"{tensor.layout}")
    hint = (" (bfloat16 needs the ml_dtypes package: pip install \"fastdropout[bfloat16]\")"
            if tensor.dtype is torch.bfloat16 else "")
    raise TypeError(f"fastdrop.torch serves {_SERVED} tensors; {name} has dtype "
                    f"{tensor.dtype}{hint}")


def _as_numpy(tensor: torch.Tensor, name: str) -> np.ndarray:
    """A NumPy array sharing `tensor`'s memory, strides included (no copy), or a clear error.

    NumPy has no bfloat16: its bits are viewed as int16, then as ml_dtypes' bfloat16, both
    views of the same memory.
    """
    dtype = _NUMPY_DTYPES.get(tensor.dtype)
    if dtype is None or not tensor.is_cpu or tensor.layout is not torch.strided:
        _refuse(tensor, name)
    if tensor.requires_grad:  # Tensor.numpy refuses those; detach costs a microsecond
        tensor = tensor.detach()
    if tensor.dtype is torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(dtype)
    return tensor.numpy()


# ---------------------------------------------------------------------------------------------
# Output memory
# ---------------------------------------------------------------------------------------------

# glibc maps every allocation this large afresh (its adaptive mmap threshold stops at 32 MiB), and
# the kernel zeroes each new page on its first write: at 6.4e7 float32 elements that zeroing was
# 0.5 of the 1.7 ns/element a training step of Dropout costs, forward and backward.  Reusing the
# memory of freed outputs removes it.
_CACHED_MIN_BYTES = 32 << 20
_DEFAULT_CACHE_LIMIT = 1 << 30


class _Loan:
    """A cached block lent to the arrays (and tensors) that view it, through NumPy's array
    interface: NumPy keeps the loan as their base, so it dies with the last of them, and its
    death returns the block to the cache."""

    __slots__ = ("__array_interface__", "_block", "_cache")

    def __init__(self, block: np.ndarray, cache: "_OutputCache") -> None:
        self.__array_interface__ = {"version": 3, "shape": block.shape, "typestr": "|u1",
                                    "data": (block.__array_interface__["data"][0], False)}
        self._cache = cache
        self._block = block  # last: a loan whose construction failed has nothing to give back

    def __del__(self) -> None:
        block = getattr(self, "_block", None)
        if block is not None:
            self._cache.give_back(block)


class _OutputCache:
    """Freed output blocks, newest last, each kept for the next output of exactly its size;
    those beyond `limit` bytes in all are released, oldest first.

    Nothing waits for the lock.  Its holder may be the very thread that asks: code can run on
    a thread while it is inside the cache (a signal handler, or a finaliser run by a
    collection, e.g. a loan's), and it would wait forever for the code it interrupted; nor may
    it change the list under its holder.  So when the lock is taken, `take` lends new memory,
    `give_back` frees the block, and `set_limit` and `clear` leave the release they ask for to
    the holder, which carries it out as it leaves.
    """

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._blocks: List[np.ndarray] = []
        self._held = 0
        self._limit = limit
        self._emptying = False  # a clear that found the lock taken, for its holder to carry out

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of nbytes bytes: a cached block's memory when one has that
        size, new memory otherwise."""
        block = None
        if self._lock.acquire(blocking=False):
            try:
                for index in range(len(self._blocks) - 1, -1, -1):
                    if self._blocks[index].nbytes == nbytes:
                        block = self._blocks.pop(index)
                        self._held -= nbytes
                        break
            finally:
                self._leave()
        if block is None:
            block = np.empty(nbytes, dtype=np.uint8)
        return np.asarray(_Loan(block, self))

    def give_back(self, block: np.ndarray) -> None:
        if self._lock.acquire(blocking=False):
            try:
                self._blocks.append(block)
                self._held += block.nbytes
            finally:
                self._leave()

    def held(self) -> int:
        return self._held

    def set_limit(self, limit: int) -> int:
        previous, self._limit = self._limit, limit
        self._release_requested()
        return previous

    def clear(self) -> None:
        self._emptying = True
        self._release_requested()

    def _release_requested(self) -> None:
        """Releases what the limit and a clear ask for, unless the lock is taken: its holder
        then does it as it leaves."""
        if self._lock.acquire(blocking=False):
            self._leave()

    def _leave(self) -> None:
        """Releases what the limit and a clear ask for, then the lock.  A request made after
        that, while the lock was still held, found it taken: carried out here, unless someone
        has taken the lock since (who will)."""
        if self._emptying:
            self._emptying = False  # first: a clear made during the release is seen below
            self._release_beyond(0)
        self._release_beyond(self._limit)
        self._lock.release()
        if self._emptying or self._held > self._limit:
            self._release_requested()

    def _release_beyond(self, limit: int) -> None:
        """Drops the oldest blocks until at most `limit` bytes are held; the lock is held."""
        while self._held > limit:
            self._held -= self._blocks.pop(0).nbytes


_OUTPUT_CACHE = _OutputCache(_DEFAULT_CACHE_LIMIT)


def _output_like(like: np.ndarray) -> np.ndarray:
    """An uninitialised array of like's shape and dtype for a result the kernel writes whole:
    from the cache when it is large and C-contiguous (other layouts take np.empty_like's, which
    keeps the input's memory order)."""
    if like.nbytes < _CACHED_MIN_BYTES or not like.flags.c_contiguous:
        return np.empty_like(like)
    return _OUTPUT_CACHE.take(like.nbytes).view(like.dtype).reshape(like.shape)


def empty_cache() -> None:
    """Release the memory of every cached output to the system.

    Outputs and gradients of 32 MiB or more are allocated from a cache: when the last tensor
    using one is freed, its memory is kept for the next output of the same size (a training
    loop repeats its shapes) rather than returned and mapped afresh, which costs a page fault
    and the zeroing of every page.  Tensors in use are not affected.

    Safe anywhere, signal handlers included: no function of the cache waits for it.  Called
    while the cache is in use (by another thread, or by the code that a signal handler or a
    finaliser interrupted on this thread), it returns at once, and the memory is released as
    that use ends (on this thread: once the handler has returned).

    Examples
    --------
    >>> import fastdrop.torch as fdt
    >>> fdt.empty_cache()
    >>> fdt.cached_bytes()
    0
    """
    _OUTPUT_CACHE.clear()


def cached_bytes() -> int:
    """The bytes of freed outputs the cache holds for reuse (see `empty_cache`).

    Safe anywhere, signal handlers included; while the cache is in use, it may not yet count
    the change under way.
    """
    return _OUTPUT_CACHE.held()


def set_cache_limit(nbytes: int) -> int:
    """Cap the bytes of freed outputs the cache holds, releasing the oldest beyond it.

    Parameters
    ----------
    nbytes : int
        The cap, at least 0; 0 turns caching off.  The default is 1 GiB.

    Returns
    -------
    int
        The previous cap.

    Raises
    ------
    TypeError, ValueError
        `nbytes` is not an int, or is negative.

    Notes
    -----
    Safe anywhere, signal handlers included: the cap applies at once, and while the cache is
    in use, the oldest blocks beyond it are released as with `empty_cache`.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be at least 0, got {nbytes}")
    return _OUTPUT_CACHE.set_limit(int(nbytes))


# ---------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------

def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The tensor of `dtype` sharing the memory of `array`, an output from `_output_like`.

    Like every tensor from torch.from_numpy, the result cannot be resized in place.
    """
    if dtype is torch.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _forward(input: torch.Tensor, x: np.ndarray, keep_prob: float, mode: str,
             shared_axes: Optional[Tuple[int, ...]], seed: Optional[int],
             stream: Optional[Stream], inplace: bool) -> Tuple[torch.Tensor, Optional[DropoutMask]]:
    """The training forward of `input` (whose NumPy view is x), without autograd: the output and
    the mask (None when keep_prob is 0: every unit dropped)."""
    if keep_prob == 0.0:
        # The core refuses keep_prob = 0 (p = 1).  A call with keep_prob = 1 checks the
        # arguments and moves the stream as far as a call that draws would (so the masks of
        # the other layers do not shift, SPEC §2); PyTorch then returns zeros.
        fastdrop.dropout(x, 1.0, mode=mode, shared_axes=shared_axes, seed=seed, stream=stream)
        return (input.zero_() if inplace else torch.zeros_like(input)), None
    y, mask = fastdrop.dropout(x, keep_prob, mode=mode, shared_axes=shared_axes, seed=seed,
                               stream=stream, out=x if inplace else _output_like(x))
    return (input if inplace else _as_tensor(y, input.dtype)), mask


def _backward(grad: torch.Tensor, mask: Optional[DropoutMask]) -> torch.Tensor:
    """The gradient through the forward that returned `mask`, without autograd."""
    if mask is None:
        return torch.zeros_like(grad)
    # A new tensor, not grad in place: autograd may hand the same gradient to several
    # functions, or an expanded one (stride 0, e.g. the gradient of a sum).
    dy = _as_numpy(grad, "grad_output")
    dx = fastdrop.dropout_backward(dy, mask, out=_output_like(dy))
    return _as_tensor(dx, grad.dtype)


class _DropoutFunction(torch.autograd.Function):
    """Dropout with a backward that regenerates the decisions: ctx keeps the DropoutMask (seed,
    subsequence, start and shapes: O(1) bytes), no tensor."""

    @staticmethod
    def forward(ctx, input, call):
        # The other arguments come as one tuple: apply costs about a microsecond per argument.
        output, ctx.mask = _forward(input, *call)
        if call[-1]:  # inplace
            ctx.mark_dirty(input)  # bumps the version counter: our write went through NumPy
        return output

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # create_graph=True: record the backward too
            return _GradientFunction.apply(grad_output, ctx.mask), None
        return _backward(grad_output, ctx.mask), None


class _GradientFunction(torch.autograd.Function):
    """dx = mask applied to dy: linear and diagonal, hence its own adjoint, which makes dropout
    twice differentiable (create_graph=True) at the cost of nothing stored."""

    @staticmethod
    def forward(ctx, grad, mask):
        ctx.mask = mask
        return _backward(grad, mask)

    @staticmethod
    def backward(ctx, grad_grad):
        return _GradientFunction.apply(grad_grad, ctx.mask), None


# ---------------------------------------------------------------------------------------------
# The functional interface
# ---------------------------------------------------------------------------------------------

def _keep_prob(p: float) -> float:
    """1 - p for p in [0, 1], with PyTorch's message otherwise (NaN included)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return 1.0 - float(p)


def _check_inplace(input: torch.Tensor) -> None:
    """PyTorch's refusals of an in-place dropout, made before anything is written (autograd
    would only notice after our forward had run)."""
    if torch.is_grad_enabled() and input.requires_grad:
        if input.is_leaf:
            raise RuntimeError(
                "a leaf Variable that requires grad is being used in an in-place operation.")
        if input._is_view() and input._base.is_leaf:
            raise RuntimeError(
                "a view of a leaf Variable that requires grad is being used in an in-place "
                "operation.")
    if any(stride == 0 and size > 1 for stride, size in zip(input.stride(), input.shape)):
        raise RuntimeError(
            "unsupported operation: more than one element of the written-to tensor refers to a "
            "single memory location. Please clone() the tensor before performing the operation.")


def _dropout(input: torch.Tensor, p: float, training: bool, inplace: bool, mode: str,
             shared_axes: Optional[Tuple[int, ...]], seed: Optional[int],
             stream: Optional[Stream]) -> torch.Tensor:
    """Every variant's work: `mode` and `shared_axes` as for fastdrop.dropout."""
    keep_prob = _keep_prob(p)
    x = _as_numpy(input, "input")
    if not training or keep_prob == 1.0:
        # Evaluation or p = 0: the input itself, as PyTorch returns it.  The core still checks
        # seed/stream and, in training, moves the stream (SPEC §2).
        fastdrop.dropout(x, 1.0, training=training, mode=mode, shared_axes=shared_axes,
                         seed=seed, stream=stream)
        return input
    if inplace:
        _check_inplace(input)
    if torch.is_grad_enabled() and input.requires_grad:
        return _DropoutFunction.apply(input, (x, keep_prob, mode, shared_axes, seed, stream,
                                              inplace))
    # No graph to record: skip autograd.Function's overhead.
    output, _ = _forward(input, x, keep_prob, mode, shared_axes, seed, stream, inplace)
    if inplace:
        torch.autograd.graph.increment_version(input)  # as mark_dirty does on the autograd path
    return output


def _channel_axes(ndim: int, batched: bool) -> Tuple[int, ...]:
    """The axes after the channel axis of an (N, C, ...) input, or (C, ...) when not batched:
    the axes one decision per (sample, channel) is shared over."""
    channel = 1 if batched else 0
    if ndim < channel + 1:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    return tuple(range(channel + 1, ndim))


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            *, seed: Optional[int] = None, stream: Optional[Stream] = None) -> torch.Tensor:
    """Drop each element with probability `p` and scale the rest by 1 / (1 - p), as
    ``torch.nn.functional.dropout``.

    Parameters
    ----------
    input : torch.Tensor
        A CPU tensor of dtype float16, bfloat16 (with ml_dtypes installed), float32 or float64,
        any shape and strides; it is not copied.
    p : float, optional
        Probability that an element is zeroed, in [0, 1].  p = 1 zeroes everything (the
        gradient too); p = 0 returns `input`.  Otherwise 1 - p must be at least 2**-32.
    training : bool, optional
        False returns `input` unchanged: nothing is drawn and no stream moves.
    inplace : bool, optional
        Overwrite `input` and return it, under PyTorch's rules: refused for a leaf tensor that
        requires grad (or a view of one) while grad mode is on, and for a tensor whose elements
        share memory (e.g. from ``expand``).
    seed : int, optional
        Stateless call: start at block 0 of this 64-bit seed, so the same seed, shape and p
        always give the same mask.  Excludes `stream`.
    stream : fastdrop.Stream, optional
        Draw from this stream and advance it.  With neither `seed` nor `stream`, fastdrop's
        default stream (see `fastdrop.manual_seed`) is used, not torch's generator.

    Returns
    -------
    torch.Tensor
        The output; differentiable when `input` requires grad, with a backward that stores no
        mask (it regenerates the decisions) and may itself be differentiated.

    Raises
    ------
    ValueError
        `p` outside [0, 1], or an invalid `seed` / `stream` combination.
    TypeError
        An unsupported dtype (integer, complex) or layout.
    NotImplementedError
        A tensor on a device other than the CPU (a RuntimeError, as in PyTorch).

    Examples
    --------
    >>> import torch, fastdrop.torch as fdt
    >>> x = torch.ones(2, 4)
    >>> y = fdt.dropout(x, 0.5, seed=0)
    >>> sorted(set(y.flatten().tolist())) <= [0.0, 2.0]
    True
    >>> fdt.dropout(x, 0.5, training=False) is x
    True
    """
    return _dropout(input, p, training, inplace, "inverted", None, seed, stream)


def _warn_feature_rank(name: str, ndim: int, expected: Tuple[int, int], spatial: int) -> None:
    """PyTorch's deprecation warning for a channel dropout given an unexpected rank."""
    if ndim not in expected:
        warnings.warn(
            f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result "
            "in an error in a future release. To retain the behavior and silence this warning, "
            f"please use dropout instead. Note that {name} exists to provide channel-wise "
            f"dropout on inputs with {spatial} spatial dimensions, a channel dimension, and an "
            f"optional batch dimension (i.e. {expected[0]}D or {expected[1]}D inputs).",
            stacklevel=3)


def dropout1d(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              *, seed: Optional[int] = None, stream: Optional[Stream] = None) -> torch.Tensor:
    """Zero whole channels of an (N, C, L) or (C, L) input, as
    ``torch.nn.functional.dropout1d``: one decision per (sample, channel), shared along L.

    Parameters and returns as for `dropout`; `p` is the probability that a channel is zeroed.

    Raises
    ------
    RuntimeError
        For an input that is not 2-D or 3-D, as PyTorch does.
    """
    ndim = input.dim()
    if ndim not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {ndim}D input. Note that "
            "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
            "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
            "inputs).")
    axes = _channel_axes(ndim, batched=ndim == 3) if training else None
    return _dropout(input, p, training, inplace, "inverted", axes, seed, stream)


def dropout2d(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              *, seed: Optional[int] = None, stream: Optional[Stream] = None) -> torch.Tensor:
    """Zero whole channels of an (N, C, H, W) input, as ``torch.nn.functional.dropout2d``:
    one decision per (sample, channel), shared over H and W.

    Like PyTorch, it treats every input as batched: a 3-D input is (N, C, L) (1-D channel
    dropout, with PyTorch's warning), and other ranks than 3 and 4 warn as deprecated; the
    decisions are always shared over the axes after the second.

    Parameters and returns as for `dropout`; `p` is the probability that a channel is zeroed.
    """
    ndim = input.dim()
    _warn_feature_rank("dropout2d", ndim, (3, 4), 2)
    if ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C is "
            "the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2)
    axes = _channel_axes(ndim, batched=True) if training else None
    return _dropout(input, p, training, inplace, "inverted", axes, seed, stream)


def dropout3d(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              *, seed: Optional[int] = None, stream: Optional[Stream] = None) -> torch.Tensor:
    """Zero whole channels of an (N, C, D, H, W) or (C, D, H, W) input, as
    ``torch.nn.functional.dropout3d``: one decision per (sample, channel), shared over D, H, W.

    As in PyTorch, any input that is not 5-D is taken as unbatched (C, ...), and ranks other
    than 4 and 5 warn as deprecated.

    Parameters and returns as for `dropout`; `p` is the probability that a channel is zeroed.
    """
    ndim = input.dim()
    _warn_feature_rank("dropout3d", ndim, (4, 5), 3)
    axes = _channel_axes(ndim, batched=ndim == 5) if training else None
    return _dropout(input, p, training, inplace, "inverted", axes, seed, stream)


def alpha_dropout(input: torch.Tensor, p: float = 0.5, training: bool = False,
                  inplace: bool = False, *, seed: Optional[int] = None,
                  stream: Optional[Stream] = None) -> torch.Tensor:
    """Alpha dropout for SELU networks, as ``torch.nn.functional.alpha_dropout`` (whose
    `training` also defaults to False).

    Kept units become a * x + b and dropped ones a * alpha' + b, with alpha' = -1.7580993...
    (SELU's negative saturation), a = (q + alpha'**2 q (1 - q))**-1/2, b = -a (1 - q) alpha' and
    q = 1 - p: PyTorch's constants, so that zero-mean, unit-variance inputs keep mean 0 and
    variance 1.  The gradient is a * m * dy.  p = 1 gives zeros, as in PyTorch.

    Parameters and returns as for `dropout`.
    """
    return _dropout(input, p, training, inplace, "alpha", None, seed, stream)


def feature_alpha_dropout(input: torch.Tensor, p: float = 0.5, training: bool = False,
                          inplace: bool = False, *, seed: Optional[int] = None,
                          stream: Optional[Stream] = None) -> torch.Tensor:
    """Alpha dropout of whole channels of an (N, C, ...) input, as
    ``torch.nn.functional.feature_alpha_dropout``: one decision per (sample, channel).

    Parameters and returns as for `alpha_dropout`.
    """
    axes = _channel_axes(input.dim(), batched=True) if training else None
    return _dropout(input, p, training, inplace, "alpha", axes, seed, stream)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

class _StreamOwner:
    """What fastdrop's modules add to their torch counterparts: a stream of their own.

    Placed before the torch class in the bases, so that ``isinstance(layer, torch.nn.Dropout)``
    still holds (code that looks for dropout layers, e.g. to enable Monte-Carlo dropout, finds
    these too).
    """

    stream: Stream

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: Optional[int] = None,
                 subsequence: int = 0) -> None:
        super().__init__(p, inplace)
        self.stream = layer_stream(seed, subsequence)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stream={self.stream!r}"


_MODULE_PARAMETERS = """
    Parameters
    ----------
    p : float, optional
        Probability that {unit} is zeroed, in [0, 1] (PyTorch's convention).
    inplace : bool, optional
        Overwrite the input, under PyTorch's rules (see `dropout`).
    seed : int, optional
        Seed of the layer's own `fastdrop.Stream`.  None spawns the stream from fastdrop's
        default stream at construction, so ``fastdrop.manual_seed(s)`` before building the
        model makes its masks reproducible.
    subsequence : int, optional
        Subsequence of the layer's stream, in [0, 2**63): e.g. the process rank in
        distributed training, so that each process draws independent masks from one seed.

    Attributes
    ----------
    stream : fastdrop.Stream
        The stream the layer draws from (each training call advances it); replace it or call
        its ``manual_seed`` to re-seed the layer.
"""


class Dropout(_StreamOwner, torch.nn.Dropout):
    __doc__ = """Drop-in for ``torch.nn.Dropout`` on CPU tensors: in training, zero each
    element with probability p and scale the rest by 1 / (1 - p); in evaluation, the identity.
    """ + _MODULE_PARAMETERS.format(unit="an element") + """
    Examples
    --------
    >>> import torch, fastdrop.torch as fdt
    >>> layer = fdt.Dropout(0.2, seed=0)
    >>> x = torch.ones(1000, requires_grad=True)
    >>> y = layer(x)
    >>> y.backward(torch.ones(1000))
    >>> torch.equal(x.grad, y.detach())
    True
    >>> layer.eval()(x) is x
    True
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training, self.inplace, stream=self.stream)


class Dropout1d(_StreamOwner, torch.nn.Dropout1d):
    __doc__ = """Drop-in for ``torch.nn.Dropout1d``: zero whole channels of (N, C, L) or (C, L)
    inputs (see `dropout1d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout1d(input, self.p, self.training, self.inplace, stream=self.stream)


class Dropout2d(_StreamOwner, torch.nn.Dropout2d):
    __doc__ = """Drop-in for ``torch.nn.Dropout2d``: zero whole channels of (N, C, H, W) inputs;
    3-D inputs are (N, C, L), as in PyTorch (see `dropout2d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout2d(input, self.p, self.training, self.inplace, stream=self.stream)


class Dropout3d(_StreamOwner, torch.nn.Dropout3d):
    __doc__ = """Drop-in for ``torch.nn.Dropout3d``: zero whole channels of (N, C, D, H, W) or
    (C, D, H, W) inputs (see `dropout3d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout3d(input, self.p, self.training, self.inplace, stream=self.stream)


class AlphaDropout(_StreamOwner, torch.nn.AlphaDropout):
    __doc__ = """Drop-in for ``torch.nn.AlphaDropout``: alpha dropout for SELU networks in
    training, the identity in evaluation (see `alpha_dropout`).  Unlike torch's module, which
    ignores it, `inplace` is honoured as documented.
    """ + _MODULE_PARAMETERS.format(unit="an element")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return alpha_dropout(input, self.p, self.training, self.inplace, stream=self.stream)


class FeatureAlphaDropout(_StreamOwner, torch.nn.FeatureAlphaDropout):
    __doc__ = """Drop-in for ``torch.nn.FeatureAlphaDropout``: alpha dropout of whole channels
    of (N, C, ...) inputs (see `feature_alpha_dropout`).  `inplace` is honoured.
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return feature_alpha_dropout(input, self.p, self.training, self.inplace,
                                     stream=self.stream)
