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

/* Writes the packed decisions of blocks j0 / 8 .. j0 / 8 + nbytes - 1 of the call (one byte per
 * block, bit h for half h), for p->keep_all == 0, and fetches `ahead` meanwhile.  j0 is a
 * multiple of 8. */
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

/* The exact decisions of block j_block / 8 of the call from its four Philox words, refinement
 * draws included.  The one statement of the decision rule in C: the SIMD paths compare all
 * halves at once and call this only for the rare blocks where some half equals T_hi. */
uint8_t fd_block_decide(const fd_params *p, uint64_t j_block, const uint32_t words[4]);

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

#endif /* FD_KERNELS_H */
