/*
 * The per-instruction-set building blocks of the kernels, behind one table so that the layout
 * code in fd_dropout.c is written once and the fastest path the CPU supports is chosen at run
 * time (never at build time: the default build runs on any x86-64).
 *
 * Every path must produce the same bits: the decisions are defined by SPEC §3 alone, and kept
 * values are one IEEE multiply in the dtype, which SIMD and scalar code round identically.
 */
#ifndef FD_KERNELS_H
#define FD_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fd_dropout.h"

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h> /* _BitScanForward64 */
#endif

/* Build knobs: 1 to compile the AVX2 / AVX-512 paths.  They need x86-64 and GCC or clang, which
 * compile each path's functions for its instruction set through target attributes (FD_TARGET),
 * or MSVC, which emits any intrinsic in any function; -DFD_ENABLE_AVX2=0 or -DFD_ENABLE_AVX512=0
 * leave a path out. */
#if (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)) && \
    (defined(__x86_64__) || (defined(_M_X64) && !defined(_M_ARM64EC)))
#  define FD_X86_SIMD 1
#else
#  define FD_X86_SIMD 0
#endif
#ifndef FD_ENABLE_AVX2
#  define FD_ENABLE_AVX2 FD_X86_SIMD
#endif
#ifndef FD_ENABLE_AVX512
#  define FD_ENABLE_AVX512 FD_X86_SIMD
#endif
#if defined(__GNUC__) || defined(__clang__)
#  define FD_TARGET(features) __attribute__((target(features)))
#  define FD_ALWAYS_INLINE __attribute__((always_inline))
#elif defined(_MSC_VER)
#  define FD_TARGET(features)
#  define FD_ALWAYS_INLINE __forceinline
#else
#  define FD_TARGET(features)
#  define FD_ALWAYS_INLINE
#endif
/* Test builds only: 1 compiles the AVX-512 path against src_c/tests/emulated_avx512.h, a
 * portable C model of its intrinsics, and counts it as supported on any CPU, so that the tests
 * run it on machines without AVX-512 (slowly: each intrinsic is a loop over lanes). */
#ifndef FD_AVX512_EMULATED
#  define FD_AVX512_EMULATED 0
#endif

/* The storage types, as indices of fd_kernels.body. */
enum { FD_F16, FD_BF16, FD_F32, FD_F64, FD_DTYPES };

/* The memory a tile will apply its decisions to, fetched into the cache while they are drawn.
 * Drawing is pure arithmetic and applying is pure memory traffic: done one after the other, the
 * memory bus idles while the core draws, and a large call costs the sum of the two instead of
 * the larger.  `read_lines` cache lines from `read`, then `write_lines` from `write` (fetched for
 * writing), `per_step` of them per step of the drawing loop (see fd_prefetch_plan). */
typedef struct fd_prefetch {
    const char *read;
    const char *write;
    size_t read_lines;
    size_t write_lines;
    size_t per_step;
} fd_prefetch;

#define FD_CACHE_LINE 64

#if defined(__GNUC__)
#  define FD_PREFETCH(address, for_write) __builtin_prefetch((address), (for_write), 3)
#else
#  define FD_PREFETCH(address, for_write) ((void)(address))
#endif

/* Unrolls the loop that follows `count` times.  For the Philox rounds of the AVX2 path: unrolled,
 * each round's results get registers of their own instead of being copied back into the loop's
 * variables, which spill when four groups of blocks fill the register file (decide 3.5 % faster
 * on Zen 3).  The two levels let `count` be a macro. */
#define FD_PRAGMA(text) _Pragma(#text)
#if defined(__GNUC__)
#  define FD_UNROLL(count) FD_PRAGMA(GCC unroll count)
#else
#  define FD_UNROLL(count)
#endif

/* Spreads the lines evenly over a drawing loop of `steps` steps. */
static inline void fd_prefetch_plan(fd_prefetch *ahead, uint64_t steps)
{
    size_t lines = ahead->read_lines + ahead->write_lines;
    ahead->per_step = steps ? (size_t)((lines + steps - 1) / steps) : 0;
}

static inline void fd_prefetch_step(fd_prefetch *ahead)
{
    for (size_t i = 0; i < ahead->per_step; i++) {
        if (ahead->read_lines) {
            FD_PREFETCH(ahead->read, 0);
            ahead->read += FD_CACHE_LINE;
            ahead->read_lines--;
        } else if (ahead->write_lines) {
            FD_PREFETCH(ahead->write, 1);
            ahead->write += FD_CACHE_LINE;
            ahead->write_lines--;
        }
    }
}

/* Writes the packed decisions j0 .. j0 + 8 * nbytes - 1 of the call (bit i % 8 of byte i / 8 for
 * decision j0 + i; block start + j0 / 16 + b gives bytes 2 b and 2 b + 1), for p->keep_all == 0,
 * and fetches `ahead` meanwhile.  j0 is a multiple of 16. */
typedef void (*fd_decide_fn)(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits,
                             fd_prefetch *ahead);

/* The hot loop: out = kept ? op(in) : dropped (see fd_params) for 8 * nbytes contiguous elements
 * whose decisions are the bits of bytes[0 .. nbytes - 1], element i taking bit i % 8 of byte
 * i / 8.  Everything else (strides, shared axes, rows that start or end inside a byte) is done
 * once, in fd_dropout.c, with the scalar element functions below. */
typedef void (*fd_body_fn)(const char *in, char *out, size_t nbytes, const uint8_t *bytes,
                           const fd_params *p);

typedef struct fd_kernels {
    fd_decide_fn decide;
    fd_body_fn body[FD_DTYPES];
} fd_kernels;

extern const fd_kernels fd_kernels_scalar;
#if FD_ENABLE_AVX2
extern const fd_kernels fd_kernels_avx2;
#endif
#if FD_ENABLE_AVX512
extern const fd_kernels fd_kernels_avx512;
#endif

/* ------------------------------------------------------------------------------------------ */
/* Ties.  A decision whose byte h equals T_hi (one in 256) is decided by its refinement draw    */
/* g_d (SPEC §3), a word of another Philox block.  Drawn on the spot, each tie would cost a     */
/* whole scalar block and a mispredicted branch, about as much as the vector work of 256        */
/* decisions; so a decide function first writes every tie as a drop (h < T_hi is false), lists  */
/* the ties, and resolves the list in one vector pass of refinement blocks that patches the     */
/* kept ones.  Measured on the Xeon of fd_kernels_avx512.c, the ties cost under 7 % of the      */
/* decisions' time on the AVX-512 path and about 10 % on the AVX2 path.                         */
/* ------------------------------------------------------------------------------------------ */

/* Most ties listed before a resolve pass; a decide function resolves once fewer than a step of
 * its loop (at most FD_TIES_STEP decisions) fit.  A tile of 4096 decisions holds 16 ties on
 * average, so a pass per tile is the rule and FD_TIES_MAX a bound that random bytes do not
 * reach; the sanitizer builds of the C harness set it to FD_TIES_STEP + 8 so that the passes
 * within a tile run too.  The list has FD_TIES_PAD spare entries, for a vector pass that pads
 * it to a multiple of eight. */
#ifndef FD_TIES_MAX
#  define FD_TIES_MAX 1024
#endif
#define FD_TIES_STEP 512
#define FD_TIES_PAD 8
typedef char fd_ties_max_holds_a_step[FD_TIES_MAX >= FD_TIES_STEP ? 1 : -1];

static inline unsigned fd_lowest_bit(uint64_t mask)
{
#if defined(__GNUC__) || defined(__clang__)
    return (unsigned)__builtin_ctzll(mask);
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_ARM64))
    unsigned long index;
    _BitScanForward64(&index, mask);
    return (unsigned)index;
#else
    unsigned i = 0;
    while (!((mask >> i) & 1u))
        i++;
    return i;
#endif
}

/* Appends the ties of 64 consecutive decisions, i0 + i for each set bit i of `mask`, to the
 * list at[0 .. count - 1] (each entry j - j0 of a decide call) and returns the new count.  The
 * first is written without a branch (whether 64 decisions hold a tie is a coin toss that a
 * branch would mispredict; its entry simply does not count when there is none), the rare others
 * in a loop.  The count travels in a register, not in memory: through memory, each call would
 * wait for the previous one's store. */
static inline uint32_t fd_ties_add(uint32_t *at, uint32_t count, uint64_t mask, uint32_t i0)
{
    at[count] = i0 + fd_lowest_bit(mask | UINT64_C(1) << 63);
    count += mask != 0;
    mask &= mask - 1;
    while (mask) {
        at[count++] = i0 + fd_lowest_bit(mask);
        mask &= mask - 1;
    }
    return count;
}

/* The end of every SIMD path's decision step for eight blocks: `keep` and `tied` hold their 128
 * decisions in order (bit i of the pair for decision i0 + i).  Writes the first `count` bytes of
 * kept bits to out, lists the ties among those decisions, and returns the new tie count. */
static inline uint32_t fd_decisions_store(const uint64_t keep[2], uint64_t tied[2],
                                          uint64_t count, uint8_t *out, uint32_t *ties,
                                          uint32_t tie_count, uint32_t i0)
{
    if (count < 16) {
        tied[0] &= count >= 8 ? ~UINT64_C(0) : (UINT64_C(1) << (8 * count)) - 1;
        tied[1] &= count <= 8 ? 0 : (UINT64_C(1) << (8 * (count - 8))) - 1;
    }
    memcpy(out, keep, (size_t)(count < 16 ? count : 16));
    tie_count = fd_ties_add(ties, tie_count, tied[0], i0);
    return fd_ties_add(ties, tie_count, tied[1], i0 + 64);
}

/* Pads a list of n >= 1 ties to a multiple of eight with copies of its last tie, which patch the
 * same bit again: the vector resolve passes then patch every lane, without a bound check whose
 * exit a branch predictor would miss. */
static inline void fd_ties_pad(uint32_t *ties, uint32_t n)
{
    for (uint32_t k = n; k % 8; k++)
        ties[k] = ties[n - 1];
}

/* The refinement block of decision j0 of a call, as the 128-bit counter (low, high): block
 * d / 4 = 4 start + j0 / 4 of subsequence 2**63 + subsequence.  4 start can pass 2**64; the
 * counter then carries into its high half, as 128-bit arithmetic would.  Decision j0 + i (i a
 * multiple of 4 or not) is word i % 4 of block (low + i / 4, high), carrying likewise. */
static inline void fd_refinement_counter(const fd_params *p, uint64_t j0, uint64_t *low,
                                         uint64_t *high)
{
    uint64_t quadrupled = p->start << 2;
    *low = quadrupled + j0 / 4;
    *high = p->subsequence + (UINT64_C(1) << 63) + (p->start >> 62) + (*low < quadrupled);
}

/* Whether a tie keeps: its refinement draw, the low 24 bits of its refinement word, against
 * T_lo. */
static inline unsigned fd_tie_keeps(const fd_params *p, uint32_t refinement_word)
{
    return (refinement_word & 0xffffffu) < (p->threshold & 0xffffffu);
}

/* Ties decide only when T_lo > 0: with T_lo = 0 a tie drops whatever g is, as written. */
static inline int fd_ties_matter(const fd_params *p)
{
    return (p->threshold & 0xffffffu) != 0;
}

/* Marks tie `i` (j - j0) kept. */
static inline void fd_tie_keep(uint8_t *bits, uint32_t i, unsigned keep)
{
    bits[i >> 3] |= (uint8_t)(keep << (i & 7));
}

#define FD_BIT(bits, i) (((bits)[(i) >> 3] >> ((i) & 7)) & 1u)

/* ------------------------------------------------------------------------------------------ */
/* Storage types.  float16 and bfloat16 are computed in float32 and rounded once, to nearest    */
/* even, when stored (SPEC §2), exactly as NumPy's and ml_dtypes' casts do.                     */
/* ------------------------------------------------------------------------------------------ */

static inline uint32_t fd_float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float fd_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* IEEE binary16 to binary32: exact, NaN payloads kept. */
static inline float fd_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f)
        return fd_bits_float(sign | 0x7f800000u | mantissa << 13);
    if (exponent == 0) {
        /* zero or subnormal: mantissa * 2**-24, exact in float32 */
        float magnitude = (float)mantissa * 0x1p-24f;
        return fd_bits_float(sign | fd_float_bits(magnitude));
    }
    return fd_bits_float(sign | (exponent + 112) << 23 | mantissa << 13);
}

/* binary32 to binary16, rounding to nearest even, overflow to infinity, subnormals exact; a
 * NaN keeps its sign and top payload bits and stays a NaN (NumPy's rule). */
static inline uint16_t fd_float_to_half(float f)
{
    uint32_t u = fd_float_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude >= 0x7f800000u) {
        if (magnitude == 0x7f800000u)
            return sign | 0x7c00u;
        uint16_t payload = (uint16_t)((magnitude & 0x7fffffu) >> 13);
        return sign | 0x7c00u | (payload ? payload : 1u);
    }
    if (magnitude >= 0x477ff000u) /* rounds to 65520 or more: infinity */
        return sign | 0x7c00u;
    if (magnitude < 0x38800000u) {
        /* below the smallest normal half, 2**-14: a multiple of 2**-24 after rounding; adding
         * 0.5 (2**-1) puts the bits of 2**-24 units at the bottom of the mantissa, rounded to
         * nearest even by the float addition itself. */
        float scaled = fd_bits_float(magnitude) + 0.5f;
        return sign | (uint16_t)(fd_float_bits(scaled) - fd_float_bits(0.5f));
    }
    uint32_t odd = (magnitude >> 13) & 1u;
    uint32_t rounded = magnitude + 0xfffu + odd; /* round to nearest even at bit 13 */
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

static inline float fd_bfloat_to_float(uint16_t b)
{
    return fd_bits_float((uint32_t)b << 16);
}

/* binary32 to bfloat16, rounding to nearest even; a NaN becomes the quiet NaN 0x7fc0 with its
 * sign (ml_dtypes' rule). */
static inline uint16_t fd_float_to_bfloat(float f)
{
    uint32_t u = fd_float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) & 0x8000u) | 0x7fc0u;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ------------------------------------------------------------------------------------------ */
/* One element: out = bit ? op(in) : dropped, op(x) = x * scale (+ shift when affine).          */
/* The select works on the bits, not with a multiply, so a dropped NaN or Inf does not survive  */
/* (SPEC §2); and not with a branch, which random decisions would mispredict every few elements.*/
/* ------------------------------------------------------------------------------------------ */

/* The operation's constants in a compute type. */
#define FD_DEFINE_OP(ctype)                                                                    \
    typedef struct fd_op_##ctype {                                                             \
        ctype scale, shift, dropped;                                                           \
        int affine;                                                                            \
    } fd_op_##ctype;                                                                           \
    static inline fd_op_##ctype fd_op_##ctype##_of(const fd_params *p)                         \
    {                                                                                          \
        fd_op_##ctype op = {(ctype)p->scale, (ctype)p->shift, (ctype)p->dropped, p->affine};   \
        return op;                                                                             \
    }
FD_DEFINE_OP(float)
FD_DEFINE_OP(double)

#define FD_DEFINE_ELEMENT(suffix, storage, ctype, utype, load, store)                          \
    static inline void fd_element_##suffix(const char *in, char *out, const fd_op_##ctype *op, \
                                           unsigned bit)                                       \
    {                                                                                          \
        storage raw;                                                                           \
        memcpy(&raw, in, sizeof raw);                                                          \
        ctype value = load(raw) * op->scale;                                                   \
        if (op->affine)                                                                        \
            value = value + op->shift;                                                         \
        utype kept, dropped, keep = (utype)0 - (utype)bit;                                     \
        memcpy(&kept, &value, sizeof kept);                                                    \
        memcpy(&dropped, &op->dropped, sizeof dropped);                                        \
        ctype result;                                                                          \
        utype chosen = (kept & keep) | (dropped & ~keep);                                      \
        memcpy(&result, &chosen, sizeof result);                                               \
        raw = store(result);                                                                   \
        memcpy(out, &raw, sizeof raw);                                                         \
    }

#define FD_IDENTITY(x) (x)
FD_DEFINE_ELEMENT(f16, uint16_t, float, uint32_t, fd_half_to_float, fd_float_to_half)
FD_DEFINE_ELEMENT(bf16, uint16_t, float, uint32_t, fd_bfloat_to_float, fd_float_to_bfloat)
FD_DEFINE_ELEMENT(f32, float, float, uint32_t, FD_IDENTITY, FD_IDENTITY)
FD_DEFINE_ELEMENT(f64, double, double, uint64_t, FD_IDENTITY, FD_IDENTITY)

/* Calls fn(ctx, t) for t in [0, tiles) on up to `threads` threads (OpenMP builds; the calling
 * thread alone otherwise), taken in chunks as threads come free, each thread in the caller's
 * floating-point environment, and safely in a child made by fork() (see fd_thread_limit).
 * Defined in fd_dropout.c; fd_memory.c splits its passes with it too. */
typedef void (*fd_tile_fn)(const void *ctx, int64_t t);
void fd_tiles_run(int64_t tiles, int threads, fd_tile_fn fn, const void *ctx);

/* The threads for fd_tiles_run: `requested` within fd_thread_limit(), one for work too `small`
 * to be worth a team of threads, and no more than there are tiles.  Defined in fd_dropout.c. */
int fd_tiles_threads(int requested, int small, uint64_t tiles);

#endif /* FD_KERNELS_H */
