/*
 * fastdrop's fused dropout kernels.  See fd_dropout.h for the contract and SPEC §3 for the
 * stream; this file is about how the work is laid out.
 *
 * The work is cut into tiles of consecutive decisions (a range of the C-order mask index j).
 * A tile draws its decisions once into a small bit buffer that stays in L1, then applies them to
 * every element they govern: one pass over memory, no array of size n on the side, and a
 * decision shared by many elements (shared axes) is drawn once, not once per element.  Because a
 * decision is a pure function of j, tiles are independent: threads may take them in any order
 * and the result is bit-identical for every thread count.  Tiles start at multiples of 16
 * decisions (one Philox block's worth), so each tile draws whole blocks and owns whole bytes of a
 * stored bit mask, and threads never write the same byte.
 */
#include "fd_dropout.h"

#include <limits.h>
#include <string.h>

#include "fd_kernels.h"

#if FD_USE_OPENMP
#include <omp.h>
#endif
#if FD_FORK_HANDLERS
#include <pthread.h>
#endif

/* Largest tile, in decisions: its bit buffer (512 bytes) stays in L1 next to the data. */
#define FD_TILE_MAX_DECISIONS 4096
/* Most bytes of data a contiguous tile fetches ahead while it draws (see fd_prefetch): about
 * half of a 32 KiB L1, so that the lines are still there when the decisions are applied. */
#define FD_TILE_PREFETCH_BYTES 16384
/* Calls that touch fewer bytes than this are likely in cache already (a core's L2 holds them):
 * they skip the prefetches, which then cost a few percent and gain nothing. */
#ifndef FD_PREFETCH_MIN_BYTES
#define FD_PREFETCH_MIN_BYTES (1 << 20)
#endif
/* A tile should govern about this many elements, so that a tile's fixed costs stay small when
 * each decision is broadcast over many elements (channel dropout) and the tiles still outnumber
 * the threads. */
#define FD_TILE_TARGET_ELEMENTS 16384
/* Calls smaller than this run on the calling thread: waking a thread team costs microseconds,
 * more than the whole work of a small call. */
#ifndef FD_PARALLEL_MIN_ELEMENTS
#define FD_PARALLEL_MIN_ELEMENTS 65536
#endif

/* ------------------------------------------------------------------------------------------ */
/* The instruction-set path                                                                    */
/* ------------------------------------------------------------------------------------------ */

static const fd_kernels *kernels_for(fd_simd path)
{
    switch (path) {
#if FD_ENABLE_AVX512
    case FD_SIMD_AVX512:
        return &fd_kernels_avx512;
#endif
#if FD_ENABLE_AVX2
    case FD_SIMD_AVX2:
        return &fd_kernels_avx2;
#endif
    default:
        return &fd_kernels_scalar;
    }
}

#if FD_ENABLE_AVX2 || FD_ENABLE_AVX512
/* What the CPU supports and the operating system saves across context switches, read from CPUID
 * and XCR0 directly: __builtin_cpu_supports is GCC's and clang's only, and not every clang
 * knows "f16c".  MSVC has intrinsics for both instructions; GCC and clang, cpuid.h and asm. */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    int r[4];
    __cpuidex(r, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; i++)
        regs[i] = (uint32_t)r[i];
}
static uint64_t xcr0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
static uint64_t xcr0(void)
{
    uint32_t low, high;
    __asm__ __volatile__("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
    return ((uint64_t)high << 32) | low;
}
#endif

static int cpu_bit(uint32_t reg, int bit) { return (reg >> bit) & 1u; }

typedef struct cpu_features {
    int avx2_f16c;
    int avx512f_bw;
} cpu_features;

static cpu_features cpu_features_read(void)
{
    cpu_features has = {0, 0};
    uint32_t regs[4];
    cpuid(0, 0, regs);
    if (regs[0] < 7) /* the highest leaf */
        return has;
    cpuid(1, 0, regs);
    uint32_t ecx1 = regs[2];
    cpuid(7, 0, regs);
    uint32_t ebx7 = regs[1];
    /* XGETBV exists once the operating system has turned XSAVE on (OSXSAVE). */
    if (!cpu_bit(ecx1, 27))
        return has;
    uint64_t saved = xcr0();
    int ymm_saved = (saved & 0x6) == 0x6;                 /* XMM and YMM state */
    int zmm_saved = ymm_saved && (saved & 0xE0) == 0xE0;  /* opmask, ZMM_Hi256, Hi16_ZMM */
    has.avx2_f16c = ymm_saved && cpu_bit(ecx1, 28) /* AVX */ && cpu_bit(ecx1, 29) /* F16C */ &&
                    cpu_bit(ebx7, 5) /* AVX2 */;
    has.avx512f_bw = zmm_saved && cpu_bit(ebx7, 16) /* AVX512F */ &&
                     cpu_bit(ebx7, 30) /* AVX512BW */;
    return has;
}
#endif

int fd_simd_supported(fd_simd path)
{
    switch (path) {
    case FD_SIMD_SCALAR:
        return 1;
#if FD_ENABLE_AVX2
    case FD_SIMD_AVX2:
        return cpu_features_read().avx2_f16c;
#endif
#if FD_ENABLE_AVX512
    case FD_SIMD_AVX512:
        return FD_AVX512_EMULATED || cpu_features_read().avx512f_bw;
#endif
    default:
        return 0;
    }
}

/* The C core's own default, for callers that do not choose (the Python package times the
 * paths at import and selects the fastest, fastdrop/_api.py).  AVX-512 before AVX2 on every
 * CPU that has both, Zen 4 included, whose 512-bit instructions
 * run as two 256-bit halves: there the AVX-512 Philox round of 8 blocks is 12 halves, the AVX2
 * one 16 instructions, on the same four pipes (the bounds are worked out in
 * fd_kernels_avx512.c and fd_kernels_avx2.c), and the bodies select with masks where AVX2
 * shifts decision bits into sign bits and blends. */
fd_simd fd_simd_best(void)
{
    if (fd_simd_supported(FD_SIMD_AVX512))
        return FD_SIMD_AVX512;
    if (fd_simd_supported(FD_SIMD_AVX2))
        return FD_SIMD_AVX2;
    return FD_SIMD_SCALAR;
}

/* -1 until the first call picks the best path; a plain int because every thread that races to
 * set it writes the same value. */
static int active_path = -1;

fd_simd fd_simd_active(void)
{
    if (active_path < 0)
        active_path = (int)fd_simd_best();
    return (fd_simd)active_path;
}

fd_status fd_simd_select(fd_simd path)
{
    if (!fd_simd_supported(path))
        return FD_ERR_SIMD;
    active_path = (int)path;
    return FD_OK;
}

const char *fd_simd_name(fd_simd path)
{
    switch (path) {
    case FD_SIMD_SCALAR:
        return "scalar";
    case FD_SIMD_AVX2:
        return "avx2";
    case FD_SIMD_AVX512:
        return "avx512";
    }
    return "unknown";
}

/* Packs decisions [j0, j0 + count) into bits (bit i % 8 of byte i / 8 for decision j0 + i),
 * fetching `ahead` meanwhile; j0 is a multiple of 16.  The high bits of the last byte past
 * `count` are zero. */
static void decide_range(const fd_params *p, const fd_kernels *k, uint64_t j0, uint64_t count,
                         uint8_t *bits, fd_prefetch *ahead)
{
    uint64_t nbytes = (count + 7) / 8;
    if (p->keep_all)
        memset(bits, 0xff, (size_t)nbytes);
    else
        k->decide(p, j0, nbytes, bits, ahead);
    if (count % 8)
        bits[nbytes - 1] &= (uint8_t)((1u << (count % 8)) - 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Rows: the innermost loop                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Applies decisions to n elements spaced by the given byte strides: element i takes decision bit
 * bit0 + i when per_element, else all n take bit bit0 (a shared axis).  Contiguous rows go to
 * the path's vector body: from the first byte boundary of their decisions on, or, for one
 * decision broadcast along the row, over a run of identical bytes. */
typedef void (*row_fn)(const char *in, ptrdiff_t in_stride, char *out, ptrdiff_t out_stride,
                       ptrdiff_t n, const uint8_t *bits, uint64_t bit0, int per_element,
                       const fd_params *p, fd_body_fn body);

/* Elements per vector-body call on a broadcast row, in bytes of decisions. */
#define FD_BROADCAST_BYTES 64

#define FD_DEFINE_ROW(suffix, storage, ctype)                                                  \
    static void strided_row_##suffix(const char *in, ptrdiff_t in_stride, char *out,           \
                                     ptrdiff_t out_stride, ptrdiff_t n, const uint8_t *bits,   \
                                     uint64_t bit0, uint64_t step, const fd_op_##ctype *op)    \
    {                                                                                          \
        for (ptrdiff_t i = 0; i < n; i++)                                                      \
            fd_element_##suffix(in + i * in_stride, out + i * out_stride, op,                  \
                                FD_BIT(bits, bit0 + step * (uint64_t)i));                      \
    }                                                                                          \
                                                                                               \
    static void apply_row_##suffix(const char *in, ptrdiff_t in_stride, char *out,             \
                                   ptrdiff_t out_stride, ptrdiff_t n, const uint8_t *bits,     \
                                   uint64_t bit0, int per_element, const fd_params *p,         \
                                   fd_body_fn body)                                            \
    {                                                                                          \
        const fd_op_##ctype op = fd_op_##ctype##_of(p);                                        \
        const ptrdiff_t size = sizeof(storage);                                                \
        if (in_stride != size || out_stride != size) {                                         \
            strided_row_##suffix(in, in_stride, out, out_stride, n, bits, bit0,                \
                                 per_element ? 1 : 0, &op);                                    \
            return;                                                                            \
        }                                                                                      \
        ptrdiff_t done = 0;                                                                    \
        if (!per_element && !FD_BIT(bits, bit0) && !p->affine) {                               \
            memset(out, 0, (size_t)n * sizeof(storage)); /* +0.0: no need to read the row */   \
            return;                                                                            \
        }                                                                                      \
        if (!per_element) {                                                                    \
            uint8_t same[FD_BROADCAST_BYTES];                                                  \
            memset(same, FD_BIT(bits, bit0) ? 0xff : 0, sizeof same);                          \
            for (; n - done >= 8; ) {                                                          \
                ptrdiff_t nbytes = (n - done) / 8;                                             \
                nbytes = nbytes < FD_BROADCAST_BYTES ? nbytes : FD_BROADCAST_BYTES;            \
                body(in + done * size, out + done * size, (size_t)nbytes, same, p);            \
                done += 8 * nbytes;                                                            \
            }                                                                                  \
            strided_row_##suffix(in + done * size, size, out + done * size, size, n - done,    \
                                 same, 0, 0, &op);                                             \
            return;                                                                            \
        }                                                                                      \
        done = (ptrdiff_t)((8 - (bit0 & 7)) & 7);                                              \
        done = done < n ? done : n;                                                            \
        strided_row_##suffix(in, size, out, size, done, bits, bit0, 1, &op);                   \
        size_t nbytes = (size_t)(n - done) / 8;                                                \
        body(in + done * size, out + done * size, nbytes, bits + (bit0 + (uint64_t)done) / 8,  \
             p);                                                                               \
        done += 8 * (ptrdiff_t)nbytes;                                                         \
        strided_row_##suffix(in + done * size, size, out + done * size, size, n - done, bits,  \
                             bit0 + (uint64_t)done, 1, &op);                                   \
    }

FD_DEFINE_ROW(f16, uint16_t, float)
FD_DEFINE_ROW(bf16, uint16_t, float)
FD_DEFINE_ROW(f32, float, float)
FD_DEFINE_ROW(f64, double, double)

/* ------------------------------------------------------------------------------------------ */
/* Layout                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The array reduced to the axes that matter: extent-1 axes dropped (they never change an index),
 * neighbours merged where memory and the mask allow, and a leading axis of extent 1 added when
 * no axis is left with its own decisions, so that there is always one. */
typedef struct layout {
    int nax;
    ptrdiff_t size[FD_MAX_NDIM + 1];
    ptrdiff_t in_st[FD_MAX_NDIM + 1];
    ptrdiff_t out_st[FD_MAX_NDIM + 1];
    uint8_t shared[FD_MAX_NDIM + 1];
    int mask_inner;          /* the innermost axis with its own decisions */
    uint64_t mask_size;      /* number of decisions */
    uint64_t elements;       /* number of elements; 0 for an empty array */
} layout;

static void layout_build(const fd_params *p, layout *L)
{
    L->nax = 0;
    L->elements = 1;
    L->mask_size = 1;
    for (int k = 0; k < p->ndim; k++) {
        ptrdiff_t n = p->shape[k];
        int shared = p->shared_axes[k] != 0;
        L->elements *= (uint64_t)n;
        if (!shared)
            L->mask_size *= (uint64_t)n;
        if (n == 1)
            continue;
        int last = L->nax - 1;
        /* Two neighbours merge when stepping the outer one equals stepping the inner one across
         * its whole extent, in both arrays, and both are shared or both are not: then the merged
         * axis visits the same elements with the same C-order decision indices. */
        if (last >= 0 && L->shared[last] == shared && L->in_st[last] == p->in_strides[k] * n &&
            L->out_st[last] == p->out_strides[k] * n) {
            L->size[last] *= n;
            L->in_st[last] = p->in_strides[k];
            L->out_st[last] = p->out_strides[k];
            continue;
        }
        L->size[L->nax] = n;
        L->in_st[L->nax] = p->in_strides[k];
        L->out_st[L->nax] = p->out_strides[k];
        L->shared[L->nax] = (uint8_t)shared;
        L->nax++;
    }
    L->mask_inner = -1;
    for (int k = L->nax - 1; k >= 0 && L->mask_inner < 0; k--)
        if (!L->shared[k])
            L->mask_inner = k;
    if (L->mask_inner < 0) {
        memmove(L->size + 1, L->size, sizeof(ptrdiff_t) * (size_t)L->nax);
        memmove(L->in_st + 1, L->in_st, sizeof(ptrdiff_t) * (size_t)L->nax);
        memmove(L->out_st + 1, L->out_st, sizeof(ptrdiff_t) * (size_t)L->nax);
        memmove(L->shared + 1, L->shared, (size_t)L->nax);
        L->size[0] = 1;
        L->in_st[0] = 0;
        L->out_st[0] = 0;
        L->shared[0] = 0;
        L->mask_inner = 0;
        L->nax++;
    }
}

/* Decisions per tile: a multiple of 16, at most FD_TILE_MAX_DECISIONS, and about
 * FD_TILE_TARGET_ELEMENTS elements' worth. */
static uint64_t tile_decisions(const layout *L)
{
    uint64_t per_decision = L->elements / L->mask_size;
    uint64_t want = (FD_TILE_TARGET_ELEMENTS + per_decision - 1) / per_decision;
    want = (want + 15) / 16 * 16;
    return want < FD_TILE_MAX_DECISIONS ? want : FD_TILE_MAX_DECISIONS;
}

/* What every tile of one call shares. */
typedef struct call {
    const fd_params *p;
    layout L;
    const fd_kernels *kernels;
    row_fn row;
    fd_body_fn body;
    const char *in;
    char *out;
    const uint8_t *bits_in;
    uint8_t *bits_out;
    size_t itemsize;
    int prefetch;            /* one decision per element, both arrays contiguous (decision j
                              * governs element j, at byte j * itemsize of in and of out), and
                              * at least FD_PREFETCH_MIN_BYTES of them */
    uint64_t tile;           /* decisions per tile */
} call;

/* Applies the decisions of one segment, a run [a, a + len) of the innermost decision axis with the
 * outer decision axes fixed, to all the elements it governs: the sub-box spanned by the run and
 * every shared axis, walked in the array's own axis order so that memory is read in order. */
static void apply_segment(const call *c, const char *in, char *out, ptrdiff_t len,
                          const uint8_t *bits, uint64_t bit0)
{
    const layout *L = &c->L;
    int axes[FD_MAX_NDIM + 1];
    int nsub = 0;
    for (int k = 0; k < L->nax; k++)
        if (L->shared[k] || k == L->mask_inner)
            axes[nsub++] = k;
    ptrdiff_t size[FD_MAX_NDIM + 1];
    for (int s = 0; s < nsub; s++)
        size[s] = axes[s] == L->mask_inner ? len : L->size[axes[s]];

    int last = axes[nsub - 1];
    int last_per_element = last == L->mask_inner;
    ptrdiff_t index[FD_MAX_NDIM + 1] = {0};
    for (;;) {
        ptrdiff_t in_off = 0, out_off = 0;
        uint64_t bit = bit0;
        for (int s = 0; s < nsub - 1; s++) {
            in_off += index[s] * L->in_st[axes[s]];
            out_off += index[s] * L->out_st[axes[s]];
            if (axes[s] == L->mask_inner)
                bit += (uint64_t)index[s];
        }
        c->row(in + in_off, L->in_st[last], out + out_off, L->out_st[last], size[nsub - 1], bits,
               bit, last_per_element, c->p, c->body);
        int s = nsub - 2;
        while (s >= 0 && ++index[s] == size[s])
            index[s--] = 0;
        if (s < 0)
            return;
    }
}

/* What a tile of decisions [j0, j0 + count) fetches while it draws: its input, and its output
 * when that is another array, on calls that prefetch; nothing on the others. */
static fd_prefetch tile_data(const call *c, uint64_t j0, uint64_t count)
{
    fd_prefetch ahead = {NULL, NULL, 0, 0, 0};
    if (!c->prefetch)
        return ahead;
    size_t lines = (size_t)((count * c->itemsize + FD_CACHE_LINE - 1) / FD_CACHE_LINE);
    ahead.read = c->in + j0 * c->itemsize;
    ahead.read_lines = lines;
    if (c->out != c->in) {
        ahead.write = c->out + j0 * c->itemsize;
        ahead.write_lines = lines;
    }
    return ahead;
}

/* Runs one tile: decisions [j0, j0 + count). */
static void run_tile(const call *c, uint64_t j0, uint64_t count)
{
    const layout *L = &c->L;
    uint8_t local[FD_TILE_MAX_DECISIONS / 8];
    const uint8_t *bits = local;
    if (c->bits_in) {
        bits = c->bits_in + j0 / 8;
    } else {
        fd_prefetch ahead = tile_data(c, j0, count);
        decide_range(c->p, c->kernels, j0, count, local, &ahead);
    }
    if (c->bits_out)
        memcpy(c->bits_out + j0 / 8, local, (size_t)((count + 7) / 8));

    /* The multi-index of decision j0 over the decision axes, innermost last. */
    ptrdiff_t index[FD_MAX_NDIM + 1];
    uint64_t rest = j0;
    for (int k = L->nax - 1; k >= 0; k--) {
        if (L->shared[k])
            continue;
        index[k] = (ptrdiff_t)(rest % (uint64_t)L->size[k]);
        rest /= (uint64_t)L->size[k];
    }
    uint64_t done = 0;
    while (done < count) {
        ptrdiff_t in_off = 0, out_off = 0;
        for (int k = 0; k < L->nax; k++) {
            if (L->shared[k])
                continue;
            in_off += index[k] * L->in_st[k];
            out_off += index[k] * L->out_st[k];
        }
        int inner = L->mask_inner;
        uint64_t len = (uint64_t)(L->size[inner] - index[inner]);
        if (len > count - done)
            len = count - done;
        apply_segment(c, c->in + in_off, c->out + out_off, (ptrdiff_t)len, bits, done);
        done += len;
        /* Step to the next row of the innermost decision axis. */
        index[inner] = 0;
        for (int k = inner - 1; k >= 0; k--) {
            if (L->shared[k])
                continue;
            if (++index[k] < L->size[k])
                break;
            index[k] = 0;
        }
    }
}

/* Checks the parameters and reduces the array to its layout: the prologue of every entry point. */
static fd_status prepare(const fd_params *p, layout *L)
{
    if (p->ndim < 0 || p->ndim > FD_MAX_NDIM)
        return FD_ERR_NDIM;
    layout_build(p, L);
    if (!p->keep_all && p->threshold == 0)
        return FD_ERR_THRESHOLD;
    uint64_t blocks = (L->mask_size + 15) / 16;
    if (blocks > 0 && p->start > UINT64_MAX - (blocks - 1))
        return FD_ERR_STREAM;
    return FD_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The process around a call (SPEC §8): fork safety and the floating-point environment          */
/* ------------------------------------------------------------------------------------------ */

/* See fd_thread_limit in fd_dropout.h.  A plain int, like active_path: it changes only in a
 * forked child (the fork handler runs while the child has one thread), and a call racing with
 * fd_thread_limit_lift on another thread reads either value, which give the same bits. */
static int thread_limit = INT_MAX;

#if FD_USE_OPENMP
/* 1 in a child made by fork() and in its descendants (only the fork handler sets it): the
 * forking thread's OpenMP pool may be one whose threads stayed in the parent. */
static int forked = 0;
#endif

#if FD_FORK_HANDLERS
static void after_fork_in_child(void)
{
    forked = 1;
    thread_limit = 1;
}

/* Registered when the library is loaded, so that a fork after work done by another library on
 * the same OpenMP runtime (PyTorch) is covered before fastdrop's first call. */
__attribute__((constructor)) static void register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}
#endif

int fd_thread_limit(void)
{
    return thread_limit;
}

void fd_thread_limit_lift(void)
{
    if (thread_limit != INT_MAX)
        thread_limit = INT_MAX;
}

/* See fd_kernels.h. */
int fd_tiles_threads(int requested, int small, uint64_t tiles)
{
    int threads = requested < thread_limit ? requested : thread_limit;
    if (small || threads < 1)
        threads = 1;
    if ((uint64_t)threads > tiles)
        threads = (int)tiles;
    return threads;
}

#if FD_USE_OPENMP
/*
 * The floating-point environment is per thread, and pool threads keep whatever they were
 * created with, so each worker takes the caller's for the call and gets its own back after.
 * What each platform carries:
 * - x86 with SSE: MXCSR, i.e. rounding, flush-to-zero, denormals-are-zero and the exception
 *   masks (the x87 control word is not carried: no kernel computes on the x87 unit);
 * - AArch64 with GCC or Clang: FPCR, i.e. rounding, flush-to-zero (FZ, FZ16), default NaN and
 *   the trap enables;
 * - elsewhere: the C library's fenv_t (fegetenv/fesetenv), which holds at least the rounding
 *   mode and, on most platforms, the whole floating-point control register.
 * MXCSR and FPCR are read and written directly: one register each, and no dependence on what a
 * C library's fesetenv restores.
 */
#if defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
#include <xmmintrin.h>
typedef unsigned int fp_env;
static void fp_env_get(fp_env *env) { *env = _mm_getcsr(); }
static void fp_env_set(const fp_env *env) { _mm_setcsr(*env); }
#elif defined(__aarch64__) && defined(__GNUC__)
typedef uint64_t fp_env;
static void fp_env_get(fp_env *env) { __asm__ __volatile__("mrs %0, fpcr" : "=r"(*env)); }
static void fp_env_set(const fp_env *env) { __asm__ __volatile__("msr fpcr, %0" : : "r"(*env)); }
#else
#include <fenv.h>
typedef fenv_t fp_env;
static void fp_env_get(fp_env *env) { fegetenv(env); }
static void fp_env_set(const fp_env *env) { fesetenv(env); }
#endif
#endif

/* Tiles a thread takes at a time.  Threads take chunks as they go (dynamic schedule) rather than
 * a fixed share: on a shared machine one thread is often descheduled for a while, and a fixed
 * share would make the whole call wait for it.  16 tiles are 256 KiB of float32, enough for the
 * hardware prefetchers to stream and for the chunk handout to cost nothing. */
#ifndef FD_TILES_PER_CHUNK
#define FD_TILES_PER_CHUNK 16
#endif

#if FD_USE_OPENMP
typedef struct tile_loop {
    int64_t tiles;
    int threads;
    fd_tile_fn fn;
    const void *ctx;
    fp_env caller_env;
} tile_loop;

static void run_parallel(const tile_loop *loop)
{
#pragma omp parallel num_threads(loop->threads)
    {
        fp_env own_env;
        fp_env_get(&own_env);
        fp_env_set(&loop->caller_env);
#pragma omp for schedule(dynamic, FD_TILES_PER_CHUNK) nowait
        for (int64_t t = 0; t < loop->tiles; t++)
            loop->fn(loop->ctx, t);
        fp_env_set(&own_env);
    }
}
#endif

#if FD_FORK_HANDLERS
static void *run_parallel_thread(void *loop)
{
    run_parallel(loop);
    return NULL;
}

/* Runs the region from a new thread, which has no OpenMP pool yet and so starts threads of its
 * own rather than waiting for ones that stayed in the parent.  0 when no thread could be made. */
static int run_parallel_on_new_thread(tile_loop *loop)
{
    pthread_t master;
    if (pthread_create(&master, NULL, run_parallel_thread, loop) != 0)
        return 0;
    pthread_join(master, NULL);
    return 1;
}
#endif

/* See fd_kernels.h.  One thread runs the plain loop: even a one-thread OpenMP region costs more
 * than a small call's whole work. */
void fd_tiles_run(int64_t tiles, int threads, fd_tile_fn fn, const void *ctx)
{
#if FD_USE_OPENMP
    if (threads > 1) {
        tile_loop loop = {.tiles = tiles, .threads = threads, .fn = fn, .ctx = ctx};
        fp_env_get(&loop.caller_env);
        if (!forked) {
            run_parallel(&loop);
            return;
        }
#if FD_FORK_HANDLERS
        if (run_parallel_on_new_thread(&loop))
            return;
#endif
    }
#else
    (void)threads;
#endif
    for (int64_t t = 0; t < tiles; t++)
        fn(ctx, t);
}

static void call_tile(const void *ctx, int64_t t)
{
    const call *c = ctx;
    uint64_t j0 = (uint64_t)t * c->tile;
    uint64_t rest = c->L.mask_size - j0;
    run_tile(c, j0, rest < c->tile ? rest : c->tile);
}

static fd_status run(call *c)
{
    const fd_params *p = c->p;
    fd_status status = prepare(p, &c->L);
    if (status != FD_OK)
        return status;
    if (c->L.elements == 0) {
        /* Nothing to write, but a stored mask still records the decisions of the mask shape. */
        return c->bits_out ? fd_mask_generate(p, c->bits_out) : FD_OK;
    }
    const layout *L = &c->L;
    uint64_t fetched = c->itemsize * (c->out == c->in ? 1 : 2); /* bytes per element */
    c->prefetch = L->nax == 1 && !L->shared[0] && L->in_st[0] == (ptrdiff_t)c->itemsize &&
                  L->out_st[0] == (ptrdiff_t)c->itemsize &&
                  L->elements >= FD_PREFETCH_MIN_BYTES / fetched;
    c->tile = tile_decisions(L);
    if (c->prefetch) {
        uint64_t fits = FD_TILE_PREFETCH_BYTES / fetched / 16 * 16;
        c->tile = c->tile < fits ? c->tile : fits;
    }
    int64_t tiles = (int64_t)((c->L.mask_size + c->tile - 1) / c->tile);
    fd_tiles_run(tiles,
                 fd_tiles_threads(p->num_threads, c->L.elements < FD_PARALLEL_MIN_ELEMENTS,
                                  (uint64_t)tiles),
                 call_tile, c);
    return FD_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Public entry points                                                                         */
/* ------------------------------------------------------------------------------------------ */

uint64_t fd_mask_size(const fd_params *p)
{
    uint64_t size = 1;
    for (int k = 0; k < p->ndim; k++)
        if (!p->shared_axes[k])
            size *= (uint64_t)p->shape[k];
    return size;
}

typedef struct generate {
    const fd_params *p;
    const fd_kernels *kernels;
    uint64_t mask_size;
    uint8_t *bits;
} generate;

static void generate_tile(const void *ctx, int64_t t)
{
    const generate *g = ctx;
    uint64_t j0 = (uint64_t)t * FD_TILE_MAX_DECISIONS;
    uint64_t rest = g->mask_size - j0;
    fd_prefetch nothing = {NULL, NULL, 0, 0, 0};
    decide_range(g->p, g->kernels, j0, rest < FD_TILE_MAX_DECISIONS ? rest : FD_TILE_MAX_DECISIONS,
                 g->bits + j0 / 8, &nothing);
}

fd_status fd_mask_generate(const fd_params *p, uint8_t *bits)
{
    layout L;
    fd_status status = prepare(p, &L);
    if (status != FD_OK)
        return status;
    generate g = {p, kernels_for(fd_simd_active()), L.mask_size, bits};
    int64_t tiles = (int64_t)((L.mask_size + FD_TILE_MAX_DECISIONS - 1) / FD_TILE_MAX_DECISIONS);
    fd_tiles_run(tiles,
                 fd_tiles_threads(p->num_threads, L.mask_size < FD_PARALLEL_MIN_ELEMENTS,
                                  (uint64_t)tiles),
                 generate_tile, &g);
    return FD_OK;
}

/* One definition per dtype of the entry points: forward draws (and may store) the decisions,
 * backward reads stored ones or draws them again. */
#define FD_DEFINE_ENTRY_POINTS(suffix, type, index)                                            \
    static fd_status run_##suffix(const fd_params *p, const type *in, type *out,               \
                                  const uint8_t *bits_in, uint8_t *bits_out)                   \
    {                                                                                          \
        call c;                                                                                \
        c.p = p;                                                                               \
        c.kernels = kernels_for(fd_simd_active());                                             \
        c.row = apply_row_##suffix;                                                            \
        c.body = c.kernels->body[index];                                                       \
        c.in = (const char *)in;                                                               \
        c.out = (char *)out;                                                                   \
        c.bits_in = bits_in;                                                                   \
        c.bits_out = bits_out;                                                                 \
        c.itemsize = sizeof(type);                                                             \
        return run(&c);                                                                        \
    }                                                                                          \
                                                                                               \
    fd_status fd_dropout_forward_##suffix(const fd_params *p, const type *in, type *out,       \
                                          uint8_t *bits_out)                                   \
    {                                                                                          \
        return run_##suffix(p, in, out, NULL, bits_out);                                       \
    }                                                                                          \
                                                                                               \
    fd_status fd_dropout_backward_##suffix(const fd_params *p, const type *in, type *out,      \
                                           const uint8_t *bits_in)                             \
    {                                                                                          \
        return run_##suffix(p, in, out, bits_in, NULL);                                        \
    }

FD_DEFINE_ENTRY_POINTS(f16, uint16_t, FD_F16)
FD_DEFINE_ENTRY_POINTS(bf16, uint16_t, FD_BF16)
FD_DEFINE_ENTRY_POINTS(f32, float, FD_F32)
FD_DEFINE_ENTRY_POINTS(f64, double, FD_F64)

int fd_openmp_enabled(void)
{
    return FD_USE_OPENMP;
}

int fd_default_num_threads(void)
{
#if FD_USE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* 0 until set; a plain int, as active_path: a call reads a whole int, old or new. */
static int num_threads_setting = 0;

void fd_num_threads_set(int num_threads)
{
    num_threads_setting = num_threads;
}

int fd_num_threads(void)
{
    return num_threads_setting > 0 ? num_threads_setting : fd_default_num_threads();
}
