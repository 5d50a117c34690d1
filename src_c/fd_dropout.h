/*
 * fastdrop's C core: fused dropout forward and backward over strided n-d arrays (SPEC §2-§4).
 *
 * Plain C: no Python, no NumPy.  Callers pass data pointers, the shape, byte strides and one
 * fd_params; the kernels return an fd_status.  The Python layer validates everything before it
 * calls in, so a status other than FD_OK means a caller bug, never bad user input.
 */
#ifndef FD_DROPOUT_H
#define FD_DROPOUT_H

#include <stddef.h>
#include <stdint.h>

/* Build knob: 1 to split large calls across OpenMP threads.  Defaults to 1 when the compiler
 * was given OpenMP; -DFD_USE_OPENMP=0 builds a single-threaded core even then. */
#ifndef FD_USE_OPENMP
#  ifdef _OPENMP
#    define FD_USE_OPENMP 1
#  else
#    define FD_USE_OPENMP 0
#  endif
#endif
#if FD_USE_OPENMP && !defined(_OPENMP)
#  error "FD_USE_OPENMP=1 needs a compiler run with OpenMP enabled (-fopenmp)"
#endif

/* Build knob: 1 to register the fork handler that keeps a child made by fork() from hanging (see
 * fd_thread_limit).  It needs OpenMP (without threads nothing can hang), POSIX threads
 * (pthread_atfork) and a compiler that runs a function when the library is loaded (GCC, Clang). */
#ifndef FD_FORK_HANDLERS
#  if FD_USE_OPENMP && (defined(__unix__) || defined(__APPLE__)) && defined(__GNUC__)
#    define FD_FORK_HANDLERS 1
#  else
#    define FD_FORK_HANDLERS 0
#  endif
#endif

/* Most axes an array may have; NumPy's own limit is 64. */
#define FD_MAX_NDIM 64

typedef enum fd_status {
    FD_OK = 0,
    FD_ERR_NDIM = 1,        /* ndim < 0 or ndim > FD_MAX_NDIM */
    FD_ERR_THRESHOLD = 2,   /* threshold == 0 while keep_all == 0 */
    FD_ERR_STREAM = 3,      /* the call's blocks run past block 2**64 - 1 of its subsequence */
    FD_ERR_SIMD = 4         /* the requested SIMD path is not built in or not supported by the CPU */
} fd_status;

/* The instruction-set paths.  All produce the same bits; they differ only in speed. */
typedef enum fd_simd {
    FD_SIMD_SCALAR = 0,
    FD_SIMD_AVX2 = 1,
    FD_SIMD_AVX512 = 2   /* AVX-512 F and BW */
} fd_simd;

/*
 * Everything a call needs besides its data pointers.
 *
 * The decisions are those of SPEC §3 (version 2 of the stream): decision j (C-order index into
 * the mask shape, which is `shape` with the shared axes set to 1) keeps its elements iff its byte
 * h_j, byte j % 16 of block `start + j / 16` of (seed, subsequence), is below threshold >> 24,
 * or equal to it and the refinement draw (24 bits) is below threshold & 0xffffff.
 */
typedef struct fd_params {
    uint64_t seed;
    uint64_t subsequence;         /* < 2**63; 2**63 + subsequence is the refinement stream */
    uint64_t start;               /* first block of this call in the stream */
    uint32_t threshold;           /* T = floor(keep_prob * 2**32) */
    int keep_all;                 /* keep_prob == 1: every decision is "keep" */
    /* What an element becomes, computed in the dtype's compute type (float32 for float16,
     * bfloat16 and float32, float64 for float64), the constants already rounded to it:
     * kept: x * scale, then + shift when affine; dropped: `dropped` (+0.0 unless affine). */
    double scale;
    double shift;
    double dropped;
    int affine;
    int ndim;
    const ptrdiff_t *shape;
    const ptrdiff_t *in_strides;  /* bytes */
    const ptrdiff_t *out_strides; /* bytes */
    const uint8_t *shared_axes;   /* ndim flags: 1 where one decision is broadcast along the axis */
    int num_threads;              /* <= 1 runs on the calling thread */
} fd_params;

/* Number of decisions of a call: the product of the non-shared extents. */
uint64_t fd_mask_size(const fd_params *p);

/* Writes decisions [0, fd_mask_size(p)) packed one bit each, bit j % 8 of byte j / 8 (the bytes
 * of np.packbits(..., bitorder="little")); the unused high bits of the last byte are zero. */
fd_status fd_mask_generate(const fd_params *p, uint8_t *bits);

/*
 * out = kept ? x * scale (+ shift) : dropped, element by element (see fd_params), with the
 * decisions drawn from the stream (forward) or read from `bits_in` (backward from a stored
 * mask; NULL draws them again).  `in` and `out` may be the same array (in place).  `bits_out`,
 * when not NULL, receives the packed decisions as fd_mask_generate writes them.  float16 and
 * bfloat16 elements are passed as their uint16_t bit patterns.
 */
fd_status fd_dropout_forward_f16(const fd_params *p, const uint16_t *in, uint16_t *out,
                                 uint8_t *bits_out);
fd_status fd_dropout_forward_bf16(const fd_params *p, const uint16_t *in, uint16_t *out,
                                  uint8_t *bits_out);
fd_status fd_dropout_forward_f32(const fd_params *p, const float *in, float *out, uint8_t *bits_out);
fd_status fd_dropout_forward_f64(const fd_params *p, const double *in, double *out,
                                 uint8_t *bits_out);
fd_status fd_dropout_backward_f16(const fd_params *p, const uint16_t *in, uint16_t *out,
                                  const uint8_t *bits_in);
fd_status fd_dropout_backward_bf16(const fd_params *p, const uint16_t *in, uint16_t *out,
                                   const uint8_t *bits_in);
fd_status fd_dropout_backward_f32(const fd_params *p, const float *in, float *out,
                                  const uint8_t *bits_in);
fd_status fd_dropout_backward_f64(const fd_params *p, const double *in, double *out,
                                  const uint8_t *bits_in);

/* Whether a path is built in and this CPU (and OS) can run it; the fastest such path; the path
 * the kernels use (the fastest, unless fd_simd_select chose another); its name. */
int fd_simd_supported(fd_simd path);
fd_simd fd_simd_best(void);
fd_simd fd_simd_active(void);
fd_status fd_simd_select(fd_simd path);
const char *fd_simd_name(fd_simd path);

/* Whether the core was built with OpenMP, and how many threads it would use by default. */
int fd_openmp_enabled(void);
int fd_default_num_threads(void);

/* The threads a front end's call may use (fastdrop.set_num_threads): one setting for the Python
 * front end and the XLA FFI handler alike, fd_default_num_threads() until set.  Each call reads
 * it once, into fd_params.num_threads. */
void fd_num_threads_set(int num_threads);
int fd_num_threads(void);

/*
 * Fork safety (SPEC §8).  A child made by fork() inherits the OpenMP runtime's thread pool
 * without its threads, and libgomp hangs in the first parallel region the forking thread starts
 * there.  So in such a child every call runs on one thread, whatever num_threads says, until
 * fd_thread_limit_lift(); after that a threaded call starts its parallel region on a thread of
 * its own (new threads have no pool yet), which costs the creation of its threads on every
 * call.  fd_thread_limit() is the most threads a call may use now: 1 in a child until the lift,
 * else INT_MAX (always INT_MAX where FD_FORK_HANDLERS is 0).
 */
int fd_thread_limit(void);
void fd_thread_limit_lift(void);

#endif /* FD_DROPOUT_H */
