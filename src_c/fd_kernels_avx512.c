/*
 * The AVX-512 path (F and BW): sixteen Philox blocks at once, and 16 floats (float16 and
 * bfloat16 converted to float32) or 8 doubles per vector, with the decisions loaded straight
 * into mask registers, so a dropped element is a masked blend.  Run only where CPUID reports
 * AVX512F and AVX512BW, or in a test build that emulates the intrinsics (FD_AVX512_EMULATED).
 */
#include "fd_kernels.h"

#if FD_ENABLE_AVX512

#if FD_AVX512_EMULATED
#  include "tests/emulated_avx512.h"
#  define FD_AVX512
#else
#  include <immintrin.h>
#  define FD_AVX512 FD_TARGET("avx512f,avx512bw")
#endif

#include "fd_philox.h"

/* As mulhilo8 in the AVX2 path: the hardware multiplies even lanes only. */
FD_AVX512 static inline void mulhilo16(__m512i m, __m512i c, __m512i *hi, __m512i *lo)
{
    __m512i even = _mm512_mul_epu32(c, m);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(c, 32), m);
    *lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

typedef struct philox16_keys {
    __m512i k0[FD_PHILOX_ROUNDS], k1[FD_PHILOX_ROUNDS];
} philox16_keys;

FD_AVX512 static void philox16_keys_init(philox16_keys *keys, uint64_t seed)
{
    fd_philox_key key = fd_philox_key_from_seed(seed);
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        keys->k0[r] = _mm512_set1_epi32((int)(key.w[0] + (uint32_t)r * FD_PHILOX_W0));
        keys->k1[r] = _mm512_set1_epi32((int)(key.w[1] + (uint32_t)r * FD_PHILOX_W1));
    }
}

/* Blocks first .. first + 15 of a subsequence: x[w] holds word w of block first + lane. */
FD_AVX512 static inline void philox16(const philox16_keys *keys, uint64_t first,
                                      uint64_t subsequence, __m512i x[4])
{
    __m512i low = _mm512_set1_epi32((int)(uint32_t)first);
    __m512i c0 = _mm512_add_epi32(
        low, _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __mmask16 carry = _mm512_cmplt_epu32_mask(c0, low);
    __m512i high = _mm512_set1_epi32((int)(uint32_t)(first >> 32));
    __m512i c1 = _mm512_mask_add_epi32(high, carry, high, _mm512_set1_epi32(1));
    __m512i c2 = _mm512_set1_epi32((int)(uint32_t)subsequence);
    __m512i c3 = _mm512_set1_epi32((int)(uint32_t)(subsequence >> 32));
    const __m512i m0 = _mm512_set1_epi32((int)FD_PHILOX_M0);
    const __m512i m1 = _mm512_set1_epi32((int)FD_PHILOX_M1);
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        __m512i hi0, lo0, hi1, lo1;
        mulhilo16(m0, c0, &hi0, &lo0);
        mulhilo16(m1, c2, &hi1, &lo1);
        c0 = _mm512_ternarylogic_epi32(hi1, c1, keys->k0[r], 0x96); /* three-way xor */
        c1 = lo1;
        c2 = _mm512_ternarylogic_epi32(hi0, c3, keys->k1[r], 0x96);
        c3 = lo0;
    }
    x[0] = c0;
    x[1] = c1;
    x[2] = c2;
    x[3] = c3;
}

FD_AVX512 static void decide_avx512(const fd_params *p, uint64_t j0, uint64_t nbytes,
                                    uint8_t *bits, fd_prefetch *ahead)
{
    philox16_keys keys;
    philox16_keys_init(&keys, p->seed);
    fd_prefetch_plan(ahead, (nbytes + 15) / 16);
    const __m512i t_hi = _mm512_set1_epi16((short)(p->threshold >> 16));
    /* Byte i of mask k is block 4 i + k (see below); this gathers the bytes in block order. */
    const __m128i block_order = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    uint64_t first = p->start + j0 / 8;
    for (uint64_t b = 0; b < nbytes; b += 16) {
        fd_prefetch_step(ahead);
        __m512i x[4];
        philox16(&keys, first + b, p->subsequence, x);
        /* Transpose within 128-bit lanes so that the 16-bit lanes are halves in decision
         * order: v[k] holds blocks k, k + 4, k + 8, k + 12, one per 128-bit lane. */
        __m512i t0 = _mm512_unpacklo_epi32(x[0], x[1]);
        __m512i t1 = _mm512_unpacklo_epi32(x[2], x[3]);
        __m512i t2 = _mm512_unpackhi_epi32(x[0], x[1]);
        __m512i t3 = _mm512_unpackhi_epi32(x[2], x[3]);
        __m512i v[4] = {_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1),
                        _mm512_unpacklo_epi64(t2, t3), _mm512_unpackhi_epi64(t2, t3)};
        uint32_t keep[4];
        __mmask32 ties = 0;
        for (int k = 0; k < 4; k++) {
            keep[k] = (uint32_t)_mm512_cmplt_epu16_mask(v[k], t_hi);
            ties |= _mm512_cmpeq_epu16_mask(v[k], t_hi);
        }
        __m128i masks = _mm_setr_epi32((int)keep[0], (int)keep[1], (int)keep[2], (int)keep[3]);
        uint8_t bytes[16];
        _mm_storeu_si128((__m128i *)bytes, _mm_shuffle_epi8(masks, block_order));
        uint64_t count = nbytes - b < 16 ? nbytes - b : 16;
        if (ties) {
            uint32_t words[4][16];
            for (int w = 0; w < 4; w++)
                _mm512_storeu_si512(words[w], x[w]);
            for (uint64_t lane = 0; lane < count; lane++) {
                uint32_t block[4] = {words[0][lane], words[1][lane], words[2][lane],
                                     words[3][lane]};
                bytes[lane] = fd_block_decide(p, j0 + 8 * (b + lane), block);
            }
        }
        memcpy(bits + b, bytes, (size_t)count);
    }
}

/* Sixteen elements to and from float32 lanes, for each storage type computed in float32. */
FD_AVX512 static inline __m512 load16_f32(const char *in)
{
    return _mm512_loadu_ps((const float *)in);
}

FD_AVX512 static inline void store16_f32(char *out, __m512 v)
{
    _mm512_storeu_ps((float *)out, v);
}

FD_AVX512 static inline __m512 load16_f16(const char *in)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)in));
}

FD_AVX512 static inline void store16_f16(char *out, __m512 v)
{
    _mm256_storeu_si256((__m256i *)out,
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

FD_AVX512 static inline __m512 load16_bf16(const char *in)
{
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)in));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* As fd_float_to_bfloat, sixteen at a time. */
FD_AVX512 static inline void store16_bf16(char *out, __m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
    __m512i sign = _mm512_srli_epi32(_mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u)), 16);
    __m512i nan = _mm512_or_si512(sign, _mm512_set1_epi32(0x7fc0));
    __mmask16 is_nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    __m512i halves = _mm512_mask_blend_epi32(is_nan, rounded, nan);
    _mm256_storeu_si256((__m256i *)out, _mm512_cvtepi32_epi16(halves));
}

/* Sixteen elements per pair of decision bytes, the bytes forming the mask register directly;
 * an odd last byte goes through the scalar element function. */
#define FD_AVX512_BODY(suffix, storage)                                                        \
    FD_AVX512 static void body_##suffix##_avx512(const char *in, char *out, size_t nbytes,     \
                                                 const uint8_t *bytes, const fd_params *p)     \
    {                                                                                          \
        const __m512 scale = _mm512_set1_ps((float)p->scale);                                  \
        const __m512 shift = _mm512_set1_ps((float)p->shift);                                  \
        const __m512 dropped = _mm512_set1_ps((float)p->dropped);                              \
        const int affine = p->affine; /* read once: out may alias p (see the AVX2 bodies) */    \
        const size_t step = 16 * sizeof(storage);                                              \
        size_t b = 0;                                                                          \
        for (; b + 2 <= nbytes; b += 2, in += step, out += step) {                             \
            __mmask16 keep = (__mmask16)(bytes[b] | bytes[b + 1] << 8);                        \
            __m512 v = _mm512_mul_ps(load16_##suffix(in), scale);                              \
            if (affine)                                                                        \
                v = _mm512_add_ps(v, shift);                                                   \
            store16_##suffix(out, _mm512_mask_blend_ps(keep, dropped, v));                     \
        }                                                                                      \
        if (b < nbytes) {                                                                      \
            const fd_op_float op = fd_op_float_of(p);                                          \
            for (unsigned i = 0; i < 8; i++)                                                   \
                fd_element_##suffix(in + i * sizeof(storage), out + i * sizeof(storage), &op,  \
                                    (bytes[b] >> i) & 1u);                                     \
        }                                                                                      \
    }

FD_AVX512_BODY(f16, uint16_t)
FD_AVX512_BODY(bf16, uint16_t)
FD_AVX512_BODY(f32, float)

FD_AVX512 static void body_f64_avx512(const char *in, char *out, size_t nbytes,
                                     const uint8_t *bytes, const fd_params *p)
{
    const __m512d scale = _mm512_set1_pd(p->scale);
    const __m512d shift = _mm512_set1_pd(p->shift);
    const __m512d dropped = _mm512_set1_pd(p->dropped);
    const int affine = p->affine;
    for (size_t b = 0; b < nbytes; b++, in += 64, out += 64) {
        __m512d v = _mm512_mul_pd(_mm512_loadu_pd((const double *)in), scale);
        if (affine)
            v = _mm512_add_pd(v, shift);
        _mm512_storeu_pd((double *)out, _mm512_mask_blend_pd((__mmask8)bytes[b], dropped, v));
    }
}

const fd_kernels fd_kernels_avx512 = {
    decide_avx512, {body_f16_avx512, body_bf16_avx512, body_f32_avx512, body_f64_avx512}};

#endif /* FD_ENABLE_AVX512 */
