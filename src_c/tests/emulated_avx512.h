/*
 * A portable C model of the AVX-512 intrinsics that fd_kernels_avx512.c uses, lane by lane as the
 * Intel Intrinsics Guide defines them.  For test builds only: with -DFD_AVX512_EMULATED=1 the
 * AVX-512 path is compiled against this header instead of <immintrin.h> and counts as supported
 * on any CPU, so that src_c/tests/test_kernels.c can compare it byte for byte with the scalar
 * path on machines without AVX-512 (tests/test_sanitizers.py builds it so, with and without the
 * sanitizers).  It checks what the hardware cannot check here: lane orders, masks, shuffles,
 * tails and the reads and writes of every vector (each load and store is a memcpy of the whole
 * vector, so AddressSanitizer sees one that strays past an array).
 *
 * Why a model is trustworthy enough: every function below is a few lines of lane arithmetic
 * written from the instruction's definition, independently of the kernel that calls it; the
 * float32/float64 arithmetic is the C operator, which is the same IEEE operation the instruction
 * performs.  The float16 conversions use fd_kernels.h's scalar rules, which round as VCVTPS2PH
 * does with round-to-nearest-even (the AVX2 path checks that on real F16C hardware); they differ
 * only in the payload of a signalling NaN, which never reaches a conversion because every value
 * is multiplied first.
 *
 * Little-endian lane numbering through unions, as on x86-64, the only target of this path.  The
 * names are those of <immintrin.h>, which this header replaces in its translation unit.
 */
#ifndef FD_EMULATED_AVX512_H
#define FD_EMULATED_AVX512_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fd_kernels.h"

typedef union fd_emu_512 {
    uint8_t u8[64];
    uint16_t u16[32];
    uint32_t u32[16];
    uint64_t u64[8];
    float f32[16];
    double f64[8];
} fd_emu_512;

typedef union fd_emu_256 {
    uint8_t u8[32];
    uint16_t u16[16];
    uint32_t u32[8];
} fd_emu_256;

typedef fd_emu_512 __m512i;
typedef fd_emu_512 __m512;
typedef fd_emu_512 __m512d;
typedef fd_emu_256 __m256i;
typedef uint8_t __mmask8;
typedef uint16_t __mmask16;
typedef uint32_t __mmask32;
typedef uint64_t __mmask64;

#define _MM_FROUND_TO_NEAREST_INT 0x00
#define _MM_FROUND_NO_EXC 0x08
#define _CMP_UNORD_Q 0x03

/* A use this model does not cover stops the test rather than computing something else. */
static inline void fd_emu_unsupported(int supported)
{
    if (!supported)
        abort();
}

/* --- set ------------------------------------------------------------------------------------ */

static inline __m512i _mm512_set1_epi32(int a)
{
    __m512i r;
    for (int i = 0; i < 16; i++)
        r.u32[i] = (uint32_t)a;
    return r;
}

static inline __m512i _mm512_set1_epi64(long long a)
{
    __m512i r;
    for (int i = 0; i < 8; i++)
        r.u64[i] = (uint64_t)a;
    return r;
}

/* Elements in reverse order, e7 first, as <immintrin.h> has them. */
static inline __m512i _mm512_set_epi64(long long e7, long long e6, long long e5, long long e4,
                                       long long e3, long long e2, long long e1, long long e0)
{
    const long long e[8] = {e0, e1, e2, e3, e4, e5, e6, e7};
    __m512i r;
    for (int i = 0; i < 8; i++)
        r.u64[i] = (uint64_t)e[i];
    return r;
}

static inline __m512i _mm512_set1_epi8(char a)
{
    __m512i r;
    for (int i = 0; i < 64; i++)
        r.u8[i] = (uint8_t)a;
    return r;
}

static inline __m512 _mm512_set1_ps(float a)
{
    __m512 r;
    for (int i = 0; i < 16; i++)
        r.f32[i] = a;
    return r;
}

static inline __m512d _mm512_set1_pd(double a)
{
    __m512d r;
    for (int i = 0; i < 8; i++)
        r.f64[i] = a;
    return r;
}

/* --- integer arithmetic, shifts and logic ---------------------------------------------------- */

static inline __m512i _mm512_add_epi32(__m512i a, __m512i b)
{
    for (int i = 0; i < 16; i++)
        a.u32[i] += b.u32[i];
    return a;
}

static inline __m512i _mm512_add_epi64(__m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] += b.u64[i];
    return a;
}

/* Lane i: a + b where mask bit i is set, src elsewhere. */
static inline __m512i _mm512_mask_add_epi64(__m512i src, __mmask8 k, __m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1u)
            src.u64[i] = a.u64[i] + b.u64[i];
    return src;
}

/* The low 32 bits of each 64-bit lane, multiplied into the full 64-bit product. */
static inline __m512i _mm512_mul_epu32(__m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] = (a.u64[i] & 0xffffffffu) * (b.u64[i] & 0xffffffffu);
    return a;
}

/* Logical shifts by an immediate; a count of the lane width or more gives zero. */
static inline __m512i _mm512_srli_epi64(__m512i a, unsigned count)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] = count > 63 ? 0 : a.u64[i] >> count;
    return a;
}

static inline __m512i _mm512_slli_epi64(__m512i a, unsigned count)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] = count > 63 ? 0 : a.u64[i] << count;
    return a;
}

/* Logical shift of each 64-bit lane by the count in the same lane of `count`. */
static inline __m512i _mm512_srlv_epi64(__m512i a, __m512i count)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] = count.u64[i] > 63 ? 0 : a.u64[i] >> count.u64[i];
    return a;
}

/* Rotation right of each 64-bit lane, the count taken modulo 64. */
static inline __m512i _mm512_ror_epi64(__m512i a, unsigned count)
{
    count &= 63u;
    for (int i = 0; i < 8; i++)
        a.u64[i] = count ? a.u64[i] >> count | a.u64[i] << (64 - count) : a.u64[i];
    return a;
}

static inline __m512i _mm512_srli_epi32(__m512i a, unsigned count)
{
    for (int i = 0; i < 16; i++)
        a.u32[i] = count > 31 ? 0 : a.u32[i] >> count;
    return a;
}

static inline __m512i _mm512_slli_epi32(__m512i a, unsigned count)
{
    for (int i = 0; i < 16; i++)
        a.u32[i] = count > 31 ? 0 : a.u32[i] << count;
    return a;
}

/* Bit by bit, the result is bit (a << 2 | b << 1 | c) of the truth table `table`, in the 32-bit
 * lanes whose mask bit is set; the other lanes keep a. */
static inline __m512i _mm512_mask_ternarylogic_epi32(__m512i a, __mmask16 k, __m512i b,
                                                     __m512i c, int table)
{
    __m512i r = a;
    for (int i = 0; i < 16; i++) {
        if (!((k >> i) & 1u))
            continue;
        uint32_t out = 0;
        for (int bit = 0; bit < 32; bit++) {
            unsigned index = ((a.u32[i] >> bit) & 1u) << 2 | ((b.u32[i] >> bit) & 1u) << 1 |
                             ((c.u32[i] >> bit) & 1u);
            out |= (uint32_t)(((unsigned)table >> index) & 1u) << bit;
        }
        r.u32[i] = out;
    }
    return r;
}

static inline __m512i _mm512_and_si512(__m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        a.u64[i] &= b.u64[i];
    return a;
}

/* --- compares into masks and masked blends -------------------------------------------------- */

static inline __mmask8 _mm512_cmplt_epu64_mask(__m512i a, __m512i b)
{
    __mmask8 k = 0;
    for (int i = 0; i < 8; i++)
        k |= (__mmask8)((a.u64[i] < b.u64[i]) << i);
    return k;
}

static inline __mmask64 _mm512_cmplt_epu8_mask(__m512i a, __m512i b)
{
    __mmask64 k = 0;
    for (int i = 0; i < 64; i++)
        k |= (__mmask64)(a.u8[i] < b.u8[i]) << i;
    return k;
}

static inline __mmask64 _mm512_cmpeq_epu8_mask(__m512i a, __m512i b)
{
    __mmask64 k = 0;
    for (int i = 0; i < 64; i++)
        k |= (__mmask64)(a.u8[i] == b.u8[i]) << i;
    return k;
}

/* Bit i: whether a & b is non-zero in 64-bit lane i. */
static inline __mmask8 _mm512_test_epi64_mask(__m512i a, __m512i b)
{
    __mmask8 k = 0;
    for (int i = 0; i < 8; i++)
        k |= (__mmask8)(((a.u64[i] & b.u64[i]) != 0) << i);
    return k;
}

/* Only the predicate the kernels use: unordered, i.e. either lane is a NaN. */
static inline __mmask16 _mm512_cmp_ps_mask(__m512 a, __m512 b, int predicate)
{
    fd_emu_unsupported(predicate == _CMP_UNORD_Q);
    __mmask16 k = 0;
    for (int i = 0; i < 16; i++)
        k |= (__mmask16)((a.f32[i] != a.f32[i] || b.f32[i] != b.f32[i]) << i);
    return k;
}

/* Lane i: b where mask bit i is set, a elsewhere. */
static inline __m512i _mm512_mask_blend_epi64(__mmask8 k, __m512i a, __m512i b)
{
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1u)
            a.u64[i] = b.u64[i];
    return a;
}

/* --- permutes --------------------------------------------------------------------------------- */

/* 64-bit lane i: lane idx & 7 of a, or of b where bit 3 of idx is set (idx = lane i of idx). */
/* 16-bit lane i: lane idx & 31 of a, zero where mask bit i is clear (zero masking). */
static inline __m512i _mm512_maskz_permutexvar_epi16(__mmask32 k, __m512i idx, __m512i a)
{
    __m512i r;
    for (int i = 0; i < 32; i++)
        r.u16[i] = ((k >> i) & 1u) ? a.u16[idx.u16[i] & 31u] : 0;
    return r;
}

/* 16-bit lane i: lane idx & 31 of a, or of b where bit 5 of idx is set. */
static inline __m512i _mm512_permutex2var_epi16(__m512i a, __m512i idx, __m512i b)
{
    __m512i r;
    for (int i = 0; i < 32; i++)
        r.u16[i] = (idx.u16[i] & 32u) ? b.u16[idx.u16[i] & 31u] : a.u16[idx.u16[i] & 31u];
    return r;
}

static inline __m512i _mm512_permutex2var_epi64(__m512i a, __m512i idx, __m512i b)
{
    __m512i r;
    for (int i = 0; i < 8; i++)
        r.u64[i] = (idx.u64[i] & 8u) ? b.u64[idx.u64[i] & 7u] : a.u64[idx.u64[i] & 7u];
    return r;
}

/* --- floating point ------------------------------------------------------------------------- */

static inline __m512 _mm512_mul_ps(__m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        a.f32[i] = a.f32[i] * b.f32[i];
    return a;
}

/* Lane i: a op b where mask bit i is set, src elsewhere (merge masking). */
static inline __m512 _mm512_mask_mul_ps(__m512 src, __mmask16 k, __m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1u)
            src.f32[i] = a.f32[i] * b.f32[i];
    return src;
}

static inline __m512 _mm512_mask_add_ps(__m512 src, __mmask16 k, __m512 a, __m512 b)
{
    for (int i = 0; i < 16; i++)
        if ((k >> i) & 1u)
            src.f32[i] = a.f32[i] + b.f32[i];
    return src;
}

static inline __m512d _mm512_mul_pd(__m512d a, __m512d b)
{
    for (int i = 0; i < 8; i++)
        a.f64[i] = a.f64[i] * b.f64[i];
    return a;
}

static inline __m512d _mm512_mask_mul_pd(__m512d src, __mmask8 k, __m512d a, __m512d b)
{
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1u)
            src.f64[i] = a.f64[i] * b.f64[i];
    return src;
}

static inline __m512d _mm512_mask_add_pd(__m512d src, __mmask8 k, __m512d a, __m512d b)
{
    for (int i = 0; i < 8; i++)
        if ((k >> i) & 1u)
            src.f64[i] = a.f64[i] + b.f64[i];
    return src;
}

/* --- conversions and casts ------------------------------------------------------------------ */

static inline __m512 _mm512_castsi512_ps(__m512i a)
{
    return a;
}

static inline __m512i _mm512_castps_si512(__m512 a)
{
    return a;
}

static inline __m512 _mm512_cvtph_ps(__m256i a)
{
    __m512 r;
    for (int i = 0; i < 16; i++)
        r.f32[i] = fd_half_to_float(a.u16[i]);
    return r;
}

/* Only the rounding the kernels use: to nearest even, exceptions suppressed. */
static inline __m256i _mm512_cvtps_ph(__m512 a, int rounding)
{
    fd_emu_unsupported(rounding == (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i r;
    for (int i = 0; i < 16; i++)
        r.u16[i] = fd_float_to_half(a.f32[i]);
    return r;
}

static inline __m512i _mm512_cvtepu16_epi32(__m256i a)
{
    __m512i r;
    for (int i = 0; i < 16; i++)
        r.u32[i] = a.u16[i];
    return r;
}

static inline __m512i _mm512_cvtepu32_epi64(__m256i a)
{
    __m512i r;
    for (int i = 0; i < 8; i++)
        r.u64[i] = a.u32[i];
    return r;
}

/* Truncation (VPMOVDW), not saturation: the low 16 bits of each 32-bit lane. */
static inline __m256i _mm512_cvtepi32_epi16(__m512i a)
{
    __m256i r;
    for (int i = 0; i < 16; i++)
        r.u16[i] = (uint16_t)a.u32[i];
    return r;
}

/* --- unaligned loads and stores: one memcpy of the whole vector ----------------------------- */

static inline __m512 _mm512_loadu_ps(const float *p)
{
    __m512 r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline __m512i _mm512_loadu_si512(const void *p)
{
    __m512i r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline __m512d _mm512_loadu_pd(const double *p)
{
    __m512d r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline void _mm512_storeu_ps(float *p, __m512 a)
{
    memcpy(p, &a, sizeof a);
}

static inline void _mm512_storeu_pd(double *p, __m512d a)
{
    memcpy(p, &a, sizeof a);
}

static inline void _mm512_storeu_si512(void *p, __m512i a)
{
    memcpy(p, &a, sizeof a);
}

static inline __m256i _mm256_loadu_si256(const __m256i *p)
{
    __m256i r;
    memcpy(&r, p, sizeof r);
    return r;
}

static inline void _mm256_storeu_si256(__m256i *p, __m256i a)
{
    memcpy(p, &a, sizeof a);
}

#endif /* FD_EMULATED_AVX512_H */
