"""PyTorch adapter: fastdrop as a drop-in for ``torch.nn.Dropout`` and its relatives on CPU tensors.

The functions and modules here take PyTorch's conventions (``p`` is the probability that a unit
is *dropped*; keep_prob = 1 - p) and PyTorch's semantics, and run fastdrop's kernels on the
tensors' memory through zero-copy NumPy views.  The kernels are registered as PyTorch operators,
``torch.ops.fastdrop.dropout`` and ``torch.ops.fastdrop.dropout_backward``, with fake (meta)
implementations, autograd formulas and vmap rules, so that torch.compile, torch.export,
torch.jit.trace, torch.func and activation checkpointing see them as they see PyTorch's own.

Masks are seeded from torch's generator: a training call draws one 64-bit seed with
``torch.randint`` (from the default CPU generator, or a ``generator=``) and masks with it at
block 0 of its Philox stream, so ``torch.manual_seed``, ``torch.random.fork_rng`` and
checkpointing's RNG-state restoring govern the masks as they govern PyTorch's dropout.  The
modules hold no random state.  ``seed=`` gives an explicit, stateless mask (the one
``fastdrop.dropout`` gives on the NumPy view) and ``subsequence=`` independent masks per process
of a distributed job.  Results match PyTorch's in distribution, not bit for bit, and dropped
units are exactly +0.0 (a select, so a dropped NaN does not survive, where PyTorch multiplies by
0).  Autograd saves no tensor of the input's size: only the seed's two words.

Outputs and gradients live in memory NumPy allocated, so, like any tensor from
``torch.from_numpy``, they cannot be resized in place (``Tensor.resize_``).  Those of 32 MiB or
more come from a cache of freed outputs, as PyTorch's CUDA allocator does for GPU memory: see
`empty_cache`, `cached_bytes` and `set_cache_limit`.

Importing this module needs PyTorch (``pip install "fastdropout[torch]"``); ``import fastdrop``
does not.
"""
from __future__ import annotations

import functools
import operator
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

import torch.autograd.forward_ad as _forward_ad

# The parts of torch, private ones among them, that the routing below relies on (tested with
# torch 2.13): a torch that lacks one gets this clear ImportError, not an AttributeError in the
# middle of a training step.
_TORCH_NEEDS = ("library.custom_op", "library.register_fake", "_C._get_tracing_state",
                "_C._len_torch_dispatch_stack", "_C._are_functorch_transforms_active",
                "_C._functorch.get_interpreter_stack", "_C._functorch.TransformType",
                "_C._dispatch_keys", "_C.DispatchKeySet", "_C.DispatchKey", "_C._FunctionBase",
                "autograd.forward_ad._current_level", "Tensor._is_view")


def _torch_lacks(path: str) -> bool:
    thing = torch
    for name in path.split("."):
        if not hasattr(thing, name):
            return True
        thing = getattr(thing, name)
    return False


if any(_torch_lacks(path) for path in _TORCH_NEEDS):
    raise ImportError(
        f"fastdrop.torch does not support torch {torch.__version__}, which lacks "
        f"{', '.join('torch.' + path for path in _TORCH_NEEDS if _torch_lacks(path))}; it is "
        "tested with torch 2.13")

import fastdrop
from fastdrop._api import SUPPORTED_DTYPES
from fastdrop._core import DropoutMask, Stream
from fastdrop._stream import (KEEP_PROB_RESOLUTION, SUBSEQUENCE_LIMIT, check_seed,
                              check_subsequence)

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
    if tensor.layout is not torch.strided or tensor.is_nested:
        layout = "is a nested tensor" if tensor.is_nested else f"has layout {tensor.layout}"
        raise TypeError(f"fastdrop.torch needs a strided (dense) tensor; {name} {layout}")
    hint = (" (bfloat16 needs the ml_dtypes package: pip install \"fastdropout[bfloat16]\")"
            if tensor.dtype is torch.bfloat16 else "")
    raise TypeError(f"fastdrop.torch serves {_SERVED} tensors; {name} has dtype "
                    f"{tensor.dtype}{hint}")


def _serves(tensor: torch.Tensor) -> bool:
    """Whether the kernels can run on `tensor` in training (see `_refuse` for why not)."""
    return (tensor.dtype in _NUMPY_DTYPES and tensor.is_cpu and tensor.layout is torch.strided
            and not tensor.is_nested)  # (a nested tensor's layout may be strided)


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
# The kernels: the operators' implementations
# ---------------------------------------------------------------------------------------------

# A key is two int64 words, (low, high) 32 bits of the seed: what torch.randint draws cleanly.
_KEY_WORD_LIMIT = 2**32
_MODES = ("inverted", "alpha")  # those of fastdrop's modes that PyTorch has

def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The tensor of `dtype` sharing the memory of `array`, an output from `_output_like`.

    Like every tensor from torch.from_numpy, the result cannot be resized in place.
    """
    if dtype is torch.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _empty_like(tensor: torch.Tensor, array: np.ndarray) -> Tuple[torch.Tensor, np.ndarray]:
    """An uninitialised result for `tensor` (whose NumPy view is `array`) and its NumPy view, with
    the strides ``torch.empty_like`` gives, which the fake kernels promise: a contiguous tensor's
    from `_output_like` (the large ones from the cache), any other from torch.empty_like itself
    (which keeps channels-last and other dense layouts)."""
    if tensor.is_contiguous() and tensor.numel():
        array = _output_like(array)
        return _as_tensor(array, tensor.dtype), array
    result = torch.empty_like(tensor)
    return result, _as_numpy(result, "the result")


def _check_key(shape: torch.Size, key: torch.Tensor) -> int:
    """The number of leading axes of `shape` that `key` gives one key each (0 for one key for
    the whole tensor), or a clear error."""
    key_shape = key.shape
    batch_ndim = len(key_shape) - 1
    # (Tuples: comparing torch.Size objects goes through symbolic-shape code, microseconds.)
    if (key.dtype is not torch.int64 or batch_ndim < 0 or key_shape[-1] != 2
            or (batch_ndim and tuple(shape[:batch_ndim]) != tuple(key_shape[:-1]))):
        raise ValueError(
            f"key must be an int64 tensor of shape S + (2,), S a prefix of the input's shape "
            f"{tuple(shape)}; got {key.dtype} of shape {tuple(key_shape)}")
    return batch_ndim


def _seeds(tensor: torch.Tensor, key: torch.Tensor) -> Tuple[List[Tuple[tuple, int]], int]:
    """((index, seed) of each member, the number of batch axes): the tensors tensor[index], each
    masked with its own 64-bit seed, whose key words are its low and high 32 bits."""
    batch_ndim = _check_key(tensor.shape, key)
    if batch_ndim:
        indices, pairs = list(np.ndindex(*key.shape[:-1])), key.reshape(-1, 2).tolist()
    else:  # one key for the whole tensor: the common case, kept cheap
        indices, pairs = [()], [key.tolist()]
    seeds = [(index, low | high << 32) for index, (low, high) in zip(indices, pairs)
             if 0 <= low < _KEY_WORD_LIMIT and 0 <= high < _KEY_WORD_LIMIT]
    if len(seeds) != len(pairs):
        raise ValueError(f"key words must be in [0, 2**32), got {key.tolist()}")
    return seeds, batch_ndim


def _kernel(forward: bool, tensor: torch.Tensor, key: torch.Tensor, p: float, mode: str,
            shared_axes: List[int], subsequence: int, inplace: bool = False,
            masks: Optional[List[Tuple[tuple, DropoutMask]]] = None) -> torch.Tensor:
    """The dropout (forward) or its gradient (not forward) of `tensor` under `key`: the work of
    the fastdrop::dropout and fastdrop::dropout_backward operators, into a new tensor or, when
    `inplace`, into `tensor` itself.

    `masks` lets an eager autograd.Function skip regenerating what its forward knew: a forward
    call appends (index, DropoutMask) of each member to it, and a gradient call given that
    non-empty list takes the decisions' coordinates from it instead of decoding the key into
    the very same masks.
    """
    keep_prob = _keep_prob(p)
    array = _as_numpy(tensor, "input" if forward else "grad")
    if masks and not forward:
        members = masks
    else:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        members, batch_ndim = _seeds(tensor, key)
        axes = tuple(shared_axes)
        if batch_ndim:  # a member's axes: the same from the end, batch_ndim fewer from the start
            axes = tuple(axis - batch_ndim if axis >= 0 else axis for axis in axes)
            if any(axis < -tensor.dim() + batch_ndim for axis in axes):
                raise ValueError(f"shared_axes {list(shared_axes)} include one of the "
                                 f"{batch_ndim} leading axes that have keys of their own")
    result, out = (tensor, array) if inplace else _empty_like(tensor, array)
    if keep_prob == 0.0:  # p = 1: everything dropped, nothing to draw (the core refuses q = 0)
        out[...] = 0
        return result
    for index, member in members:  # member: the seed, or the DropoutMask given in `masks`
        # (A 0-d array indexed by () would give a NumPy scalar.)
        x, y = (array[index], out[index]) if index else (array, out)
        if forward:
            _, mask = fastdrop.dropout(x, keep_prob, mode=mode, shared_axes=axes,
                                       stream=Stream(member, subsequence), out=y)
            if masks is not None:
                masks.append((index, mask))
        else:
            mask = member if masks else DropoutMask(x.shape, axes, keep_prob, mode, True, member,
                                                    subsequence, 0)
            fastdrop.dropout_backward(x, mask, out=y)
    return result


def _forward_kernel(input: torch.Tensor, key: torch.Tensor, p: float, mode: str,
                    shared_axes: List[int], subsequence: int) -> torch.Tensor:
    return _kernel(True, input, key, p, mode, shared_axes, subsequence)


def _backward_kernel(grad: torch.Tensor, key: torch.Tensor, p: float, mode: str,
                     shared_axes: List[int], subsequence: int) -> torch.Tensor:
    return _kernel(False, grad, key, p, mode, shared_axes, subsequence)


# ---------------------------------------------------------------------------------------------
# The operators
# ---------------------------------------------------------------------------------------------

_SIGNATURE = ("(Tensor {0}, Tensor key, float p, str mode, int[] shared_axes, int subsequence) "
              "-> Tensor")

_dropout_op = torch.library.custom_op("fastdrop::dropout", _forward_kernel, mutates_args=(),
                                      device_types="cpu", schema=_SIGNATURE.format("input"))
_dropout_op.__doc__ = """fastdrop::dropout(input, key, p, mode, shared_axes, subsequence): the
dropout of `input` with drop probability `p` (mode "inverted" or "alpha"), decisions shared along
`shared_axes`, drawn from Philox key `key` (int64 words (low, high) of the 64-bit seed) at block 0
of `subsequence`.  A key of shape S + (2,), S a prefix of input.shape, gives each input[i] (i in
S) its own key, as torch.func.vmap's randomness="different" needs."""

_dropout_backward_op = torch.library.custom_op(
    "fastdrop::dropout_backward", _backward_kernel, mutates_args=(), device_types="cpu",
    schema=_SIGNATURE.format("grad"))
_dropout_backward_op.__doc__ = """fastdrop::dropout_backward(grad, key, p, mode, shared_axes,
subsequence): the gradient through fastdrop::dropout with the same arguments.  Linear and
diagonal in `grad`, hence its own adjoint and its own forward derivative."""


def _fake(tensor: torch.Tensor, key: torch.Tensor, p: float, mode: str, shared_axes: List[int],
          subsequence: int) -> torch.Tensor:
    """Both operators' result as tracers see it: shaped, typed and laid out as the kernels'."""
    _check_key(tensor.shape, key)
    return torch.empty_like(tensor)


def _operator_setup_context(ctx, inputs, output) -> None:
    """What the gradient needs: the key (two int64 words) and the other arguments, nothing of the
    input's size."""
    ctx.save_for_backward(inputs[1])
    ctx.arguments = tuple(inputs[2:])


def _operator_backward(ctx, grad: torch.Tensor):
    (key,) = ctx.saved_tensors
    return (_dropout_backward_op(grad, key, *ctx.arguments),) + (None,) * 5


def _batched(in_dims, tensor: torch.Tensor, key: torch.Tensor,
             shared_axes: List[int]) -> Tuple[torch.Tensor, torch.Tensor, List[int], int]:
    """Both operators' vmap rule: (tensor, key, shared_axes) to call the operator with one level
    down, and the batch axis of its result.

    A batched key (randomness="different") gives each member its own: the batch axis goes
    first in the tensor and the key.  An unbatched key (randomness="same", or an explicit seed)
    gives every member the same mask: the batch axis goes just after the axes the key already
    covers, and the mask is shared along it.
    """
    tensor_dim, key_dim = in_dims[0], in_dims[1]
    if key_dim is not None:
        key = key.movedim(key_dim, 0)
        tensor = (tensor.movedim(tensor_dim, 0) if tensor_dim is not None
                  else tensor.expand(key.shape[0], *tensor.shape))
        where, added = 0, []
    else:
        where = key.dim() - 1
        tensor = tensor.movedim(tensor_dim, where)
        added = [where]
    axes = sorted([axis + 1 if axis >= where else axis for axis in shared_axes] + added)
    return tensor, key, axes, where


def _operator_vmap(op, info, in_dims, tensor, key, p, mode, shared_axes, subsequence):
    tensor, key, axes, where = _batched(in_dims, tensor, key, shared_axes)
    return op(tensor, key, p, mode, axes, subsequence), where


for _op in (_dropout_op, _dropout_backward_op):
    _op.register_fake(_fake)
    _op.register_autograd(_operator_backward, setup_context=_operator_setup_context)
    _op.register_vmap(functools.partial(_operator_vmap, _op))


# ---------------------------------------------------------------------------------------------
# Eager calls: the kernels straight, or autograd.Functions around them
# ---------------------------------------------------------------------------------------------

# Tensors of these types only take the eager routes below: subclasses (FakeTensor, DTensor, ...)
# get the operators, so that their own dispatch sees the call.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)

# The dispatch keys of a dense CPU tensor (an inference tensor has only the first).  Any other
# key (legacy vmap's Batched, functorch's wrappers, Negative, Conjugate, Python, another device)
# means that the kernels must not read the memory: the operator's dispatch deals with it first.
_PLAIN_KEYS = functools.reduce(operator.or_, (torch._C.DispatchKeySet(key) for key in (
    torch._C.DispatchKey.CPU, torch._C.DispatchKey.ADInplaceOrView,
    torch._C.DispatchKey.AutogradCPU, torch._C.DispatchKey.AutocastCPU)))
_PLAIN_KEYS_RAW = _PLAIN_KEYS.raw_repr()


_OPERATOR, _TRANSFORMED, _AUTOGRAD, _KERNEL = "operator", "transformed", "autograd", "kernel"

# The torch.func transforms `_transform_route` tells apart.
_FUNCTIONALIZE = torch._C._functorch.TransformType.Functionalize
_JVP = torch._C._functorch.TransformType.Jvp


def _route(tensor: torch.Tensor) -> str:
    """How a call on `tensor` is computed, every route giving the same bits:

    - `_OPERATOR`, the registered operator, when a tracer (torch.compile, torch.export,
      torch.jit.trace, make_fx), torch.func.functionalize, a tensor subclass or a dispatch mode
      must see the call, or when the kernels cannot read the tensor's memory directly and
      nothing records the call;
    - `_TRANSFORMED`, the operator's eager autograd.Function through torch's Function.apply,
      under the other torch.func transforms, or where the operator would be called but forward
      mode AD records the call (torch.library registers no forward-mode formula: the operator
      would drop the tangent), or for a tensor the kernels cannot read that autograd records:
      the Function's vmap rule and derivatives serve the transforms, and its forward calls the
      operator where the kernels cannot read the tensor;
    - `_AUTOGRAD`, the same Function applied directly, when autograd (backward or forward
      mode) records the call;
    - `_KERNEL`, the operator's own implementation, called straight, otherwise.

    Calling the registered operator costs tens of microseconds of dispatch, torch's
    Function.apply twenty-five (it binds the arguments with inspect.signature, which only the
    transforms need); the routes share the kernels and the formulas.
    """
    # is_compiling first: TorchDynamo evaluates it as a constant and never traces the rest.
    if torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None:
        return _OPERATOR
    if torch._C._are_functorch_transforms_active():
        return _transform_route()
    forward_ad = _forward_ad._current_level >= 0
    if type(tensor) not in _PLAIN_TYPES or torch._C._len_torch_dispatch_stack():
        return _TRANSFORMED if forward_ad else _OPERATOR
    readable = _readable(tensor)
    if (torch.is_grad_enabled() and tensor.requires_grad) or forward_ad:
        return _AUTOGRAD if readable else _TRANSFORMED
    return _KERNEL if readable else _OPERATOR


def _transform_route() -> str:
    """The route under torch.func transforms: the Function's, unless torch.func.functionalize is
    among them, which has no rule for an autograd.Function (while the operator is functional).
    Under functionalize and jvp both, the Function's all the same: torch's error, rather than
    the operator's silently dropped tangent."""
    transforms = {interpreter.key() for interpreter in torch._C._functorch.get_interpreter_stack()}
    if _FUNCTIONALIZE in transforms and _JVP not in transforms:
        return _OPERATOR
    return _TRANSFORMED


def _readable(tensor: torch.Tensor) -> bool:
    """Whether the kernels may read `tensor`'s memory directly (see `_PLAIN_KEYS`)."""
    return torch._C._dispatch_keys(tensor).raw_repr() | _PLAIN_KEYS_RAW == _PLAIN_KEYS_RAW


def _kernel_may_serve(tensor: torch.Tensor) -> bool:
    """Whether a Function's forward may run the kernel on `tensor` rather than the operator: the
    kernel can read it, and no dispatch mode (make_fx, FakeTensorMode, a logger) is there to
    see the operator, as under torch.func transforms or forward-mode AD it may be."""
    return _readable(tensor) and not torch._C._len_torch_dispatch_stack()


def _call(function, op, kernel, tensor: torch.Tensor, key: torch.Tensor, arguments: tuple,
          masks: Optional[list] = None) -> torch.Tensor:
    """op(tensor, key, *arguments) by the route `_route` chooses; `function` is the
    operator's eager autograd.Function, `kernel` its implementation, `masks` as `_kernel`
    takes them (the eager routes only)."""
    route = _route(tensor)
    if route is _KERNEL:
        return kernel(tensor, key, *arguments, masks=masks)
    # The arguments after the key go to the Function as one tuple: a microsecond saved for each.
    if route is _AUTOGRAD:
        return function.apply_directly(tensor, key, arguments, [] if masks is None else masks)
    if route is _TRANSFORMED:
        return function.apply(tensor, key, arguments, None)
    return op(tensor, key, *arguments)


class _MaskFunction(torch.autograd.Function):
    """What the eager Functions of both operators share: the key saved (nothing of the input's
    size), and the derivative of a map linear and diagonal in the tensor (the gradient kernel
    with the same key) both ways."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # The C implementation torch's Function.apply ends in, bound to the subclass.
        cls.apply_directly = torch._C._FunctionBase.__dict__["apply"].__get__(None, cls)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _, key, ctx.arguments, ctx.masks = inputs
        ctx.save_for_backward(key)
        ctx.save_for_forward(key)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (key,) = ctx.saved_tensors
        return _gradient(grad, key, ctx.arguments, ctx.masks), None, None, None

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor, *_):
        (key,) = ctx.saved_tensors
        return _gradient(tangent, key, ctx.arguments, ctx.masks)


def _function_vmap(call, in_dims, tensor, key, arguments, masks):
    p, mode, shared_axes, subsequence = arguments
    tensor, key, axes, where = _batched(in_dims, tensor, key, shared_axes)
    return call(tensor, key, (p, mode, axes, subsequence)), where


class _Dropout(_MaskFunction):
    """fastdrop::dropout in eager mode."""

    @staticmethod
    def forward(input, key, arguments, masks):
        if _kernel_may_serve(input):
            return _kernel(True, input, key, *arguments, masks=masks)
        return _dropout_op(input, key, *arguments)

    @staticmethod
    def vmap(info, in_dims, *inputs):
        return _function_vmap(_forward, in_dims, *inputs)


class _Gradient(_MaskFunction):
    """fastdrop::dropout_backward in eager mode: its own derivative, which makes dropout
    twice differentiable with nothing stored."""

    @staticmethod
    def forward(grad, key, arguments, masks):
        if _kernel_may_serve(grad):
            return _kernel(False, grad, key, *arguments, masks=masks)
        return _dropout_backward_op(grad, key, *arguments)

    @staticmethod
    def vmap(info, in_dims, *inputs):
        return _function_vmap(_gradient, in_dims, *inputs)


_forward = functools.partial(_call, _Dropout, _dropout_op, functools.partial(_kernel, True))
_gradient = functools.partial(_call, _Gradient, _dropout_backward_op,
                              functools.partial(_kernel, False))


# ---------------------------------------------------------------------------------------------
# The functional interface
# ---------------------------------------------------------------------------------------------

def _keep_prob(p: float) -> float:
    """1 - p for p in [0, 1], with PyTorch's message otherwise (NaN included), and an error in
    PyTorch's terms for a 1 - p finer than the decisions' resolution, 2**-32, which the core
    would report as its keep_prob."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    keep_prob = 1.0 - float(p)
    if 0.0 < keep_prob < KEEP_PROB_RESOLUTION:
        raise ValueError(f"fastdrop.torch needs p = 1 or 1 - p at least 2**-32 (the resolution "
                         f"of its decisions), got p = {p!r}")
    return keep_prob



def _check_inplace(input: torch.Tensor) -> None:
    """PyTorch's refusals of an in-place dropout, with its messages, made before anything is
    drawn or written.  Where autograd records the call, the write goes through Tensor.copy_,
    which applies the rest of PyTorch's in-place rules (views of unbind's outputs, ...)."""
    if input.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed.You can "
            "make a clone to get a normal tensor before doing inplace update.See "
            "https://github.com/pytorch/rfcs/pull/17 for more details.")
    if torch.is_grad_enabled() and input.requires_grad:
        if input.is_leaf and input._is_view():  # only a view made under no_grad is both
            raise RuntimeError(
                "A view was created in no_grad mode and is being modified inplace with grad "
                "mode enabled. Given that this use case is ambiguous and error-prone, it is "
                "forbidden. You can clarify your code by moving both the view and the inplace "
                "either both inside the no_grad block (if you don't want the inplace to be "
                "tracked) or both outside (if you want the inplace to be tracked).")
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


def _key(seed: Optional[int], generator: Optional[torch.Generator]) -> torch.Tensor:
    """The Philox key of a training call: the words (low, high) of `seed`, or 64 random bits
    drawn from `generator` (torch's default CPU generator when None) by a torch operation, so
    that torch.manual_seed, fork_rng, get/set_rng_state and checkpointing govern it, tracers
    record it and vmap batches it.

    On the CPU whatever the default device (``torch.set_default_device``, ``with
    torch.device(...)``): the kernels read it there, and only the CPU generator's state is the
    one checkpointing restores for CPU inputs."""
    if seed is None:  # int64, as needed
        return torch.randint(_KEY_WORD_LIMIT, (2,), generator=generator, device="cpu")
    if generator is not None:
        raise ValueError("pass seed= or generator=, not both")
    seed = check_seed(seed)
    return torch.tensor([seed & (_KEY_WORD_LIMIT - 1), seed >> 32], dtype=torch.int64,
                        device="cpu")


def _dropout(input: torch.Tensor, p: float, training: bool, inplace: bool, mode: str,
             shared_axes: Tuple[int, ...], seed: Optional[int], subsequence: int,
             generator: Optional[torch.Generator]) -> torch.Tensor:
    """Every variant's work: `mode` and `shared_axes` as for fastdrop.dropout."""
    if not 0.0 <= p <= 1.0:
        _keep_prob(p)  # PyTorch's error, in evaluation too
    # The input itself, as PyTorch returns it, whatever its device, dtype or wrapper.  (Under
    # torch.jit.trace numel() is a traced value; a trace is specialised to its shapes anyway.)
    if not training or p == 0 or (not torch.jit.is_tracing() and input.numel() == 0):
        return input
    if not _serves(input):
        _refuse(input, "input")
    _keep_prob(p)  # its errors before anything is drawn
    if type(subsequence) is not int or not 0 <= subsequence < SUBSEQUENCE_LIMIT:
        subsequence = check_subsequence(subsequence)  # the error, or the int of an integer
    if inplace and not torch.compiler.is_compiling():  # (a compiler's trace runs copy_'s)
        _check_inplace(input)
    # p = 1 zeroes everything and, as in PyTorch, draws nothing: its key is never read.
    key = torch.zeros(2, dtype=torch.int64, device="cpu") if p == 1 else _key(seed, generator)
    arguments = (float(p), mode, list(shared_axes), subsequence)
    # In place, the kernel writes into the input when nothing records the call and PyTorch has
    # no rule left to apply (the rules for views concern grad mode); otherwise Tensor.copy_
    # writes the output, applying them all.
    if (inplace and _route(input) is _KERNEL
            and not (torch.is_grad_enabled() and input._is_view())):
        _kernel(True, input, key, *arguments, inplace=True)
        torch.autograd.graph.increment_version(input)  # our write went through NumPy
        return input
    output = _forward(input, key, arguments)
    return input.copy_(output) if inplace else output


def _channel_axes(ndim: int, batched: bool) -> Tuple[int, ...]:
    """The axes after the channel axis of an (N, C, ...) input, or (C, ...) when not batched:
    the axes one decision per (sample, channel) is shared over."""
    channel = 1 if batched else 0
    if ndim < channel + 1:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    return tuple(range(channel + 1, ndim))


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
            *, seed: Optional[int] = None, subsequence: int = 0,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Drop each element with probability `p` and scale the rest by 1 / (1 - p), as
    ``torch.nn.functional.dropout``.

    A training call draws one 64-bit seed from torch's generator (one ``torch.randint`` call,
    whatever the tensor's size) and masks with fastdrop's kernels; p = 0 and p = 1 draw
    nothing, as in PyTorch.

    Parameters
    ----------
    input : torch.Tensor
        In training, a CPU tensor of dtype float16, bfloat16 (with ml_dtypes installed), float32
        or float64, any shape and strides; it is not copied.  In evaluation, any tensor.
    p : float, optional
        Probability that an element is zeroed, in [0, 1].  p = 1 zeroes everything (the
        gradient too); p = 0 returns `input`.  Otherwise 1 - p must be at least 2**-32.
    training : bool, optional
        False returns `input` itself, whatever its device and dtype; nothing is drawn.
    inplace : bool, optional
        Overwrite `input` and return it, under PyTorch's rules for in-place operations.
    seed : int, optional
        Stateless call: mask with this 64-bit seed, from block 0 of its Philox stream, so the
        same seed, shape and p always give the same mask (fastdrop.dropout's on the NumPy
        view) and nothing is drawn from torch's generator.  Excludes `generator`.
    subsequence : int, optional
        The Philox subsequence, in [0, 2**63): e.g. the process rank in distributed training,
        so that ranks seeded alike still draw independent masks.
    generator : torch.Generator, optional
        The CPU generator the seed is drawn from when `seed` is None; torch's default
        generator when None, so ``torch.manual_seed`` and ``torch.random.fork_rng`` govern the
        masks as they govern ``torch.nn.functional.dropout``'s.

    Returns
    -------
    torch.Tensor
        The output; differentiable (backward, double backward, forward mode) when `input`
        is, with a derivative that regenerates the decisions from the seed rather than
        storing a mask.

    Raises
    ------
    ValueError
        `p` outside [0, 1], `seed` outside [0, 2**64), `subsequence` outside [0, 2**63), or
        both `seed` and `generator`.
    TypeError
        A `seed` or `subsequence` that is not an integer; in training, an unsupported dtype
        (integer, complex) or layout.
    NotImplementedError
        In training, a tensor on a device other than the CPU (a RuntimeError, as in PyTorch).

    Examples
    --------
    >>> import torch, fastdrop.torch as fdt
    >>> x = torch.ones(2, 4)
    >>> y = fdt.dropout(x, 0.5, seed=0)
    >>> sorted(set(y.flatten().tolist())) <= [0.0, 2.0]
    True
    >>> _ = torch.manual_seed(1); a = fdt.dropout(x, 0.5)
    >>> _ = torch.manual_seed(1); b = fdt.dropout(x, 0.5)
    >>> torch.equal(a, b)
    True
    >>> fdt.dropout(x, 0.5, training=False) is x
    True
    """
    return _dropout(input, p, training, inplace, "inverted", (), seed, subsequence, generator)


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
              *, seed: Optional[int] = None, subsequence: int = 0,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
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
    axes = _channel_axes(ndim, batched=ndim == 3) if training else ()
    return _dropout(input, p, training, inplace, "inverted", axes, seed, subsequence, generator)


def dropout2d(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              *, seed: Optional[int] = None, subsequence: int = 0,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
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
    axes = _channel_axes(ndim, batched=True) if training else ()
    return _dropout(input, p, training, inplace, "inverted", axes, seed, subsequence, generator)


def dropout3d(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,
              *, seed: Optional[int] = None, subsequence: int = 0,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero whole channels of an (N, C, D, H, W) or (C, D, H, W) input, as
    ``torch.nn.functional.dropout3d``: one decision per (sample, channel), shared over D, H, W.

    As in PyTorch, any input that is not 5-D is taken as unbatched (C, ...), and ranks other
    than 4 and 5 warn as deprecated.

    Parameters and returns as for `dropout`; `p` is the probability that a channel is zeroed.
    """
    ndim = input.dim()
    _warn_feature_rank("dropout3d", ndim, (4, 5), 3)
    axes = _channel_axes(ndim, batched=ndim == 5) if training else ()
    return _dropout(input, p, training, inplace, "inverted", axes, seed, subsequence, generator)


def alpha_dropout(input: torch.Tensor, p: float = 0.5, training: bool = False,
                  inplace: bool = False, *, seed: Optional[int] = None, subsequence: int = 0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Alpha dropout for SELU networks, as ``torch.nn.functional.alpha_dropout`` (whose
    `training` also defaults to False).

    Kept units become a * x + b and dropped ones a * alpha' + b, with alpha' = -1.7580993...
    (SELU's negative saturation), a = (q + alpha'**2 q (1 - q))**-1/2, b = -a (1 - q) alpha' and
    q = 1 - p: PyTorch's constants, so that zero-mean, unit-variance inputs keep mean 0 and
    variance 1.  The gradient is a * m * dy.  p = 1 gives zeros, as in PyTorch.

    Parameters and returns as for `dropout`.
    """
    return _dropout(input, p, training, inplace, "alpha", (), seed, subsequence, generator)


def feature_alpha_dropout(input: torch.Tensor, p: float = 0.5, training: bool = False,
                          inplace: bool = False, *, seed: Optional[int] = None,
                          subsequence: int = 0,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Alpha dropout of whole channels of an (N, C, ...) input, as
    ``torch.nn.functional.feature_alpha_dropout``: one decision per (sample, channel).

    Parameters and returns as for `alpha_dropout`.
    """
    axes = _channel_axes(input.dim(), batched=True) if training else ()
    return _dropout(input, p, training, inplace, "alpha", axes, seed, subsequence, generator)


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

class _FastdropModule:
    """What fastdrop's modules add to their torch counterparts: a subsequence, and a clear
    refusal of TorchScript.  No random state: every training call draws its seed from torch's
    generator, so copies (``copy.deepcopy``, as nn.TransformerEncoder clones its layers) draw
    independent masks.

    Placed before the torch class in the bases, so that ``isinstance(layer, torch.nn.Dropout)``
    still holds (code that looks for dropout layers, e.g. to enable Monte-Carlo dropout, finds
    these too).
    """

    subsequence: int

    def __init__(self, p: float = 0.5, inplace: bool = False, *, subsequence: int = 0) -> None:
        super().__init__(p, inplace)
        self.subsequence = check_subsequence(subsequence)

    def extra_repr(self) -> str:
        if self.subsequence:
            return f"{super().extra_repr()}, subsequence={self.subsequence}"
        return super().extra_repr()

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"fastdrop.torch.{type(self).__name__} does not support TorchScript "
            "(torch.jit.script): compile the model with torch.compile, export it with "
            "torch.export.export, or trace it with torch.jit.trace, which record fastdrop's "
            "operators (fastdrop::dropout)")


_MODULE_PARAMETERS = """
    Parameters
    ----------
    p : float, optional
        Probability that {unit} is zeroed, in [0, 1] (PyTorch's convention).
    inplace : bool, optional
        Overwrite the input, under PyTorch's rules (see `dropout`).
    subsequence : int, optional
        The Philox subsequence of the masks, in [0, 2**63): e.g. the process rank in
        distributed training, so that ranks seeded alike draw independent masks.

    Notes
    -----
    Each training call draws its seed from torch's default generator: ``torch.manual_seed``
    makes the masks reproducible, activation checkpointing recomputes them exactly, and deep
    copies draw their own.
"""


class Dropout(_FastdropModule, torch.nn.Dropout):
    __doc__ = """Drop-in for ``torch.nn.Dropout`` on CPU tensors: in training, zero each
    element with probability p and scale the rest by 1 / (1 - p); in evaluation, the identity.
    """ + _MODULE_PARAMETERS.format(unit="an element") + """
    Examples
    --------
    >>> import torch, fastdrop.torch as fdt
    >>> layer = fdt.Dropout(0.2)
    >>> x = torch.ones(1000, requires_grad=True)
    >>> y = layer(x)
    >>> y.backward(torch.ones(1000))
    >>> torch.equal(x.grad, y.detach())
    True
    >>> layer.eval()(x) is x
    True
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _dropout(input, self.p, self.training, self.inplace, "inverted", (), None,
                        self.subsequence, None)


class Dropout1d(_FastdropModule, torch.nn.Dropout1d):
    __doc__ = """Drop-in for ``torch.nn.Dropout1d``: zero whole channels of (N, C, L) or (C, L)
    inputs (see `dropout1d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout1d(input, self.p, self.training, self.inplace,
                         subsequence=self.subsequence)


class Dropout2d(_FastdropModule, torch.nn.Dropout2d):
    __doc__ = """Drop-in for ``torch.nn.Dropout2d``: zero whole channels of (N, C, H, W) inputs;
    3-D inputs are (N, C, L), as in PyTorch (see `dropout2d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout2d(input, self.p, self.training, self.inplace,
                         subsequence=self.subsequence)


class Dropout3d(_FastdropModule, torch.nn.Dropout3d):
    __doc__ = """Drop-in for ``torch.nn.Dropout3d``: zero whole channels of (N, C, D, H, W) or
    (C, D, H, W) inputs (see `dropout3d`).
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout3d(input, self.p, self.training, self.inplace,
                         subsequence=self.subsequence)


class AlphaDropout(_FastdropModule, torch.nn.AlphaDropout):
    __doc__ = """Drop-in for ``torch.nn.AlphaDropout``: alpha dropout for SELU networks in
    training, the identity in evaluation (see `alpha_dropout`).  Unlike torch's module, which
    ignores it, `inplace` is honoured as documented.
    """ + _MODULE_PARAMETERS.format(unit="an element")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return alpha_dropout(input, self.p, self.training, self.inplace,
                             subsequence=self.subsequence)


class FeatureAlphaDropout(_FastdropModule, torch.nn.FeatureAlphaDropout):
    __doc__ = """Drop-in for ``torch.nn.FeatureAlphaDropout``: alpha dropout of whole channels
    of (N, C, ...) inputs (see `feature_alpha_dropout`).  `inplace` is honoured.
    """ + _MODULE_PARAMETERS.format(unit="a channel")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return feature_alpha_dropout(input, self.p, self.training, self.inplace,
                                     subsequence=self.subsequence)
