# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin wrapper over the C core in src_c/.

Private: fastdrop's Python layer validates every argument before it calls in (shapes, dtypes,
strides, overlap, the stream range), so these functions only translate arrays into pointers,
shapes and strides and make one C call with the GIL released.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t

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
    ctypedef enum fd_status:
        FD_OK

    ctypedef struct fd_params:
        uint64_t seed
        uint64_t subsequence
        uint64_t start
        uint32_t threshold
        int keep_all
        double scale
        int ndim
        const cnp.npy_intp *shape
        const cnp.npy_intp *in_strides
        const cnp.npy_intp *out_strides
        const uint8_t *shared_axes
        int num_threads

    fd_status fd_mask_generate(const fd_params *p, uint8_t *bits) nogil
    fd_status fd_dropout_forward_f32(const fd_params *p, const float *x, float *out,
                                     uint8_t *bits_out) nogil
    fd_status fd_dropout_forward_f64(const fd_params *p, const double *x, double *out,
                                     uint8_t *bits_out) nogil
    fd_status fd_dropout_backward_f32(const fd_params *p, const float *x, float *out,
                                      const uint8_t *bits_in) nogil
    fd_status fd_dropout_backward_f64(const fd_params *p, const double *x, double *out,
                                      const uint8_t *bits_in) nogil
    int fd_openmp_enabled() nogil
    int fd_default_num_threads() nogil


cdef int _num_threads = fd_default_num_threads()
# What p.shared_axes points at for a 0-d array, whose flag array is empty.
cdef uint8_t _no_axes = 0


def openmp_enabled():
    return bool(fd_openmp_enabled())


def default_num_threads():
    return fd_default_num_threads()


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
                       const cnp.npy_intp *out_strides,
                       const uint8_t[:] shared, uint64_t seed, uint64_t subsequence,
                       uint64_t start, uint32_t threshold, bint keep_all, double scale):
    cdef fd_params p
    p.seed = seed
    p.subsequence = subsequence
    p.start = start
    p.threshold = threshold
    p.keep_all = keep_all
    p.scale = scale
    p.ndim = ndim
    p.shape = shape
    p.in_strides = in_strides
    p.out_strides = out_strides
    p.shared_axes = &shared[0] if shared.shape[0] else &_no_axes
    p.num_threads = _num_threads
    return p


cdef void _check(fd_status status) except *:
    if status != FD_OK:
        raise RuntimeError(f"fastdrop's C core refused a call (status {<int>status}); "
                           "this is a bug in fastdrop, please report it")


def mask_generate(shape, const uint8_t[:] shared, uint64_t seed, uint64_t subsequence,
                  uint64_t start, uint32_t threshold, bint keep_all, Py_ssize_t nbytes):
    """The packed decisions of a call (SPEC §4 layout) as a new uint8 array of nbytes bytes;
    `shared` holds one flag per axis of `shape`."""
    cdef cnp.ndarray dims = np.asarray(shape, dtype=np.intp)
    cdef cnp.ndarray strides = np.zeros(len(shape), dtype=np.intp)
    cdef const cnp.npy_intp *no_strides = <const cnp.npy_intp *>cnp.PyArray_DATA(strides)
    cdef fd_params p = _params(len(shape), <const cnp.npy_intp *>cnp.PyArray_DATA(dims),
                               no_strides, no_strides, shared, seed, subsequence, start,
                               threshold, keep_all, 1.0)
    cdef cnp.ndarray bits = np.zeros(nbytes, dtype=np.uint8)
    cdef fd_status status
    with nogil:
        status = fd_mask_generate(&p, <uint8_t *>cnp.PyArray_DATA(bits))
    _check(status)
    return bits


def apply(bint forward, cnp.ndarray x, cnp.ndarray out, const uint8_t[:] shared,
          uint64_t seed, uint64_t subsequence, uint64_t start, uint32_t threshold,
          bint keep_all, double scale, cnp.ndarray bits):
    """One kernel call: out = kept ? x * scale : 0.

    forward=True draws the decisions and, when `bits` is an array, also stores them there;
    forward=False reads them from `bits` when it is an array and regenerates them otherwise.
    x and out have the same shape and a dtype of float32 or float64 (the same for both); `bits`
    is None or a writable, contiguous uint8 array of ceil(mask size / 8) bytes.
    """
    cdef fd_params p = _params(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_STRIDES(x),
                               cnp.PyArray_STRIDES(out), shared, seed, subsequence, start,
                               threshold, keep_all, scale)
    cdef uint8_t *bits_ptr = NULL if bits is None else <uint8_t *>cnp.PyArray_DATA(bits)
    cdef void *src = cnp.PyArray_DATA(x)
    cdef void *dst = cnp.PyArray_DATA(out)
    cdef int typenum = cnp.PyArray_TYPE(x)
    cdef fd_status status
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            if forward:
                status = fd_dropout_forward_f32(&p, <float *>src, <float *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_f32(&p, <float *>src, <float *>dst, bits_ptr)
    elif typenum == cnp.NPY_FLOAT64:
        with nogil:
            if forward:
                status = fd_dropout_forward_f64(&p, <double *>src, <double *>dst, bits_ptr)
            else:
                status = fd_dropout_backward_f64(&p, <double *>src, <double *>dst, bits_ptr)
    else:
        raise TypeError(f"the C core has no kernel for dtype {x.dtype}")
    _check(status)
