# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""fastdrop's compiled layer: the C core's entry points, streams and masks, and the front end of
every call.

The front end (forward, backward and the check_ functions) checks every argument with C-level
tests before anything is drawn or written, then makes one C call with the GIL released.  Kept
here rather than in Python, with the Stream and DropoutMask classes, so that a call on a small
array costs about a microsecond of bookkeeping, not tens.
"""
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport (NOWAIT_LOCK, WAIT_LOCK, PyThread_acquire_lock,
                               PyThread_allocate_lock, PyThread_free_lock, PyThread_release_lock,
                               PyThread_type_lock)
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

cimport numpy as cnp

import math
import numbers
import operator
import secrets

import numpy as np

from fastdrop._stream import (BLOCK_LIMIT, DECISIONS_PER_BLOCK, MODES, check_integer,
                              check_seed, check_subsequence, compute_dtype, kernel_op, mask_shape)

cnp.import_array()


cdef extern from "fd_philox.h":
    ctypedef struct fd_philox_counter:
        uint32_t w[4]
    ctypedef struct fd_philox_key:
        uint32_t w[2]
    fd_philox_key fd_philox_key_from_seed(uint64_t seed) nogil
    fd_philox_counter fd_philox_counter_make(uint64_t block, uint64_t high) nogil
    void fd_philox_block(fd_philox_counter ctr, fd_philox_key key, uint32_t *out) nogil


cdef extern from "fd_dropout.h":
    enum: FD_MAX_NDIM

    ctypedef enum fd_status:
        FD_OK

    ctypedef enum fd_simd:
        FD_SIMD_SCALAR
        FD_SIMD_AVX2
        FD_SIMD_AVX512

    ctypedef struct fd_params:
        uint64_t seed
        uint64_t subsequence
        uint64_t start
        uint32_t threshold
        int keep_all
        double scale
        double shift
        double dropped
        int affine
        int ndim
        const cnp.npy_intp *shape
        const cnp.npy_intp *in_strides
        const cnp.npy_intp *out_strides
        const uint8_t *shared_axes
        int num_threads

    fd_status fd_mask_generate(const fd_params *p, uint8_t *bits) nogil
    fd_status fd_dropout_forward_f16(const fd_params *p, const uint16_t *x, uint16_t *out,
                                     uint8_t *bits_out) nogil
    fd_status fd_dropout_forward_bf16(const fd_params *p, const uint16_t *x, uint16_t *out,
                                      uint8_t *bits_out) nogil
    fd_status fd_dropout_forward_f32(const fd_params *p, const float *x, float *out,
                                     uint8_t *bits_out) nogil
    fd_status fd_dropout_forward_f64(const fd_params *p, const double *x, double *out,
                                     uint8_t *bits_out) nogil
    fd_status fd_dropout_backward_f16(const fd_params *p, const uint16_t *x, uint16_t *out,
                                      const uint8_t *bits_in) nogil
    fd_status fd_dropout_backward_bf16(const fd_params *p, const uint16_t *x, uint16_t *out,
                                       const uint8_t *bits_in) nogil
    fd_status fd_dropout_backward_f32(const fd_params *p, const float *x, float *out,
                                      const uint8_t *bits_in) nogil
    fd_status fd_dropout_backward_f64(const fd_params *p, const double *x, double *out,
                                      const uint8_t *bits_in) nogil
    int fd_simd_supported(fd_simd path) nogil
    fd_simd fd_simd_active() nogil
    fd_status fd_simd_select(fd_simd path) nogil
    const char *fd_simd_name(fd_simd path) nogil
    int fd_openmp_enabled() nogil
    int fd_default_num_threads() nogil
    void fd_num_threads_set(int num_threads) nogil
    int fd_num_threads() nogil
    int fd_thread_limit() nogil
    void fd_thread_limit_lift() nogil


cdef extern from "fd_memory.h":
    void fd_memory_xor(void *data, size_t nbytes, uint64_t pattern, int num_threads) nogil
    void fd_memory_copy(const void *src, void *dst, size_t nbytes, int num_threads) nogil
    void fd_memory_scale_f64(const double *src, double *dst, size_t n, double scale,
                             int num_threads) nogil


cdef extern from "fd_xla_ffi.h":
    void *fd_xla_ffi_dropout(void *call_frame) nogil


def xla_ffi_handler():
    """The C core's XLA FFI handler (src_c/fd_xla_ffi.h) as the PyCapsule that
    jax.ffi.register_ffi_target takes."""
    return PyCapsule_New(<void *>fd_xla_ffi_dropout, NULL, NULL)


def openmp_enabled():
    return bool(fd_openmp_enabled())


def default_num_threads():
    return fd_default_num_threads()


_SIMD_PATHS = {"scalar": FD_SIMD_SCALAR, "avx2": FD_SIMD_AVX2, "avx512": FD_SIMD_AVX512}


def simd_paths():
    """The SIMD paths this build has and this CPU runs, slowest first."""
    return [name for name, path in _SIMD_PATHS.items() if fd_simd_supported(path)]


def simd_path():
    """The SIMD path the kernels use."""
    return fd_simd_name(fd_simd_active()).decode()


def set_simd_path(str name):
    """Make the kernels use path `name` (one of simd_paths())."""
    if name not in _SIMD_PATHS or fd_simd_select(_SIMD_PATHS[name]) != FD_OK:
        raise ValueError(f"SIMD path {name!r} is not available here; choose one of {simd_paths()}")


def set_num_threads(int n):
    fd_num_threads_set(n)
    fd_thread_limit_lift()


def get_num_threads():
    return min(fd_num_threads(), fd_thread_limit())


# The memory passes of `fastdrop bench` (src_c/fd_memory.h): not dropout API, so they check only
# what keeps the C side in bounds.

cdef int _check_contiguous(str name, cnp.ndarray a, bint writeable) except -1:
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} must be writeable")
    return 0


def memory_xor(cnp.ndarray data, uint64_t pattern, int num_threads):
    """XOR byte i of `data` (C-contiguous) with byte i % 8 of `pattern`, in place, on up to
    `num_threads` threads: one read and one write of every byte, the memory floor of an in-place
    dropout call."""
    _check_contiguous("data", data, True)
    cdef void *at = cnp.PyArray_DATA(data)
    cdef size_t nbytes = <size_t>cnp.PyArray_NBYTES(data)
    cdef int threads = min(num_threads, fd_thread_limit())
    with nogil:
        fd_memory_xor(at, nbytes, pattern, threads)


def memory_copy(cnp.ndarray src, cnp.ndarray dst, int num_threads):
    """Copy the bytes of `src` into `dst` (C-contiguous, as many bytes, not overlapping): the
    STREAM benchmark's copy."""
    _check_contiguous("src", src, False)
    _check_contiguous("dst", dst, True)
    if cnp.PyArray_NBYTES(src) != cnp.PyArray_NBYTES(dst) or np.shares_memory(src, dst):
        raise ValueError("src and dst must have as many bytes and not overlap")
    cdef const void *source = cnp.PyArray_DATA(src)
    cdef void *target = cnp.PyArray_DATA(dst)
    cdef size_t nbytes = <size_t>cnp.PyArray_NBYTES(src)
    cdef int threads = min(num_threads, fd_thread_limit())
    with nogil:
        fd_memory_copy(source, target, nbytes, threads)


def memory_scale(cnp.ndarray src, cnp.ndarray dst, double scale, int num_threads):
    """dst = scale * src for float64 arrays (C-contiguous, as long, not overlapping): the STREAM
    benchmark's scale."""
    _check_contiguous("src", src, False)
    _check_contiguous("dst", dst, True)
    if (src.dtype != np.float64 or dst.dtype != np.float64 or src.size != dst.size
            or np.shares_memory(src, dst)):
        raise ValueError("src and dst must be float64 arrays of one size that do not overlap")
    cdef const double *source = <const double *>cnp.PyArray_DATA(src)
    cdef double *target = <double *>cnp.PyArray_DATA(dst)
    cdef size_t n = <size_t>cnp.PyArray_SIZE(src)
    cdef int threads = min(num_threads, fd_thread_limit())
    with nogil:
        fd_memory_scale_f64(source, target, n, scale, threads)


def philox_words(uint64_t seed, uint64_t high, uint64_t first_block, Py_ssize_t nblocks):
    """Words of blocks first_block .. first_block + nblocks - 1 (wrapping past 2**64 - 1 into
    the next value of `high`, as the 128-bit counter does), four per block, as uint32."""
    cdef cnp.ndarray[uint32_t, ndim=1] words = np.empty(4 * nblocks, dtype=np.uint32)
    cdef uint32_t *dst = <uint32_t *>cnp.PyArray_DATA(words)
    cdef fd_philox_key key = fd_philox_key_from_seed(seed)
    cdef uint64_t block = first_block
    cdef Py_ssize_t i
    with nogil:
        for i in range(nblocks):
            fd_philox_block(fd_philox_counter_make(block, high), key, dst + 4 * i)
            block += 1
            if block == 0:
                high += 1
    return words


cdef fd_params _params(int ndim, const cnp.npy_intp *shape, const cnp.npy_intp *in_strides,
                       const cnp.npy_intp *out_strides, tuple shared_axes, uint8_t *flags,
                       uint64_t seed, uint64_t subsequence, uint64_t start, uint32_t threshold,
                       bint keep_all, tuple op):
    """The C call's parameters; `flags` (FD_MAX_NDIM bytes) receives the shared-axis flags."""
    cdef fd_params p
    cdef Py_ssize_t axis
    memset(flags, 0, FD_MAX_NDIM)
    for axis in shared_axes:
        flags[axis] = 1
    p.seed = seed
    p.subsequence = subsequence
    p.start = start
    p.threshold = threshold
    p.keep_all = keep_all
    p.scale, p.shift, p.dropped, p.affine = op
    p.ndim = ndim
    p.shape = shape
    p.in_strides = in_strides
    p.out_strides = out_strides
    p.shared_axes = flags
    p.num_threads = fd_num_threads()
    return p


cdef void _check(fd_status status) except *:
    if status != FD_OK:
        raise RuntimeError(f"fastdrop's C core refused a call (status {<int>status}); "
                           "this is a bug in fastdrop, please report it")


def mask_generate(tuple shape, tuple shared_axes, uint64_t seed, uint64_t subsequence,
                  uint64_t start, uint32_t threshold, bint keep_all, Py_ssize_t nbytes):
    """The packed decisions of a call (decision j in bit j % 8 of byte j // 8) as a new uint8
    array of nbytes bytes."""
    if len(shape) > FD_MAX_NDIM:
        raise ValueError(f"shape has {len(shape)} axes; fastdrop serves at most {FD_MAX_NDIM}")
    cdef uint8_t flags[FD_MAX_NDIM]
    cdef cnp.ndarray dims = np.asarray(shape, dtype=np.intp)
    cdef cnp.ndarray strides = np.zeros(len(shape), dtype=np.intp)
    cdef const cnp.npy_intp *no_strides = <const cnp.npy_intp *>cnp.PyArray_DATA(strides)
    cdef fd_params p = _params(len(shape), <const cnp.npy_intp *>cnp.PyArray_DATA(dims),
                               no_strides, no_strides, shared_axes, flags, seed, subsequence,
                               start, threshold, keep_all, (1.0, 0.0, 0.0, False))
    cdef cnp.ndarray bits = np.zeros(nbytes, dtype=np.uint8)
    cdef fd_status status
    with nogil:
        status = fd_mask_generate(&p, <uint8_t *>cnp.PyArray_DATA(bits))
    _check(status)
    return bits


# The storage types, in the order of the C core's fd_kernels.body.
cpdef enum:
    DTYPE_F16 = 0
    DTYPE_BF16 = 1
    DTYPE_F32 = 2
    DTYPE_F64 = 3


cdef int _run(bint forward, cnp.ndarray x, cnp.ndarray out, tuple shared_axes,
              uint64_t seed, uint64_t subsequence, uint64_t start, uint32_t threshold,
              bint keep_all, tuple op, int dtype, object bits) except -1:
    cdef uint8_t flags[FD_MAX_NDIM]
    cdef fd_params p = _params(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_STRIDES(x),
                               cnp.PyArray_STRIDES(out), shared_axes, flags, seed, subsequence,
                               start, threshold, keep_all, op)
    cdef uint8_t *bits_ptr = NULL
    if bits is not None:
        bits_ptr = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>bits)
    cdef void *src = cnp.PyArray_DATA(x)
    cdef void *dst = cnp.PyArray_DATA(out)
    cdef fd_status status
    with nogil:
        if dtype == DTYPE_F16:
            if forward:
                status = fd_dropout_forward_f16(&p, <uint16_t *>src, <uint16_t *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_f16(&p, <uint16_t *>src, <uint16_t *>dst, bits_ptr)
        elif dtype == DTYPE_BF16:
            if forward:
                status = fd_dropout_forward_bf16(&p, <uint16_t *>src, <uint16_t *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_bf16(&p, <uint16_t *>src, <uint16_t *>dst, bits_ptr)
        elif dtype == DTYPE_F32:
            if forward:
                status = fd_dropout_forward_f32(&p, <float *>src, <float *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_f32(&p, <float *>src, <float *>dst, bits_ptr)
        else:
            if forward:
                status = fd_dropout_forward_f64(&p, <double *>src, <double *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_f64(&p, <double *>src, <double *>dst, bits_ptr)
    _check(status)
    return 0


def apply(bint forward, cnp.ndarray x, cnp.ndarray out, tuple shared_axes,
          uint64_t seed, uint64_t subsequence, uint64_t start, uint32_t threshold,
          bint keep_all, tuple op, int dtype, cnp.ndarray bits):
    """One kernel call: out = kept ? x * scale (+ shift) : dropped, op = (scale, shift, dropped,
    affine) in the compute precision of `dtype` (one of the DTYPE_ constants).

    forward=True draws the decisions (all kept when keep_all) and, when `bits` is an array,
    also stores them there; forward=False reads them from `bits` when it is an array and
    regenerates them otherwise.  x and out have the same shape and the storage type `dtype`;
    `shared_axes` holds distinct axes in [0, x.ndim); `bits` is None or a writable, contiguous
    uint8 array of ceil(mask size / 8) bytes.
    """
    _run(forward, x, out, shared_axes, seed, subsequence, start, threshold, keep_all, op, dtype,
         bits)


# ---------------------------------------------------------------------------------------------
# Streams and masks.  Compiled, with typed fields, so that a call's bookkeeping (reserving its
# blocks, recording its mask) costs tens of nanoseconds where Python classes cost a microsecond
# or more, a fifth of a whole call on 10**4 elements.
# ---------------------------------------------------------------------------------------------

cpdef object blocks_for(object decisions):
    """Stream blocks that a call with this many decisions consumes."""
    return (decisions + (DECISIONS_PER_BLOCK - 1)) // DECISIONS_PER_BLOCK


cpdef object packed_nbytes(object decisions):
    """Bytes of a mask stored one bit per decision."""
    return (decisions + 7) // 8


cpdef uint64_t threshold_for(double keep_prob):
    """The threshold T = floor(keep_prob * 2**32) of the keep rule (exact: scaling by a power of
    two is exact)."""
    return <uint64_t>(keep_prob * 4294967296.0)


cdef class Stream:
    # The first lines give the class its signature (inspect reads it from an extension type's
    # docstring); Python shows the docstring without them.
    """Stream(seed=None, subsequence=0)
--

A position in a Philox4x32-10 random stream: (seed, subsequence, next block).

    Every training-mode call that draws from a stream reserves the blocks its decisions need and
    moves the stream past them, so successive calls get fresh masks while the whole sequence
    stays a pure function of the seed.  Reservations are atomic, so threads may share a stream.

    Parameters
    ----------
    seed : int, optional
        The 64-bit key, in [0, 2**64).  None draws one from the operating system's entropy.
    subsequence : int, optional
        In [0, 2**63): independent streams under one seed, e.g. one per process or rank.

    Examples
    --------
    >>> import fastdrop, numpy as np
    >>> s = fastdrop.Stream(seed=7)
    >>> y1, _ = fastdrop.dropout(np.ones(4), 0.5, stream=s)
    >>> s.position
    1
    """

    cdef uint64_t _seed
    cdef uint64_t _subsequence
    cdef object _position  # a Python int: it reaches 2**64 when the last block is taken
    cdef PyThread_type_lock _lock

    def __cinit__(self, *args, **kwargs):
        self._position = 0
        self._lock = PyThread_allocate_lock()
        if self._lock == NULL:
            raise MemoryError("could not allocate the stream's lock")

    def __init__(self, seed=None, subsequence=0):
        self._seed = secrets.randbits(64) if seed is None else check_seed(seed)
        self._subsequence = check_subsequence(subsequence)

    def __dealloc__(self):
        if self._lock != NULL:
            PyThread_free_lock(self._lock)

    @property
    def seed(self) -> int:
        """The 64-bit Philox key."""
        return self._seed

    @property
    def subsequence(self) -> int:
        """Which of the seed's independent streams this is."""
        return self._subsequence

    @property
    def position(self) -> int:
        """The next block a call will use."""
        return self._position

    cdef void _acquire(self):
        # Wait with the GIL released: the thread holding the lock may need the GIL to finish
        # (a collection it triggers can run Python code, which lets other threads in).
        if not PyThread_acquire_lock(self._lock, NOWAIT_LOCK):
            with nogil:
                PyThread_acquire_lock(self._lock, WAIT_LOCK)

    cdef int _check_room(self, object blocks) except -1:
        left = BLOCK_LIMIT - self._position
        if blocks > left:
            raise OverflowError(
                f"the stream (seed={self._seed}, subsequence={self._subsequence}) has {left} "
                f"blocks left, the call needs {blocks}; use another subsequence or seed")
        return 0

    cdef object _reserve(self, object blocks, uint64_t *seed, uint64_t *subsequence):
        """reserve(blocks), also giving the seed and subsequence the blocks belong to, read
        under the same lock (a concurrent manual_seed cannot pair them with another stream)."""
        self._acquire()
        try:
            self._check_room(blocks)
            start = self._position
            self._position = start + blocks
            seed[0] = self._seed
            subsequence[0] = self._subsequence
        finally:
            PyThread_release_lock(self._lock)
        return start

    def check_room(self, blocks) -> None:
        """Raises OverflowError when `blocks` more blocks would run past the last block of the
        subsequence (2**64 - 1)."""
        self._check_room(blocks)

    def reserve(self, blocks) -> int:
        """Reserves `blocks` consecutive blocks and returns the first.

        Raises OverflowError, leaving the stream unchanged, when they would run past the last
        block of the subsequence (see `check_room`).
        """
        cdef uint64_t seed, subsequence
        blocks = operator.index(blocks)
        if blocks < 0:
            raise ValueError(f"blocks must be at least 0, got {blocks}")
        return self._reserve(blocks, &seed, &subsequence)

    def manual_seed(self, seed, subsequence=0) -> None:
        """Restarts the stream at block 0 of (seed, subsequence)."""
        cdef uint64_t checked_seed = check_seed(seed)
        cdef uint64_t checked_subsequence = check_subsequence(subsequence)
        self._acquire()
        self._seed, self._subsequence, self._position = checked_seed, checked_subsequence, 0
        PyThread_release_lock(self._lock)

    def spawn(self, subsequence=0) -> Stream:
        """A new stream on `subsequence` whose seed is the next block of this one: reproducible
        child streams, e.g. one per layer, that all follow from a single manual_seed."""
        subsequence = check_subsequence(subsequence)
        cdef uint64_t seed, high
        start = self._reserve(1, &seed, &high)
        words = philox_words(seed, high, start, 1)
        return Stream(int(words[0]) | int(words[1]) << 32, subsequence)

    def __reduce__(self):
        return Stream, (self._seed, self._subsequence), self._position

    def __setstate__(self, position):
        position = operator.index(position)
        if not 0 <= position <= BLOCK_LIMIT:
            raise ValueError(f"position must be in [0, 2**64], got {position}")
        self._position = position

    def __repr__(self) -> str:
        return (f"Stream(seed={self._seed}, subsequence={self._subsequence}, "
                f"position={self._position})")


cdef object _check_start(object start, object decisions):
    """start as an int whose blocks, one per DECISIONS_PER_BLOCK decisions, all lie within the
    stream (the last is block 2**64 - 1), or an error that gives the valid range."""
    blocks = blocks_for(decisions)
    last_start = BLOCK_LIMIT - blocks
    try:
        number = check_integer("start", start, BLOCK_LIMIT + 1)
    except ValueError:
        number = None
    if number is None or number > last_start:
        raise ValueError(f"start must be in [0, {last_start}] for a mask of {decisions} "
                         f"decisions: its {blocks} blocks must end by the stream's last block, "
                         f"2**64 - 1; got {start}")
    return number


cdef int _check_bits(object bits, bint training, object decisions) except -1:
    """Refuses stored bits that backward could not read as the decisions of this mask.  What
    the kernel relies on is read from the array's C-level fields: a subclass may override
    .shape, .dtype or .flags."""
    if bits is None:
        return 0
    nbytes = packed_nbytes(decisions)
    if not cnp.PyArray_Check(bits):
        raise ValueError(f"bits must be None or a C-contiguous uint8 array of {nbytes} bytes (one "
                         f"bit per decision), got {type(bits).__name__}")
    cdef cnp.ndarray array = <cnp.ndarray>bits
    if (cnp.PyArray_TYPE(array) != cnp.NPY_UINT8 or cnp.PyArray_NDIM(array) != 1
            or not cnp.PyArray_IS_C_CONTIGUOUS(array) or cnp.PyArray_DIMS(array)[0] != nbytes):
        contiguous = "C-contiguous" if cnp.PyArray_IS_C_CONTIGUOUS(array) else "non-contiguous"
        raise ValueError(f"bits must be None or a C-contiguous uint8 array of {nbytes} bytes (one "
                         f"bit per decision), got a {contiguous} array of dtype "
                         f"{<object>cnp.PyArray_DESCR(array)} and shape {_shape(array)}")
    if not training:
        raise ValueError("an evaluation mask has no bits")
    return 0


cdef class DropoutMask:
    """DropoutMask(shape, shared_axes, keep_prob, mode, training, seed=None, subsequence=None, start=None, bits=None)
--

The record of one dropout call, everything backward needs to mask the gradient the same way.

    By default it holds only the stream coordinates (seed, subsequence, start block) and the
    shapes, a few dozen bytes whatever the array size; backward regenerates the decisions.  With
    ``store="bits"`` it also holds the decisions packed one bit each (`bits`, a uint8 array:
    bit j % 8 of byte j // 8 for decision j), which backward reads instead.

    Masks come from `fastdrop.dropout`; the constructor checks its arguments as strictly, so a
    hand-made mask cannot make backward read or write outside its arrays: `start` must leave
    room for the mask's blocks before the stream's end, and a mask is initialised once (its
    fields never change; only `bits` may be replaced, by bits of the same length).

    Attributes
    ----------
    shape : tuple of int
        Shape of the array the mask was made for.
    shared_axes : tuple of int
        Axes along which one decision is broadcast, sorted.
    mask_shape : tuple of int
        ``shape`` with the shared axes set to 1: one decision per element of this shape.
    keep_prob : float
    mode : {"inverted", "classic", "alpha"}
    training : bool
        False for an evaluation-mode call, which draws nothing: every unit passes.
    seed, subsequence, start : int or None
        Where in the Philox stream the decisions were read (None in evaluation mode).
    bits : numpy.ndarray or None
        The packed decisions when stored.  May be set to None (backward then regenerates
        them) or to another C-contiguous uint8 array of the same length.
    """

    cdef readonly tuple shape
    cdef readonly tuple shared_axes
    cdef readonly double keep_prob
    cdef readonly str mode
    cdef readonly bint training
    cdef readonly object seed
    cdef readonly object subsequence
    cdef readonly object start
    cdef object _bits
    cdef bint _initialised

    def __init__(self, shape, shared_axes, keep_prob, mode, training, seed=None,
                 subsequence=None, start=None, bits=None):
        # Every field is checked into a local and assigned only once all are valid, and a mask
        # is initialised once: a mask whose shape and bits disagreed would let backward read
        # past the bits.
        if self._initialised:
            raise TypeError("a DropoutMask is initialised once; make a new one instead")
        shape = tuple(shape)
        for n in shape:
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"shape must hold non-negative ints, got {shape!r}")
        if len(shape) > FD_MAX_NDIM:
            raise ValueError(f"shape may have at most {FD_MAX_NDIM} axes (NumPy's limit), "
                             f"got {len(shape)}")
        shape = tuple(int(n) for n in shape)
        axes = check_shared_axes(shared_axes, len(shape))
        q = check_keep_prob(keep_prob)
        mode = check_choice("mode", mode, MODES)
        training = check_flag("training", training)
        decisions = math.prod(mask_shape(shape, axes))
        if training:
            seed = check_seed(seed)
            subsequence = check_subsequence(subsequence)
            start = _check_start(start, decisions)
        elif (seed, subsequence, start, bits) != (None, None, None, None):
            raise ValueError("an evaluation mask has no seed, subsequence, start or bits")
        _check_bits(bits, training, decisions)
        self.shape = shape
        self.shared_axes = axes
        self.keep_prob = q
        self.mode = mode
        self.training = training
        self.seed = seed
        self.subsequence = subsequence
        self.start = start
        self._bits = bits
        self._initialised = True

    @property
    def bits(self):
        return self._bits

    @bits.setter
    def bits(self, value):
        _check_bits(value, self.training, self.size)
        self._bits = value

    @property
    def size(self) -> int:
        """Number of decisions."""
        return math.prod(self.mask_shape)

    @property
    def mask_shape(self) -> tuple:
        return mask_shape(self.shape, self.shared_axes)

    cdef inline bint _draws(self):
        return self.training and self.keep_prob < 1.0

    @property
    def draws(self) -> bool:
        """Whether some unit may be dropped: training with keep_prob < 1."""
        return self._draws()

    def to_bool(self) -> np.ndarray:
        """The decisions as a boolean array of `mask_shape`, True where the unit is kept."""
        size = self.size
        if not self._draws() or not size:
            return np.ones(self.mask_shape, dtype=bool)
        bits = self._bits
        if bits is None:
            bits = mask_generate(self.mask_shape, (), self.seed, self.subsequence, self.start,
                                 threshold_for(self.keep_prob), False, packed_nbytes(size))
        flat = np.unpackbits(bits, count=size, bitorder="little").view(bool)
        return flat.reshape(self.mask_shape)

    cdef tuple _fields(self):
        return (self.shape, self.shared_axes, self.keep_prob, self.mode, self.training,
                self.seed, self.subsequence, self.start)

    def __eq__(self, other):
        if not isinstance(other, DropoutMask):
            return NotImplemented
        cdef DropoutMask that = <DropoutMask>other
        same_bits = (self._bits is None) == (that._bits is None) and (
            self._bits is None or np.array_equal(self._bits, that._bits))
        return same_bits and self._fields() == that._fields()

    __hash__ = None  # masks are mutable records (bits may be replaced), compared by value

    def __reduce__(self):
        return DropoutMask, self._fields() + (self._bits,)

    def __repr__(self) -> str:
        where = (f"seed={self.seed}, subsequence={self.subsequence}, start={self.start}"
                 if self.training else "evaluation")
        stored = "" if self._bits is None else f", bits={self._bits.nbytes} bytes"
        return (f"DropoutMask(shape={self.shape}, mask_shape={self.mask_shape}, "
                f"keep_prob={self.keep_prob}, mode={self.mode!r}, {where}{stored})")


cdef DropoutMask _record(tuple shape, tuple shared_axes, double keep_prob, str mode,
                         bint training, object seed, object subsequence, object start,
                         object bits):
    """The mask of a call whose arguments forward has already checked."""
    cdef DropoutMask mask = DropoutMask.__new__(DropoutMask)
    mask.shape = shape
    mask.shared_axes = shared_axes
    mask.keep_prob = keep_prob
    mask.mode = mode
    mask.training = training
    mask.seed = seed
    mask.subsequence = subsequence
    mask.start = start
    mask._bits = bits
    mask._initialised = True
    return mask


# The stream of calls given neither seed= nor stream=.
DEFAULT_STREAM = Stream()


def layer_stream(seed, subsequence) -> Stream:
    """The stream a layer owns: Stream(seed, subsequence), or, without a seed, one spawned from
    the default stream, so that fastdrop.manual_seed before building a network makes it
    reproducible."""
    return DEFAULT_STREAM.spawn(subsequence) if seed is None else Stream(seed, subsequence)


# ---------------------------------------------------------------------------------------------
# The front end, shared by fastdrop's functions and fastdrop.reference: every argument is checked
# here, before anything is drawn or written, so a refused call leaves x, dy, out= and the stream
# exactly as they were.  The arithmetic is then done by the C core (engine None) or by a Python
# engine (the reference's NumPy code): engine(forward, src, out, mask, op) computes
# out = kept ? op(src) : dropped, op = kernel_op(...) = (scale, shift, dropped, affine) in the
# compute precision of src's dtype.  When the mask draws (training, keep_prob < 1), forward=True
# draws the decisions and fills mask.bits when it is an array, forward=False reads mask.bits
# when present and regenerates otherwise; when it does not (evaluation), every unit is kept.
# ---------------------------------------------------------------------------------------------

STORES = ("seed", "bits")


def _storage_types():
    types = {np.dtype(np.float16): DTYPE_F16, np.dtype(np.float32): DTYPE_F32,
             np.dtype(np.float64): DTYPE_F64}
    try:
        import ml_dtypes
    except ImportError:
        return types
    types[np.dtype(ml_dtypes.bfloat16)] = DTYPE_BF16
    return types


# The dtypes fastdrop serves, each with its index in the C core: bfloat16 when the optional
# ml_dtypes package is installed.
STORAGE_TYPES = _storage_types()
cdef str _DTYPE_NAMES = ", ".join(dtype.name for dtype in STORAGE_TYPES)
cdef int _BFLOAT16_TYPENUM = next((d.num for d, i in STORAGE_TYPES.items() if i == DTYPE_BF16),
                                  -1)


cdef str _torch_hint(object a):
    """For a PyTorch tensor (or any object of a class defined in torch, subclasses included),
    where to go instead; "" for anything else.  Read from the class's module, so torch need not
    be imported to tell."""
    for cls in type(a).__mro__:
        if (getattr(cls, "__module__", None) or "").partition(".")[0] == "torch":
            return ("; for PyTorch tensors use fastdrop.torch (fastdrop.torch.dropout, "
                    "fastdrop.torch.Dropout and the other torch.nn drop-ins), which runs the same "
                    "kernels on the tensor's memory")
    return ""


cpdef int check_array(str name, object a) except -1:
    """The storage type (DTYPE_ constant) of array argument `a`, or an error naming it."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}"
                        f"{_torch_hint(a)}")
    cdef cnp.ndarray array = <cnp.ndarray>a
    cdef int typenum = cnp.PyArray_TYPE(array)
    cdef int index = -1
    if typenum == cnp.NPY_FLOAT32:
        index = DTYPE_F32
    elif typenum == cnp.NPY_FLOAT64:
        index = DTYPE_F64
    elif typenum == cnp.NPY_FLOAT16:
        index = DTYPE_F16
    elif typenum == _BFLOAT16_TYPENUM:
        index = DTYPE_BF16
    if index < 0:
        raise TypeError(f"{name} must have dtype {_DTYPE_NAMES}, got "
                        f"{<object>cnp.PyArray_DESCR(array)}")
    if cnp.PyArray_NDIM(array) > FD_MAX_NDIM:
        raise ValueError(f"{name} has {cnp.PyArray_NDIM(array)} axes; fastdrop serves at most "
                         f"{FD_MAX_NDIM}")
    if not cnp.PyArray_ISNOTSWAPPED(array):
        raise ValueError(
            f"{name} has non-native byte order ({(<object>cnp.PyArray_DESCR(array)).str}); "
            f"convert it first, "
            f"e.g. {name}.astype({name}.dtype.newbyteorder('='))")
    if not cnp.PyArray_ISALIGNED(array):
        raise ValueError(f"{name} is not aligned to its {cnp.PyArray_ITEMSIZE(array)}-byte items; "
                         "copy it into an aligned array first")
    return index


cdef tuple _values(const cnp.npy_intp *values, int n):
    return tuple([values[k] for k in range(n)])


cdef tuple _shape(cnp.ndarray a):
    """The array's dimensions as NumPy holds them: a subclass may override .shape."""
    return _values(cnp.PyArray_DIMS(a), cnp.PyArray_NDIM(a))


cdef bint _same_view(cnp.ndarray a, cnp.ndarray b):
    """Whether a and b, of one shape, are the same elements in the same order: the same first
    byte and the same strides, except along axes of one element, whose strides are never used."""
    if cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b):
        return False
    cdef int k
    for k in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIMS(a)[k] != 1 and cnp.PyArray_STRIDES(a)[k] != cnp.PyArray_STRIDES(b)[k]:
            return False
    return True


cdef bint _elements_overlap(cnp.ndarray a):
    """Whether two elements of `a` may share memory.  A sufficient test, O(ndim**2): with the
    axes of more than one element sorted by |stride|, each stride must step past everything the
    axes before it span.  Every array NumPy allocates, slices, transposes or reshapes passes;
    zero strides (broadcasting) and as_strided's overlapping windows do not."""
    if cnp.PyArray_IS_C_CONTIGUOUS(a) or cnp.PyArray_IS_F_CONTIGUOUS(a) or cnp.PyArray_SIZE(a) == 0:
        return False
    cdef cnp.npy_intp strides[FD_MAX_NDIM]
    cdef cnp.npy_intp extents[FD_MAX_NDIM]
    cdef cnp.npy_intp stride, extent, span = cnp.PyArray_ITEMSIZE(a)
    cdef int k, i, n = 0
    for k in range(cnp.PyArray_NDIM(a)):
        extent = cnp.PyArray_DIMS(a)[k]
        if extent == 1:
            continue
        stride = cnp.PyArray_STRIDES(a)[k]
        stride = -stride if stride < 0 else stride
        i = n  # insertion sort by stride: at most 64 axes, usually two to four
        while i > 0 and strides[i - 1] > stride:
            strides[i] = strides[i - 1]
            extents[i] = extents[i - 1]
            i -= 1
        strides[i] = stride
        extents[i] = extent
        n += 1
    for i in range(n):
        if strides[i] < span:
            return True
        span += strides[i] * (extents[i] - 1)
    return False


# The most candidate solutions np.shares_memory may try when telling whether two arrays share
# memory.  The exact question is a bounded Diophantine equation, NP-hard in general: awkwardly
# strided views can take it seconds, all with the GIL held.  Views people make (slices, steps,
# transposes) are decided within a few steps; 16384 steps take about a millisecond.
cdef int _OVERLAP_MAX_WORK = 16384
_TooHardError = np.exceptions.TooHardError if hasattr(np, "exceptions") else np.TooHardError


cdef bint _share_memory(cnp.ndarray a, cnp.ndarray b, str what) except -1:
    """Whether a and b share memory, or a ValueError, naming `what`, when that cannot be told
    within _OVERLAP_MAX_WORK steps."""
    if not np.may_share_memory(a, b):  # their address ranges are apart
        return False
    try:
        return np.shares_memory(a, b, max_work=_OVERLAP_MAX_WORK)
    except _TooHardError:
        raise ValueError(f"cannot tell cheaply whether {what} share memory (their strides "
                         "interleave in a way that takes an exponential search to decide); "
                         "pass an out= array of its own, e.g. numpy.empty_like") from None


cpdef int check_out(object out, cnp.ndarray like, str like_name) except -1:
    """Refuses an `out` that cannot receive the result for `like` (named like_name).  Everything
    is read from the arrays' C-level fields: a subclass may override .shape, .dtype or .flags."""
    if not cnp.PyArray_Check(out):
        raise TypeError(f"out must be a numpy.ndarray or None, got {type(out).__name__}"
                        f"{_torch_hint(out)}")
    cdef cnp.ndarray array = <cnp.ndarray>out
    cdef cnp.dtype descr = <cnp.dtype>cnp.PyArray_DESCR(array)
    cdef cnp.dtype like_descr = <cnp.dtype>cnp.PyArray_DESCR(like)
    if not cnp.PyArray_ISNOTSWAPPED(array):
        raise ValueError(f"out has non-native byte order ({descr.str}); pass an array of "
                         f"dtype {like_descr}")
    if descr is not like_descr and not cnp.PyArray_EquivTypes(descr, like_descr):
        raise TypeError(f"out must have the dtype of {like_name} ({like_descr}), got {descr}")
    cdef int k
    cdef bint same_shape = cnp.PyArray_NDIM(array) == cnp.PyArray_NDIM(like)
    for k in range(cnp.PyArray_NDIM(array) if same_shape else 0):
        same_shape = same_shape and cnp.PyArray_DIMS(array)[k] == cnp.PyArray_DIMS(like)[k]
    if not same_shape:
        raise ValueError(f"out must have the shape of {like_name} {_shape(like)}, "
                         f"got {_shape(array)}")
    if not cnp.PyArray_ISWRITEABLE(array):
        raise ValueError("out is read-only")
    if not cnp.PyArray_ISALIGNED(array):
        raise ValueError("out is not aligned to its items")
    cdef bint in_place = array is like or _same_view(array, like)
    if _elements_overlap(array):
        written = f"{like_name}, written in place," if in_place else "out"
        strides = _values(cnp.PyArray_STRIDES(array), cnp.PyArray_NDIM(array))
        raise ValueError(f"{written} has elements that share memory (a zero or overlapping "
                         f"stride: strides {strides} for shape {_shape(array)}), so the result "
                         "would depend on the order of the writes; pass an out= array whose "
                         "elements are distinct, e.g. numpy.empty_like")
    if not in_place and _share_memory(array, like, f"out and {like_name}"):
        raise ValueError(f"out overlaps {like_name} without being the same view of it; pass "
                         f"out={like_name} to work in place, or an array of its own")
    return 0


cpdef double check_keep_prob(object keep_prob) except -1.0:
    """keep_prob as a float in (0, 1], at least 2**-32, or an error naming it."""
    cdef double q
    if type(keep_prob) is float:  # the common case, without the slower abstract-class checks
        q = keep_prob
    elif isinstance(keep_prob, (bool, np.bool_)) or not isinstance(keep_prob, numbers.Real):
        raise TypeError(f"keep_prob must be a real number in (0, 1], got {keep_prob!r}")
    else:
        try:
            q = float(keep_prob)
        except OverflowError:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob!r}") from None
    if not 0.0 < q <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {q}")
    if q * 4294967296.0 < 1.0:
        raise ValueError(f"keep_prob must be at least 2**-32 (the resolution of the decisions), "
                         f"got {q}")
    return q


cpdef str check_choice(str name, object value, tuple choices):
    """value, one of the strings `choices`, or an error naming the argument."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


cpdef bint check_flag(str name, object value) except -1:
    """value as a bool (Python's or NumPy's), or an error naming the argument."""
    if value is True or value is False or isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


cpdef tuple check_shared_axes(object shared_axes, int ndim):
    """shared_axes as a sorted tuple of distinct axes in [0, ndim), or an error naming it."""
    if shared_axes is None:
        return ()
    items = (shared_axes,) if isinstance(shared_axes, (numbers.Integral, np.integer)) else shared_axes
    try:
        items = tuple(items)
    except TypeError:
        raise TypeError(f"shared_axes must be None, an int or a tuple of ints, got "
                        f"{type(shared_axes).__name__}") from None
    axes = []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            raise TypeError(f"shared_axes entries must be ints, got {item!r}")
        try:
            axis = operator.index(item)
        except TypeError:
            raise TypeError(f"shared_axes entries must be ints, got {item!r}") from None
        if not -ndim <= axis < ndim:
            raise ValueError(f"shared_axes entry {axis} is out of range for an array of {ndim} "
                             f"dimensions (valid: {-ndim} to {ndim - 1})")
        axis %= ndim
        if axis in axes:
            raise ValueError(f"shared_axes names axis {axis} more than once: {items!r}")
        axes.append(axis)
    return tuple(sorted(axes))


cdef object _check_stream(object seed, object stream):
    if seed is not None and stream is not None:
        raise ValueError("give seed= (stateless) or stream= (advancing), not both")
    if stream is not None and not isinstance(stream, Stream):
        raise TypeError(f"stream must be a fastdrop.Stream, got {type(stream).__name__}")
    return None if seed is None else check_seed(seed)


cdef object _identity(cnp.ndarray src, object out):
    """src itself, or a copy into out: the calls that keep every unit unchanged."""
    if out is None or out is src:
        return src
    np.copyto(out, src)
    return out


# The last answer of kernel_op, as (keep_prob, mode, dtype descriptor, forward, op): a training
# loop asks the same question call after call, and this check is cheaper than lru_cache's
# hashing.  One tuple, replaced whole, so that threads never see half of an update.
cdef tuple _last_op = (None, None, None, None, None)


cdef tuple _kernel_op(double q, str mode, cnp.ndarray array, bint forward):
    """kernel_op(q, mode, array.dtype, forward)."""
    global _last_op
    cdef tuple last = _last_op
    descr = <object>cnp.PyArray_DESCR(array)
    if last[2] is descr and last[0] == q and last[1] == mode and last[3] == forward:
        return last[4]
    op = kernel_op(q, mode, descr, forward)
    _last_op = (q, mode, descr, forward, op)
    return op


cdef int _engine(object engine, bint forward, cnp.ndarray src, cnp.ndarray out,
                 DropoutMask mask, tuple op, int dtype, object bits) except -1:
    """Runs the call; `bits` is mask.bits as the caller checked it, held for the whole call."""
    if engine is not None:
        engine(forward, src, out, mask, op)
    elif mask._draws():
        _run(forward, src, out, mask.shared_axes, mask.seed, mask.subsequence, mask.start,
             threshold_for(mask.keep_prob), False, op, dtype, bits)
    else:
        _run(True, src, out, (), 0, 0, 0, 0, True, op, dtype, None)
    return 0


cdef object _scaled(object engine, int dtype, cnp.ndarray src, object out, DropoutMask mask):
    """keep_prob * src in the compute precision: classic dropout's evaluation, and its
    gradient."""
    factor = float(compute_dtype(<object>cnp.PyArray_DESCR(src)).type(mask.keep_prob))
    if out is None:
        out = np.empty_like(src)
    _engine(engine, True, src, out, mask, (factor, 0.0, 0.0, False), dtype, None)
    return out


cdef void _fill_kept(cnp.ndarray bits, object decisions):
    """Packed decisions that keep all `decisions` units, written straight into `bits` (the
    padding bits of the last byte zero, as numpy.packbits leaves them)."""
    cdef Py_ssize_t whole = decisions // 8
    cdef int rest = decisions % 8
    cdef uint8_t *data = <uint8_t *>cnp.PyArray_DATA(bits)
    memset(data, 0xFF, whole)
    if rest:
        data[whole] = (1 << rest) - 1


def forward(engine, x, keep_prob, training, mode, shared_axes, seed, stream, out, store):
    """fastdrop.dropout's work with `engine` doing the arithmetic (None: the C core)."""
    cdef int dtype = check_array("x", x)
    cdef double q = check_keep_prob(keep_prob)
    check_choice("mode", mode, MODES)
    check_choice("store", store, STORES)
    cdef bint training_call = check_flag("training", training)
    cdef cnp.ndarray array = <cnp.ndarray>x
    cdef tuple axes = check_shared_axes(shared_axes, cnp.PyArray_NDIM(array))
    seed = _check_stream(seed, stream)
    if out is not None:
        check_out(out, array, "x")
    cdef tuple shape = _shape(array)
    cdef DropoutMask mask
    if not training_call:
        mask = _record(shape, axes, q, mode, False, None, None, None, None)
        if mode == "classic":
            return _scaled(engine, dtype, array, out, mask), mask
        return _identity(array, out), mask

    size = math.prod(mask_shape(shape, axes)) if axes else cnp.PyArray_SIZE(array)
    blocks = blocks_for(size)
    # Refuse a call the stream cannot serve before allocating anything (its output could be far
    # larger than memory); the reservation below checks again, atomically.
    cdef Stream source = None
    if seed is not None:
        if blocks > BLOCK_LIMIT:
            raise OverflowError(f"x needs {blocks} stream blocks, more than the 2**64 a stream has")
    else:
        source = <Stream>(stream if stream is not None else DEFAULT_STREAM)
        source._check_room(blocks)
    # Allocate before the stream moves: a call that fails for want of memory leaves it in place.
    bits = np.empty(packed_nbytes(size), dtype=np.uint8) if store == "bits" else None
    if bits is not None and q == 1.0:
        _fill_kept(bits, size)
    if out is None and q < 1.0:
        out = np.empty_like(array)
    cdef uint64_t stream_seed, subsequence
    if source is None:
        mask = _record(shape, axes, q, mode, True, seed, 0, 0, bits)
    else:
        start = source._reserve(blocks, &stream_seed, &subsequence)
        mask = _record(shape, axes, q, mode, True, stream_seed, subsequence, start, bits)
    if q == 1.0:
        return _identity(array, out), mask
    if size:  # with no decisions there is nothing to draw, and start may be 2**64
        _engine(engine, True, array, out, mask, _kernel_op(q, mode, array, True), dtype, bits)
    return out, mask


def backward(engine, dy, mask, out):
    """fastdrop.dropout_backward's work with `engine` doing the arithmetic (None: the C core)."""
    cdef int dtype = check_array("dy", dy)
    cdef cnp.ndarray array = <cnp.ndarray>dy
    if not isinstance(mask, DropoutMask):
        raise TypeError(f"mask must be the DropoutMask returned by dropout, got "
                        f"{type(mask).__name__}")
    cdef DropoutMask record = <DropoutMask>mask
    cdef tuple shape = _shape(array)
    if shape != record.shape:
        raise ValueError(f"dy has shape {shape} but the mask was made for shape {record.shape}")
    bits = record._bits  # held here: another thread may replace mask.bits during the call
    if out is not None:
        check_out(out, array, "dy")
        if (bits is not None and record._draws()
                and _share_memory(<cnp.ndarray>out, <cnp.ndarray>bits, "out and mask.bits")):
            raise ValueError("out overlaps the mask's stored bits (mask.bits): backward would "
                             "overwrite decisions it has yet to read; pass an out= array of its "
                             "own")
    if not record._draws():
        # Evaluation is y = q * x (classic) or y = x; keep_prob = 1 trains as y = x.
        if record.mode == "classic" and not record.training:
            return _scaled(engine, dtype, array, out, record)
        return _identity(array, out)
    if out is None:
        out = np.empty_like(array)
    if cnp.PyArray_SIZE(array):  # an empty dy has nothing to write (its mask may not be empty)
        _engine(engine, False, array, out, record,
                _kernel_op(record.keep_prob, record.mode, array, False), dtype, bits)
    return out
