"""The implementations the bench compares ("peers") and the arrays they run on.

A peer is one `Peer` entry of `PEERS` (element dropout on 1-d arrays) or `CHANNEL_PEERS` (channel
dropout on an (N, C, H, W) array); everything else (timing, records, targets, report, plot) reads
what it needs from the entries, so a new peer, a framework's dropout say, is one more entry.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

import fastdrop
from fastdrop import _core
from fastdrop._api import SUPPORTED_DTYPES

from .machine import has_jax, has_torch, jax_module, torch_module

DTYPES = tuple(dtype.name for dtype in SUPPORTED_DTYPES)

# The channel-dropout scenario: a ResNet-sized batch of activations, (N, C, H, W), one decision
# per (sample, channel) broadcast over the spatial axes (12.8 million float32 elements, 51 MB).
CHANNEL_SHAPE = (64, 64, 56, 56)
CHANNEL_SHARED_AXES = (2, 3)
CHANNEL_DTYPE = "float32"

# The families, in the legend's order.
FLOOR_FAMILY = "floor"
NUMPY_FAMILY = "NumPy"
TORCH_FAMILY = "PyTorch"
JAX_FAMILY = "JAX"
FASTDROP_FAMILY = "fastdrop"
FAMILIES = (FLOOR_FAMILY, NUMPY_FAMILY, TORCH_FAMILY, JAX_FAMILY, FASTDROP_FAMILY)

MEMORY_FLOOR = "memory floor"
MEMORY_FLOOR_1_THREAD = "memory floor 1 thread"
NUMPY_MULTIPLY = "NumPy multiply"
TEXTBOOK = "textbook NumPy"
BEST_NUMPY = "best NumPy"
FORWARD = "fastdrop forward"
FORWARD_1_THREAD = "fastdrop forward 1 thread"
FORWARD_OUT = "fastdrop forward out="
FORWARD_BITS = "fastdrop forward bits"
BACKWARD = "fastdrop backward"
BACKWARD_BITS = "fastdrop backward bits"
TORCH_1_THREAD = "PyTorch dropout 1 thread"
TORCH_ALL_THREADS = "PyTorch dropout all threads"
FASTDROP_MODULE = "fastdrop.torch module"
TORCH_MODULE = "PyTorch nn.Dropout module"
JAX_DROPOUT = "JAX dropout"
JAX_DROPOUT_GRAD = "JAX dropout forward + backward"
FASTDROP_JAX = "fastdrop.jax"
FASTDROP_JAX_GRAD = "fastdrop.jax forward + backward"
CHANNEL = "fastdrop channel"
TORCH_DROPOUT2D_1_THREAD = "PyTorch dropout2d 1 thread"
TORCH_DROPOUT2D_ALL_THREADS = "PyTorch dropout2d all threads"

Shape = Union[int, Sequence[int]]


def as_shape(shape: Shape) -> Tuple[int, ...]:
    """`shape` as a tuple (an element count as a 1-d shape)."""
    if isinstance(shape, (numbers.Integral, np.integer)):
        return (int(shape),)
    return tuple(int(n) for n in shape)


def elements(shape: Shape) -> int:
    """Elements of an array of `shape`."""
    return int(np.prod(as_shape(shape), dtype=np.int64))


@dataclasses.dataclass
class Workspace:
    """The arrays of one (shape, dtype): a pristine input and the working copy peers act on.

    Build it with `Workspace.create`.  Peers work on `x` (in place where they can); the timing
    calls `refill` to restore it from `source` before every batch of timed calls, outside the
    timed region, so repeated in-place dropout never drives the values to zero, subnormals or
    infinity.
    """

    keep_prob: float
    source: np.ndarray
    x: np.ndarray
    stream: fastdrop.Stream

    @classmethod
    def create(cls, shape: Shape, dtype, keep_prob: float) -> "Workspace":
        """A workspace of `shape` (an element count for a 1-d array) of `dtype`, values uniform
        in [0.5, 1.5).

        Parameters
        ----------
        shape : int or sequence of int
            Number of elements of a 1-d array, or the array's shape.
        dtype : str or numpy.dtype
            Element type, one of `DTYPES`.
        keep_prob : float
            Probability that a unit is kept, in (0, 1].

        Returns
        -------
        Workspace
        """
        shape = as_shape(shape)
        values = np.random.default_rng(0).random(elements(shape), dtype=np.float32)
        values += np.float32(0.5)
        source = values.astype(dtype, copy=False).reshape(shape)
        return cls(keep_prob, source, source.copy(), fastdrop.Stream(seed=0))

    def refill(self) -> None:
        """Copy the pristine input back into `x`."""
        np.copyto(self.x, self.source)


Prepare = Callable[[Workspace], ContextManager[Callable[[], object]]]


def _no_scratch(itemsize: int) -> float:
    return 0.0


def _one_array(itemsize: int) -> float:
    """Scratch of one more array of the data's dtype."""
    return float(itemsize)


@dataclasses.dataclass(frozen=True)
class Peer:
    """One implementation in the comparison.

    Attributes
    ----------
    name : str
        Its row label.
    code : str
        The call that is timed, as the legend shows it.
    prepare : callable
        ``prepare(workspace)`` is a context manager that allocates what the peer needs and
        yields the zero-argument call to time; it frees that (and restores any setting it
        changed) on exit.
    family : str
        One of `FAMILIES` (a framework's peers may bring their own): the legend's groups, the
        plot's line styles.
    single_thread : bool
        It runs on the calling thread alone: its ratio is to the 1-thread memory floor, and the
        thread's CPU time is measured beside the wall time.
    mask_bytes : float
        Bytes per element moved besides reading and writing the data once (a stored bit mask).
    scratch_bytes : callable
        ``scratch_bytes(itemsize)``: bytes per element it allocates besides the workspace, at
        its peak (the size check before a run adds them up).
    available : callable
        Returns False when the peer cannot run here (PyTorch not installed).
    dtypes : tuple of str or None
        The dtype names it accepts; None for all of `DTYPES`.
    summary_label : str or None
        When set, the summary shows fastdrop forward's speed-up over this peer in a column
        "over <summary_label>".
    """

    name: str
    code: str
    prepare: Prepare
    family: str
    single_thread: bool = False
    mask_bytes: float = 0.0
    scratch_bytes: Callable[[int], float] = _no_scratch
    available: Callable[[], bool] = lambda: True
    dtypes: Optional[Tuple[str, ...]] = None
    summary_label: Optional[str] = None

    def supports(self, dtype) -> bool:
        """Whether it can run on arrays of `dtype` (a name or a numpy.dtype)."""
        return self.dtypes is None or np.dtype(dtype).name in self.dtypes


def textbook_dropout(A: np.ndarray, keep_prob: float) -> np.ndarray:
    """The seed thread's forward dropout, verbatim: inverted dropout as textbooks write it.

    Parameters
    ----------
    A : numpy.ndarray
        Activations.
    keep_prob : float
        Probability that a unit is kept.

    Returns
    -------
    numpy.ndarray
        A new array: A with the dropped units zeroed and the kept ones divided by keep_prob.
    """
    D = np.random.rand(*A.shape) < keep_prob
    A = A * D
    A = A / keep_prob
    return A


def _bench_threads(single_thread: bool) -> int:
    return 1 if single_thread else fastdrop.get_num_threads()


@contextmanager
def _memory_floor(ws: Workspace, single_thread: bool) -> Iterator[Callable[[], object]]:
    """The C pass over x's bytes; pattern 0 leaves the values as they are."""
    threads = _bench_threads(single_thread)
    yield lambda: _core.memory_xor(ws.x, 0, threads)


@contextmanager
def _numpy_multiply(ws: Workspace) -> Iterator[Callable[[], object]]:
    one = ws.x.dtype.type(1)
    yield lambda: np.multiply(ws.x, one, out=ws.x)


@contextmanager
def _textbook(ws: Workspace) -> Iterator[Callable[[], object]]:
    """The seed thread's code draws from NumPy's global generator: its state is put back on
    exit, so that a caller's seeded np.random stream reads on as if the bench had not run."""
    state = np.random.get_state()
    try:
        yield lambda: textbook_dropout(ws.x, ws.keep_prob)
    finally:
        np.random.set_state(state)


@contextmanager
def _best_numpy(ws: Workspace) -> Iterator[Callable[[], object]]:
    """The fastest inverted dropout plain NumPy gives: float32 uniforms drawn into a reused
    buffer, then in-place compare and multiplies, no temporaries."""
    rng = np.random.default_rng(0)
    uniforms = np.empty(ws.x.shape, dtype=np.float32)
    keep = np.empty(ws.x.shape, dtype=bool)
    threshold = np.float32(ws.keep_prob)
    scale = ws.x.dtype.type(1 / ws.keep_prob)

    def call():
        rng.random(dtype=np.float32, out=uniforms)
        np.less(uniforms, threshold, out=keep)
        np.multiply(ws.x, keep, out=ws.x)
        np.multiply(ws.x, scale, out=ws.x)

    yield call


@contextmanager
def _fastdrop_threads(threads: Optional[int]) -> Iterator[None]:
    """fastdrop's thread count set to `threads` (None: left as it is), restored on exit."""
    previous = fastdrop.get_num_threads()
    if threads is not None:
        fastdrop.set_num_threads(threads)
    try:
        yield
    finally:
        fastdrop.set_num_threads(previous)


@contextmanager
def _fastdrop_forward(ws: Workspace, in_place: bool = True, store: str = "seed",
                      threads: Optional[int] = None,
                      shared_axes: Optional[Tuple[int, ...]] = None
                      ) -> Iterator[Callable[[], object]]:
    out = ws.x if in_place else np.empty_like(ws.x)
    options = {} if shared_axes is None else {"shared_axes": shared_axes}
    with _fastdrop_threads(threads):
        yield lambda: fastdrop.dropout(ws.x, ws.keep_prob, out=out, stream=ws.stream,
                                       store=store, **options)


@contextmanager
def _fastdrop_backward(ws: Workspace, store: str) -> Iterator[Callable[[], object]]:
    _, mask = fastdrop.dropout(ws.x, ws.keep_prob, out=ws.x, stream=ws.stream, store=store)
    yield lambda: fastdrop.dropout_backward(ws.x, mask, out=ws.x)


@contextmanager
def _torch_dropout(ws: Workspace, single_thread: bool,
                   function: str = "dropout") -> Iterator[Callable[[], object]]:
    """``torch.nn.functional.<function>(t, 1 - q, training=True, inplace=True)`` on a tensor
    sharing ws.x's memory, with torch's thread count 1 or fastdrop's, restored on exit."""
    torch = torch_module()
    dropout = getattr(torch.nn.functional, function)
    previous = torch.get_num_threads()
    p = 1.0 - ws.keep_prob
    try:
        torch.set_num_threads(_bench_threads(single_thread))
        tensor = torch.from_numpy(ws.x)
        yield lambda: dropout(tensor, p, training=True, inplace=True)
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _torch_module(ws: Workspace, fastdrop_layer: bool) -> Iterator[Callable[[], object]]:
    """Forward and backward of a dropout layer as a PyTorch model runs it: a new output and a new
    gradient per step, autograd in between; fastdrop.torch.Dropout or torch.nn.Dropout, on
    fastdrop's thread count."""
    torch = torch_module()
    import fastdrop.torch as fastdrop_torch

    previous = torch.get_num_threads()
    p = 1.0 - ws.keep_prob
    try:
        torch.set_num_threads(fastdrop.get_num_threads())
        layer = fastdrop_torch.Dropout(p) if fastdrop_layer else torch.nn.Dropout(p)
        x = torch.from_numpy(ws.x).requires_grad_()
        gradient = torch.ones_like(x)

        def step():
            layer(x).backward(gradient)
            x.grad = None

        yield step
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _jax_dropout(ws: Workspace, fastdrop_kernels: bool,
                 backward: bool) -> Iterator[Callable[[], object]]:
    """Dropout as a JAX program runs it, compiled by ``jit`` before timing: JAX's own
    (``jax.random.bernoulli`` and ``where``, as Flax's Dropout does it) or `fastdrop.jax.dropout`;
    forward alone, or forward and backward (``jit(grad)`` of the sum).  Each call makes a new
    output array, as JAX's arrays are immutable; JAX runs on its own threads, fastdrop on the
    bench's."""
    jax = jax_module()
    import jax.numpy as jnp

    rate = 1.0 - ws.keep_prob
    if fastdrop_kernels:
        import fastdrop.jax as fastdrop_jax

        def forward(x, key):
            return fastdrop_jax.dropout(x, rate, key)
    else:
        def forward(x, key):
            keep = jax.random.bernoulli(key, ws.keep_prob, x.shape)
            return jnp.where(keep, x / ws.keep_prob, jnp.zeros_like(x))
    program = jax.jit(jax.grad(lambda x, key: forward(x, key).sum()) if backward else forward)
    x = jnp.asarray(ws.x)
    key = jax.random.key(0)
    program(x, key).block_until_ready()  # compiled here, not in the timed calls
    yield lambda: program(x, key).block_until_ready()


# What torch.from_numpy accepts among fastdrop's dtypes (not ml_dtypes' bfloat16).
TORCH_DTYPES = ("float16", "float32", "float64")


def _bench_has_threads() -> bool:
    """A 1-thread floor apart from the main one is worth timing only when the bench runs on more
    than one thread (else the two are the same pass)."""
    return fastdrop.get_num_threads() > 1


MEMORY_FLOOR_PEER = Peer(
    MEMORY_FLOOR, "fd_memory_xor(x, 0): C, one read and one write of each byte of x, in place, "
                  "the bench's threads", functools.partial(_memory_floor, single_thread=False),
    FLOOR_FAMILY)
MEMORY_FLOOR_1_THREAD_PEER = Peer(
    MEMORY_FLOOR_1_THREAD, "the same on 1 thread: the floor of the 1-thread peers",
    functools.partial(_memory_floor, single_thread=True), FLOOR_FAMILY, single_thread=True,
    available=_bench_has_threads)
FLOOR_PEERS = (MEMORY_FLOOR_PEER, MEMORY_FLOOR_1_THREAD_PEER)

PEERS: List[Peer] = [
    MEMORY_FLOOR_PEER,
    MEMORY_FLOOR_1_THREAD_PEER,
    Peer(NUMPY_MULTIPLY, "np.multiply(x, 1, out=x): the SPEC's floor where NumPy's arithmetic "
                         "keeps up with memory (not float16, bfloat16)", _numpy_multiply,
         NUMPY_FAMILY, single_thread=True),
    Peer(TEXTBOOK, "D = np.random.rand(*A.shape) < q; A = A * D; A = A / q (the seed thread's)",
         _textbook, NUMPY_FAMILY, single_thread=True,
         scratch_bytes=lambda itemsize: max(8 + 1, 1 + 2 * itemsize), summary_label="textbook"),
    Peer(BEST_NUMPY, "rng.random(dtype=float32, out=u); less(u, q, out=k); x *= k; x *= 1/q",
         _best_numpy, NUMPY_FAMILY, single_thread=True, scratch_bytes=lambda itemsize: 4 + 1,
         summary_label="best NumPy"),
    Peer(FORWARD, "fastdrop.dropout(x, q, out=x, stream=s)", _fastdrop_forward, FASTDROP_FAMILY),
    Peer(FORWARD_1_THREAD, "fastdrop.dropout(x, q, out=x, stream=s), fastdrop.set_num_threads(1)",
         functools.partial(_fastdrop_forward, threads=1), FASTDROP_FAMILY, single_thread=True),
    Peer(FORWARD_OUT, "fastdrop.dropout(x, q, out=y, stream=s)",
         functools.partial(_fastdrop_forward, in_place=False), FASTDROP_FAMILY,
         scratch_bytes=_one_array),
    Peer(FORWARD_BITS, 'fastdrop.dropout(x, q, out=x, stream=s, store="bits")',
         functools.partial(_fastdrop_forward, store="bits"), FASTDROP_FAMILY, mask_bytes=1 / 8,
         scratch_bytes=lambda itemsize: 1 / 8),
    Peer(BACKWARD, "fastdrop.dropout_backward(dy, mask, out=dy), mask regenerated",
         functools.partial(_fastdrop_backward, store="seed"), FASTDROP_FAMILY),
    Peer(BACKWARD_BITS, "fastdrop.dropout_backward(dy, mask, out=dy), stored bits",
         functools.partial(_fastdrop_backward, store="bits"), FASTDROP_FAMILY, mask_bytes=1 / 8,
         scratch_bytes=lambda itemsize: 1 / 8),
    Peer(TORCH_1_THREAD, "torch.nn.functional.dropout(t, 1 - q, inplace=True), 1 thread",
         functools.partial(_torch_dropout, single_thread=True), TORCH_FAMILY, single_thread=True,
         scratch_bytes=_one_array, available=has_torch, dtypes=TORCH_DTYPES,
         summary_label="PyTorch 1 thread"),
    Peer(TORCH_ALL_THREADS, "torch.nn.functional.dropout(t, 1 - q, inplace=True), the bench's "
                            "threads",
         functools.partial(_torch_dropout, single_thread=False), TORCH_FAMILY,
         scratch_bytes=_one_array, available=has_torch, dtypes=TORCH_DTYPES,
         summary_label="PyTorch all threads"),
    # float32 only, as the PyTorch issue measures it: torch's module takes over a second per
    # step at 6.4e7 elements, and the default run must stay about a minute.
    Peer(FASTDROP_MODULE, "fastdrop.torch.Dropout(1 - q)(t).backward(g): forward + backward",
         functools.partial(_torch_module, fastdrop_layer=True), FASTDROP_FAMILY,
         scratch_bytes=lambda itemsize: 3 * itemsize + 1 / 8, available=has_torch,
         dtypes=("float32",)),
    Peer(TORCH_MODULE, "torch.nn.Dropout(1 - q)(t).backward(g): forward + backward",
         functools.partial(_torch_module, fastdrop_layer=False), TORCH_FAMILY,
         scratch_bytes=lambda itemsize: 4 * itemsize + 1, available=has_torch,
         dtypes=("float32",)),
    # float32, as issue 18 measures them.  JAX's dropout draws 32 random bits per element and
    # keeps a boolean mask besides its copy of the input and its output.
    Peer(JAX_DROPOUT, "jit(bernoulli(key, q, x.shape) and where(keep, x / q, 0))(x, key)",
         functools.partial(_jax_dropout, fastdrop_kernels=False, backward=False), JAX_FAMILY,
         scratch_bytes=lambda itemsize: 2 * itemsize + 4 + 1, available=has_jax,
         dtypes=("float32",)),
    Peer(JAX_DROPOUT_GRAD, "the same under jit(grad(sum of dropout))",
         functools.partial(_jax_dropout, fastdrop_kernels=False, backward=True), JAX_FAMILY,
         scratch_bytes=lambda itemsize: 3 * itemsize + 4 + 1, available=has_jax,
         dtypes=("float32",)),
    Peer(FASTDROP_JAX, "jit(fastdrop.jax.dropout)(x, 1 - q, key)",
         functools.partial(_jax_dropout, fastdrop_kernels=True, backward=False), FASTDROP_FAMILY,
         scratch_bytes=lambda itemsize: 2 * itemsize, available=has_jax, dtypes=("float32",)),
    Peer(FASTDROP_JAX_GRAD, "the same under jit(grad(sum of dropout))",
         functools.partial(_jax_dropout, fastdrop_kernels=True, backward=True), FASTDROP_FAMILY,
         scratch_bytes=lambda itemsize: 3 * itemsize, available=has_jax, dtypes=("float32",)),
]

CHANNEL_PEERS: List[Peer] = [
    MEMORY_FLOOR_PEER,
    MEMORY_FLOOR_1_THREAD_PEER,
    Peer(CHANNEL, f"fastdrop.dropout(x, q, shared_axes={CHANNEL_SHARED_AXES}, out=x, stream=s)",
         functools.partial(_fastdrop_forward, shared_axes=CHANNEL_SHARED_AXES), FASTDROP_FAMILY),
    Peer(TORCH_DROPOUT2D_1_THREAD, "torch.nn.functional.dropout2d(t, 1 - q, inplace=True), "
                                   "1 thread",
         functools.partial(_torch_dropout, single_thread=True, function="dropout2d"),
         TORCH_FAMILY, single_thread=True, available=has_torch, dtypes=TORCH_DTYPES),
    Peer(TORCH_DROPOUT2D_ALL_THREADS, "torch.nn.functional.dropout2d(t, 1 - q, inplace=True), "
                                      "the bench's threads",
         functools.partial(_torch_dropout, single_thread=False, function="dropout2d"),
         TORCH_FAMILY, available=has_torch, dtypes=TORCH_DTYPES),
]


def available_peers(peers: Optional[Sequence[Peer]] = None) -> List[Peer]:
    """The entries of `peers` (default `PEERS`) that can run here.

    Parameters
    ----------
    peers : sequence of Peer, optional
        `PEERS` when None; `CHANNEL_PEERS` for the channel scenario.

    Returns
    -------
    list of Peer
    """
    return [peer for peer in (PEERS if peers is None else peers) if peer.available()]


def floor_of(peer: Peer) -> str:
    """The name of the memory floor `peer`'s ratio is taken to: the pass on as many threads.

    Parameters
    ----------
    peer : Peer

    Returns
    -------
    str
        `MEMORY_FLOOR_1_THREAD` for a single-thread peer, `MEMORY_FLOOR` otherwise (the caller
        falls back on `MEMORY_FLOOR` where the 1-thread floor was not timed).
    """
    return MEMORY_FLOOR_1_THREAD if peer.single_thread else MEMORY_FLOOR


def registry(peers: Sequence[Peer] = ()) -> dict:
    """Every known peer by name: `PEERS`, `CHANNEL_PEERS`, then `peers`.

    Parameters
    ----------
    peers : sequence of Peer, optional
        Peers outside the module's lists (a test's, a caller's own).

    Returns
    -------
    dict
        Name to Peer; a later peer of the same name replaces an earlier one.
    """
    return {peer.name: peer for peer in [*PEERS, *CHANNEL_PEERS, *peers]}
