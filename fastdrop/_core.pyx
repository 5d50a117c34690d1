# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin wrapper over the C core in src_c/.

Private: fastdrop's Python layer validates every argument before it calls in (shapes, dtypes,
strides, overlap, the stream range), so these functions only translate arrays into pointers,
shapes and strides and make one C call with the GIL released.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset

cimport numpy as cnp

import numpy as np

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


cdef int _num_threads = fd_default_num_threads()


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
    global _num_threads
    _num_threads = n


def get_num_threads():
    return _num_threads


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
    p.num_threads = _num_threads
    return p


cdef void _check(fd_status status) except *:
    if status != FD_OK:
        raise RuntimeError(f"fastdrop's C core refused a call (status {<int>status}); "
                           "this is a bug in fastdrop, please report it")


def mask_generate(tuple shape, tuple shared_axes, uint64_t seed, uint64_t subsequence,
                  uint64_t start, uint32_t threshold, bint keep_all, Py_ssize_t nbytes):
    """The packed decisions of a call (SPEC §4 layout) as a new uint8 array of nbytes bytes."""
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
    cdef uint8_t flags[FD_MAX_NDIM]
    cdef fd_params p = _params(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_STRIDES(x),
                               cnp.PyArray_STRIDES(out), shared_axes, flags, seed, subsequence,
                               start, threshold, keep_all, op)
    cdef uint8_t *bits_ptr = NULL if bits is None else <uint8_t *>cnp.PyArray_DATA(bits)
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
