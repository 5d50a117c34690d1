/*
 * The AVX2 path: eight Philox blocks at once, one per 32-bit lane, and 8 floats (float16 and
 * bfloat16 converted to float32, float16 with F16C) or 4 doubles per vector.  Compiled for any
 * x86-64 through per-function target attributes and run only where CPUID reports AVX2 and F16C
 * (fd_dropout.c chooses).
 */
#include "fd_kernels.h"

#if FD_ENABLE_AVX2

#include <immintrin.h>

#include "fd_philox.h"

#define FD_AVX2 FD_TARGET("avx2,f16c")

/* The 32x32->64 products of eight lanes by m, split into high and low words.  AVX2's widening
 * multiply takes the even lanes only, so the odd lanes are shifted down and multiplied
 * separately for the high words; the low words come from one 32-bit multiply, which measured
 * faster here than reassembling them from the wide products. */
FD_AVX2 static inline void mulhilo8(__m256i m, __m256i c, __m256i *hi, __m256i *lo)
{
    __m256i even = _mm256_mul_epu32(c, m);
    __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), m);
    *lo = _mm256_mullo_epi32(c, m);
    *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

typedef struct philox8_keys {
    __m256i k0[FD_PHILOX_ROUNDS], k1[FD_PHILOX_ROUNDS];
} philox8_keys;

/* Every lane shares the key, so the round keys are computed once per call, not per block. */
FD_AVX2 static void philox8_keys_init(philox8_keys *keys, uint64_t seed)
{
    fd_philox_key key = fd_philox_key_from_seed(seed);
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        keys->k0[r] = _mm256_set1_epi32((int)(key.w[0] + (uint32_t)r * FD_PHILOX_W0));
        keys->k1[r] = _mm256_set1_epi32((int)(key.w[1] + (uint32_t)r * FD_PHILOX_W1));
    }
}

/* Counter words of blocks first .. first + 7 of a subsequence, block first + lane in each lane. */
FD_AVX2 static inline void counters8(uint64_t first, uint64_t subsequence, __m256i c[4])
{
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    __m256i low = _mm256_set1_epi32((int)(uint32_t)first);
    c[0] = _mm256_add_epi32(low, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    /* A lane whose low word wrapped carries into word 1: -1 where c0 < low (unsigned). */
    __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(low, sign), _mm256_xor_si256(c[0], sign));
    c[1] = _mm256_sub_epi32(_mm256_set1_epi32((int)(uint32_t)(first >> 32)), carry);
    c[2] = _mm256_set1_epi32((int)(uint32_t)subsequence);
    c[3] = _mm256_set1_epi32((int)(uint32_t)(subsequence >> 32));
}

/* Blocks first .. first + 8 * groups - 1: x[g][w] holds word w of block first + 8 g + lane.  The
 * groups are independent and interleaved round by round: a round is a chain of multiply, shuffle
 * and xor latencies, and the other groups' chains keep the execution units busy meanwhile.  Four
 * groups measured 10 % faster than two on Zen 3 (five and six, no better: registers run out).
 * Always inlined, so that each call's constant `groups` unrolls the loops. */
#define FD_PHILOX_GROUPS 4

FD_AVX2 static inline FD_ALWAYS_INLINE void philox8_groups(
    const philox8_keys *keys, uint64_t first, uint64_t subsequence, int groups,
    __m256i x[][4])
{
    const __m256i m0 = _mm256_set1_epi32((int)FD_PHILOX_M0);
    const __m256i m1 = _mm256_set1_epi32((int)FD_PHILOX_M1);
    for (int g = 0; g < groups; g++)
        counters8(first + 8 * (uint64_t)g, subsequence, x[g]);
    FD_UNROLL(FD_PHILOX_ROUNDS)
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        for (int g = 0; g < groups; g++) {
            __m256i hi0, lo0, hi1, lo1;
            mulhilo8(m0, x[g][0], &hi0, &lo0);
            mulhilo8(m1, x[g][2], &hi1, &lo1);
            x[g][0] = _mm256_xor_si256(_mm256_xor_si256(hi1, x[g][1]), keys->k0[r]);
            x[g][1] = lo1;
            x[g][2] = _mm256_xor_si256(_mm256_xor_si256(hi0, x[g][3]), keys->k1[r]);
            x[g][3] = lo0;
        }
    }
}

/* Packs the decisions of eight blocks (words x[0..3], block = lane) into bytes[0..7], exactly:
 * all halves are compared at once, and a block with a half equal to T_hi goes through
 * fd_block_decide for its refinement draw.  count <= 8 bytes are needed. */
FD_AVX2 static inline void decide8(const fd_params *p, uint64_t j_first, const __m256i x[4],
                                   uint64_t count, uint8_t *bytes)
{
    uint32_t t_hi = p->threshold >> 16;
    /* Unsigned 16-bit h < t_hi as a signed compare after flipping both sign bits. */
    const __m256i sign = _mm256_set1_epi16((short)0x8000);
    const __m256i t_hi_signed = _mm256_set1_epi16((short)(t_hi ^ 0x8000u));
    const __m256i t_hi_vec = _mm256_set1_epi16((short)t_hi);
    /* Compared in place, x[w] holds halves 2w and 2w + 1 of block `lane` in 16-bit lanes.  Two
     * signed packs and two rounds of unpacking then gather each block's eight byte masks in half
     * order, fewer shuffles than transposing the words first (the shuffle pipes also do the
     * Philox shifts).  Per 128-bit lane (blocks 0-3, then 4-7): `even` holds halves 0-1 of each
     * block, then 4-5; `odd` holds halves 2-3, then 6-7. */
    __m256i keep[4], ties = _mm256_setzero_si256();
    for (int w = 0; w < 4; w++) {
        keep[w] = _mm256_cmpgt_epi16(t_hi_signed, _mm256_xor_si256(x[w], sign));
        ties = _mm256_or_si256(ties, _mm256_cmpeq_epi16(x[w], t_hi_vec));
    }
    __m256i even = _mm256_packs_epi16(keep[0], keep[2]);
    __m256i odd = _mm256_packs_epi16(keep[1], keep[3]);
    __m256i low_halves = _mm256_unpacklo_epi16(even, odd);  /* halves 0-3 of blocks 0-3 */
    __m256i high_halves = _mm256_unpackhi_epi16(even, odd); /* halves 4-7 of blocks 0-3 */
    /* One byte per block, as blocks (0, 1, 4, 5) and (2, 3, 6, 7). */
    uint32_t m01 = (uint32_t)_mm256_movemask_epi8(_mm256_unpacklo_epi32(low_halves, high_halves));
    uint32_t m23 = (uint32_t)_mm256_movemask_epi8(_mm256_unpackhi_epi32(low_halves, high_halves));
    uint64_t packed = (uint64_t)(m01 & 0xffffu) | (uint64_t)(m23 & 0xffffu) << 16 |
                      (uint64_t)(m01 >> 16) << 32 | (uint64_t)(m23 >> 16) << 48;
    uint8_t all[8];
    memcpy(all, &packed, sizeof all);
    if (!_mm256_testz_si256(ties, ties)) {
        uint32_t words[4][8];
        for (int w = 0; w < 4; w++)
            _mm256_storeu_si256((__m256i *)words[w], x[w]);
        for (uint64_t lane = 0; lane < count; lane++) {
            uint32_t block[4] = {words[0][lane], words[1][lane], words[2][lane], words[3][lane]};
            all[lane] = fd_block_decide(p, j_first + 8 * lane, block);
        }
    }
    memcpy(bytes, all, (size_t)count);
}

/* Whole steps of FD_PHILOX_GROUPS groups (8 bytes of decisions each), then the last bytes one
 * group at a time, so that a short tile (channel dropout, the end of an array) draws no block it
 * does not use. */
FD_AVX2 static void decide_avx2(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits,
                                fd_prefetch *ahead)
{
    philox8_keys keys;
    philox8_keys_init(&keys, p->seed);
    uint64_t first = p->start + j0 / 8;
    const uint64_t step = 8 * FD_PHILOX_GROUPS;
    fd_prefetch_plan(ahead, nbytes / step + (nbytes % step + 7) / 8);
    uint64_t b = 0;
    for (; b + step <= nbytes; b += step) {
        fd_prefetch_step(ahead);
        __m256i x[FD_PHILOX_GROUPS][4];
        philox8_groups(&keys, first + b, p->subsequence, FD_PHILOX_GROUPS, x);
        for (uint64_t g = 0; g < FD_PHILOX_GROUPS; g++)
            decide8(p, j0 + 8 * (b + 8 * g), x[g], 8, bits + b + 8 * g);
    }
    for (; b < nbytes; b += 8) {
        fd_prefetch_step(ahead);
        __m256i x[1][4];
        philox8_groups(&keys, first + b, p->subsequence, 1, x);
        decide8(p, j0 + 8 * b, x[0], nbytes - b < 8 ? nbytes - b : 8, bits + b);
    }
}

/* The keep masks of the bodies come from the decision bits by one variable shift each: a word of
 * packed decisions is broadcast to every lane, and lane i shifts its bit into the sign bit, the
 * only bit blendv reads.  Stepping to the next lanes' bits is one more shift of the broadcast
 * word.  Four bytes (32 floats) or eight (32 doubles) per broadcast. */
FD_AVX2 static inline __m256 keep_signs8(__m256i word)
{
    const __m256i to_sign = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
    return _mm256_castsi256_ps(_mm256_sllv_epi32(word, to_sign));
}

FD_AVX2 static inline __m256d keep_signs4(__m256i word)
{
    const __m256i to_sign = _mm256_setr_epi64x(63, 62, 61, 60);
    return _mm256_castsi256_pd(_mm256_sllv_epi64(word, to_sign));
}

/* Eight elements to and from float32 lanes, for each storage type computed in float32. */
FD_AVX2 static inline __m256 load8_f32(const char *in)
{
    return _mm256_loadu_ps((const float *)in);
}

FD_AVX2 static inline void store8_f32(char *out, __m256 v)
{
    _mm256_storeu_ps((float *)out, v);
}

FD_AVX2 static inline __m256 load8_f16(const char *in)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)in));
}

FD_AVX2 static inline void store8_f16(char *out, __m256 v)
{
    _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

FD_AVX2 static inline __m256 load8_bf16(const char *in)
{
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)in));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* As fd_float_to_bfloat, eight at a time: the bfloat16 bits in the low half of each 32-bit lane.
 * A NaN is replaced by the quiet NaN of its sign first, which the rounding then leaves as it is
 * (its low half is zero and its bit 16 even). */
FD_AVX2 static inline __m256i bfloat_bits8(__m256 v)
{
    const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    __m256 quiet = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(_mm256_castps_si256(v), sign), _mm256_set1_epi32(0x7fc00000)));
    __m256i u = _mm256_castps_si256(_mm256_blendv_ps(v, quiet, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff));
    return _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
}

FD_AVX2 static inline void store8_bf16(char *out, __m256 v)
{
    __m256i halves = bfloat_bits8(v);
    /* packus works within 128-bit lanes: elements 0-3 land in qword 0, 4-7 in qword 2 */
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(halves, halves), 0x08);
    _mm_storeu_si128((__m128i *)out, _mm256_castsi256_si128(packed));
}

/* Up to `n` bytes of decisions as one little-endian word: bit i governs element i.  A byte loop,
 * not memcpy, so that the compiler sees a fixed-size load in the full-word case. */
static inline uint64_t fd_load_bits(const uint8_t *bytes, size_t n)
{
    uint64_t word = 0;
    for (size_t i = 0; i < n; i++)
        word |= (uint64_t)bytes[i] << (8 * i);
    return word;
}

/* The op of eight float32 lanes: x * scale (+ shift) where the sign of `keep` is set, `dropped`
 * elsewhere. */
FD_AVX2 static inline __m256 op8(__m256 x, __m256 keep, __m256 scale, __m256 shift,
                                 __m256 dropped, int affine)
{
    __m256 v = _mm256_mul_ps(x, scale);
    if (affine)
        v = _mm256_add_ps(v, shift);
    return _mm256_blendv_ps(dropped, v, keep);
}

/* Applies eight decisions (the low bits of `word`, lane i reading bit i after the shift to the
 * sign) to eight elements; the loops below step `word` by 8 bits per call. */
#define FD_AVX2_APPLY8(suffix, in, out, word)                                                  \
    store8_##suffix(out, op8(load8_##suffix(in), keep_signs8(word), scale, shift, dropped, affine))

/* Whole words of four decision bytes first, unrolled, then the last bytes.  `affine` is read
 * once: `out` may alias anything, so the compiler would otherwise reload p->affine per vector. */
#define FD_AVX2_BODY(suffix, storage)                                                          \
    FD_AVX2 static void body_##suffix##_avx2(const char *in, char *out, size_t nbytes,         \
                                             const uint8_t *bytes, const fd_params *p)         \
    {                                                                                          \
        const __m256 scale = _mm256_set1_ps((float)p->scale);                                  \
        const __m256 shift = _mm256_set1_ps((float)p->shift);                                  \
        const __m256 dropped = _mm256_set1_ps((float)p->dropped);                              \
        const int affine = p->affine;                                                          \
        const size_t step = 8 * sizeof(storage);                                               \
        size_t b = 0;                                                                          \
        for (; b + 4 <= nbytes; b += 4, in += 4 * step, out += 4 * step) {                     \
            __m256i word = _mm256_set1_epi32((int)(uint32_t)fd_load_bits(bytes + b, 4));       \
            FD_AVX2_APPLY8(suffix, in, out, word);                                             \
            FD_AVX2_APPLY8(suffix, in + step, out + step, _mm256_srli_epi32(word, 8));         \
            FD_AVX2_APPLY8(suffix, in + 2 * step, out + 2 * step, _mm256_srli_epi32(word, 16)); \
            FD_AVX2_APPLY8(suffix, in + 3 * step, out + 3 * step, _mm256_srli_epi32(word, 24)); \
        }                                                                                      \
        __m256i word = _mm256_set1_epi32((int)(uint32_t)fd_load_bits(bytes + b, nbytes - b));  \
        for (; b < nbytes; b++, in += step, out += step) {                                     \
            FD_AVX2_APPLY8(suffix, in, out, word);                                             \
            word = _mm256_srli_epi32(word, 8);                                                 \
        }                                                                                      \
    }

FD_AVX2_BODY(f16, uint16_t)
FD_AVX2_BODY(f32, float)

/* bfloat16 takes sixteen elements (two decision bytes) per step.  Unpacking against zero puts
 * each element's bits in the high half of a float32 lane, one shuffle per eight elements where
 * load8_bf16 takes a widening and a shift; and the pack back to 16 bits needs no lane permute.
 * Both work within 128-bit lanes: `low` holds elements 0-3 and 8-11, `high` 4-7 and 12-15, the
 * order the pack restores, and the decision bits are shifted to the sign in that order.  Applying
 * stored bits in L1 went from 0.29 to 0.21 ns per element on Zen 3. */
FD_AVX2 static void body_bf16_avx2(const char *in, char *out, size_t nbytes,
                                   const uint8_t *bytes, const fd_params *p)
{
    const __m256 scale = _mm256_set1_ps((float)p->scale);
    const __m256 shift = _mm256_set1_ps((float)p->shift);
    const __m256 dropped = _mm256_set1_ps((float)p->dropped);
    const int affine = p->affine; /* read once, as in FD_AVX2_BODY */
    const __m256i zero = _mm256_setzero_si256();
    const __m256i low_to_sign = _mm256_setr_epi32(31, 30, 29, 28, 23, 22, 21, 20);
    const __m256i high_to_sign = _mm256_setr_epi32(27, 26, 25, 24, 19, 18, 17, 16);
    size_t b = 0;
    for (; b + 2 <= nbytes; b += 2, in += 32, out += 32) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)in);
        __m256i word = _mm256_set1_epi32((int)(uint32_t)fd_load_bits(bytes + b, 2));
        __m256 low = op8(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, raw)),
                         _mm256_castsi256_ps(_mm256_sllv_epi32(word, low_to_sign)), scale, shift,
                         dropped, affine);
        __m256 high = op8(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, raw)),
                          _mm256_castsi256_ps(_mm256_sllv_epi32(word, high_to_sign)), scale,
                          shift, dropped, affine);
        _mm256_storeu_si256((__m256i *)out,
                            _mm256_packus_epi32(bfloat_bits8(low), bfloat_bits8(high)));
    }
    if (b < nbytes)
        FD_AVX2_APPLY8(bf16, in, out, _mm256_set1_epi32(bytes[b]));
}

/* As FD_AVX2_APPLY8, four doubles: the low four bits of `word`. */
#define FD_AVX2_APPLY4_F64(in, out, word)                                                      \
    do {                                                                                       \
        __m256d v = _mm256_mul_pd(_mm256_loadu_pd((const double *)(in)), scale);               \
        if (affine)                                                                            \
            v = _mm256_add_pd(v, shift);                                                       \
        _mm256_storeu_pd((double *)(out), _mm256_blendv_pd(dropped, v, keep_signs4(word)));    \
    } while (0)

/* As FD_AVX2_BODY: whole bytes of decisions (two vectors each) unrolled, then the last bytes. */
FD_AVX2 static void body_f64_avx2(const char *in, char *out, size_t nbytes, const uint8_t *bytes,
                                  const fd_params *p)
{
    const __m256d scale = _mm256_set1_pd(p->scale);
    const __m256d shift = _mm256_set1_pd(p->shift);
    const __m256d dropped = _mm256_set1_pd(p->dropped);
    const int affine = p->affine;
    size_t b = 0;
    for (; b + 2 <= nbytes; b += 2, in += 128, out += 128) {
        __m256i word = _mm256_set1_epi64x((long long)fd_load_bits(bytes + b, 2));
        FD_AVX2_APPLY4_F64(in, out, word);
        FD_AVX2_APPLY4_F64(in + 32, out + 32, _mm256_srli_epi64(word, 4));
        FD_AVX2_APPLY4_F64(in + 64, out + 64, _mm256_srli_epi64(word, 8));
        FD_AVX2_APPLY4_F64(in + 96, out + 96, _mm256_srli_epi64(word, 12));
    }
    if (b < nbytes) {
        __m256i word = _mm256_set1_epi64x((long long)bytes[b]);
        FD_AVX2_APPLY4_F64(in, out, word);
        FD_AVX2_APPLY4_F64(in + 32, out + 32, _mm256_srli_epi64(word, 4));
    }
}

const fd_kernels fd_kernels_avx2 = {
    decide_avx2, {body_f16_avx2, body_bf16_avx2, body_f32_avx2, body_f64_avx2}};

#endif /* FD_ENABLE_AVX2 */
