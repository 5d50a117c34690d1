/*
 * The AVX-512 path (F and BW): Philox blocks in 64-bit lanes, four vectors of eight blocks
 * interleaved, and 16 floats (float16 and bfloat16 converted to float32) or 8 doubles per
 * vector, with the decisions loaded straight into mask registers, so a dropped element is a
 * masked multiply.  Run only where CPUID reports AVX512F and AVX512BW, or in a test build that
 * emulates the intrinsics (FD_AVX512_EMULATED).
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

/*
 * Philox in 64-bit lanes, eight blocks per vector.  A block travels as two lanes, a = x1:x0 and
 * b = x3:x2 (high:low words): vpmuludq multiplies the low words of 64-bit lanes, which are x0 and
 * x2, the words Philox multiplies, so its operands need no shuffle and its products no blend.  A
 * round is then, per vector of eight blocks, for each of a and b: one vpmuludq (the 64-bit
 * product hi:lo), one vpternlogd merge-masked to the odd 32-bit lanes (hi ^ the other word ^ the
 * round key, leaving lo in the even lanes), and one vprorq by 32 that swaps the halves into
 * place: 6 instructions per round for 8 blocks, where 16 blocks in 32-bit lanes took 16 (each
 * multiply there needs a shifted copy for the odd lanes and two blends to reassemble).  The
 * output lanes hold the block's bytes 0-7 (a) and 8-15 (b) in order, ready for the decisions.
 *
 * The throughput bound (one core): the 6 instructions per round and 8 blocks are 60 per 8
 * blocks, 0.47 per decision.  An Intel core with two 512-bit units (Xeon since Skylake-SP)
 * issues them on ports 0 and 5, 2 per cycle (measured on a Xeon of model 207, Sapphire/Emerald
 * Rapids: vpmuludq and vpternlogd 2 per cycle, vprorq 1 (port 0), vpermt2q and vpcmpub 1 (port
 * 5)): 30 cycles per 8 blocks, 3.75 per block, 0.23 per decision.  Zen 4 splits each 512-bit
 * instruction into two 256-bit halves on its four pipes (multiplies on two of them, rotations on
 * two others, ternary logic on all four): 12 halves, again 3 cycles per round and 8 blocks, where
 * the AVX2 path needs 16 instructions, 4 cycles (see fd_kernels_avx2.c).  The chain of a round
 * is vpmuludq (5 cycles on Intel, 3 on Zen 4), vpternlogd and vprorq (1 each): 7 cycles, so at
 * least 7 / 3 vectors must be in flight to reach the bound; FD_AVX512_GROUPS interleaves 4 (8 of
 * the 32 registers for the state, 8 for the products).  The decisions add 2 permutes, 4 compares
 * (port 5) and 2 mask moves (port 0) per 8 blocks: 34 cycles per 8 blocks, 0.27 cycles per
 * decision.  Measured on that Xeon at 3.1 GHz: Philox alone 4.3 cycles per block (88 % of the
 * bound), decisions with their ties 0.13 ns, 0.40 cycles, per decision.
 */
#define FD_AVX512_GROUPS 4

typedef struct philox_lane_keys {
    __m512i k0[FD_PHILOX_ROUNDS], k1[FD_PHILOX_ROUNDS];
} philox_lane_keys;

/* Every lane shares the key, so the round keys are computed once per call, not per block. */
FD_AVX512 static void philox_lane_keys_init(philox_lane_keys *keys, uint64_t seed)
{
    fd_philox_key key = fd_philox_key_from_seed(seed);
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        keys->k0[r] = _mm512_set1_epi32((int)(key.w[0] + (uint32_t)r * FD_PHILOX_W0));
        keys->k1[r] = _mm512_set1_epi32((int)(key.w[1] + (uint32_t)r * FD_PHILOX_W1));
    }
}

/* Ten rounds on `groups` vectors of eight blocks, a[g] and b[g] as above: counters in, words
 * out.  The groups are independent and interleaved round by round, so that the latency of one
 * group's round is covered by the others'.  Always inlined, so that each call's constant
 * `groups` unrolls the loops. */
FD_AVX512 static inline FD_ALWAYS_INLINE void philox_lanes(
    const philox_lane_keys *keys, int groups, __m512i a[], __m512i b[])
{
    const __m512i m0 = _mm512_set1_epi64((long long)FD_PHILOX_M0);
    const __m512i m1 = _mm512_set1_epi64((long long)FD_PHILOX_M1);
    const __mmask16 odd = 0xAAAA;
    FD_UNROLL(FD_PHILOX_ROUNDS)
    for (int r = 0; r < FD_PHILOX_ROUNDS; r++) {
        for (int g = 0; g < groups; g++) {
            __m512i p0 = _mm512_mul_epu32(a[g], m0); /* hi0:lo0 = M0 * x0 */
            __m512i p1 = _mm512_mul_epu32(b[g], m1); /* hi1:lo1 = M1 * x2 */
            /* x0' = hi1 ^ x1 ^ k0, x1' = lo1; x2' = hi0 ^ x3 ^ k1, x3' = lo0 (0x96: a ^ b ^ c) */
            a[g] = _mm512_ror_epi64(_mm512_mask_ternarylogic_epi32(p1, odd, a[g], keys->k0[r], 0x96), 32);
            b[g] = _mm512_ror_epi64(_mm512_mask_ternarylogic_epi32(p0, odd, b[g], keys->k1[r], 0x96), 32);
        }
    }
}

/* Counters of blocks first + 8 g + lane of a subsequence.  A real block's index never passes
 * 2**64 - 1 (fd_dropout.c refuses such calls), so no carry reaches the subsequence; lanes past
 * the call's last block may wrap, and are not used. */
FD_AVX512 static inline void counter_lanes(uint64_t first, uint64_t subsequence, int groups,
                                           __m512i a[], __m512i b[])
{
    const __m512i lane = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
    for (int g = 0; g < groups; g++) {
        a[g] = _mm512_add_epi64(_mm512_set1_epi64((long long)(first + 8 * (uint64_t)g)), lane);
        b[g] = _mm512_set1_epi64((long long)subsequence);
    }
}

/* The decisions of eight blocks (a, b as philox_lanes leaves them) into out[0..15] and their
 * ties appended to the list ties[0 .. tie_count - 1], decision i0 + i being bit i % 8 of
 * out[i / 8]; returns the new tie count.  Only the first `count` bytes are written and only
 * their ties listed (count < 16 at the end of a call).  Two permutes
 * put the blocks' bytes in decision order, four blocks per vector, so that each compare's mask
 * is 64 decisions in order. */
FD_AVX512 static inline uint32_t decide_lanes(__m512i a, __m512i b, __m512i t_hi,
                                              uint64_t ties_matter, uint8_t *out, uint64_t count,
                                              uint32_t *ties, uint32_t tie_count, uint32_t i0)
{
    const __m512i blocks_0_3 = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
    const __m512i blocks_4_7 = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    __m512i low = _mm512_permutex2var_epi64(a, blocks_0_3, b);
    __m512i high = _mm512_permutex2var_epi64(a, blocks_4_7, b);
    uint64_t keep[2] = {_mm512_cmplt_epu8_mask(low, t_hi), _mm512_cmplt_epu8_mask(high, t_hi)};
    uint64_t tied[2] = {_mm512_cmpeq_epu8_mask(low, t_hi) & ties_matter,
                        _mm512_cmpeq_epu8_mask(high, t_hi) & ties_matter};
    return fd_decisions_store(keep, tied, count, out, ties, tie_count, i0);
}

/* The refinement words of eight ties at once (see resolve_avx512). */
typedef struct tie_lanes {
    __m512i i, a, b;
} tie_lanes;

/* Counters of the refinement blocks of ties[0..7] (j - j0 each): block low + i / 4 of
 * subsequence high, carrying into high. */
FD_AVX512 static inline tie_lanes tie_counters(const uint32_t *ties, __m512i low, __m512i high)
{
    tie_lanes t;
    t.i = _mm512_cvtepu32_epi64(_mm256_loadu_si256((const __m256i *)ties));
    t.a = _mm512_add_epi64(low, _mm512_srli_epi64(t.i, 2));
    t.b = _mm512_mask_add_epi64(high, _mm512_cmplt_epu64_mask(t.a, low), high,
                                _mm512_set1_epi64(1));
    return t;
}

/* Patches ties[0..7] from their refinement blocks' words: word i % 4 (2 and 3 in b, the odd
 * ones in the high halves), its low 24 bits against T_lo. */
FD_AVX512 static inline void tie_patch(const tie_lanes *t, const uint32_t *ties, __m512i t_lo,
                                       uint8_t *bits)
{
    const __m512i one = _mm512_set1_epi64(1);
    __mmask8 in_b = _mm512_test_epi64_mask(t->i, _mm512_set1_epi64(2));
    __m512i pair = _mm512_mask_blend_epi64(in_b, t->a, t->b);
    __m512i shift = _mm512_slli_epi64(_mm512_and_si512(t->i, one), 5);
    __m512i g_d = _mm512_and_si512(_mm512_srlv_epi64(pair, shift), _mm512_set1_epi64(0xffffff));
    unsigned keep = _mm512_cmplt_epu64_mask(g_d, t_lo);
    for (uint32_t lane = 0; lane < 8; lane++)
        fd_tie_keep(bits, ties[lane], (keep >> lane) & 1u);
}

/* Decides the listed ties, decisions j0 + ties[k] for k < n, from their refinement words, eight
 * refinement blocks per vector and two vectors interleaved while at least sixteen remain (the
 * list padded by fd_ties_pad). */
FD_AVX512 static void resolve_avx512(const fd_params *p, const philox_lane_keys *keys,
                                     uint64_t j0, uint32_t *ties, uint32_t n, uint8_t *bits)
{
    if (n == 0)
        return;
    fd_ties_pad(ties, n);
    uint64_t low, high;
    fd_refinement_counter(p, j0, &low, &high);
    const __m512i base_low = _mm512_set1_epi64((long long)low);
    const __m512i base_high = _mm512_set1_epi64((long long)high);
    const __m512i t_lo = _mm512_set1_epi64((long long)(p->threshold & 0xffffffu));
    uint32_t k = 0;
    for (; k + 8 < n; k += 16) {
        tie_lanes t[2] = {tie_counters(ties + k, base_low, base_high),
                          tie_counters(ties + k + 8, base_low, base_high)};
        __m512i a[2] = {t[0].a, t[1].a}, b[2] = {t[0].b, t[1].b};
        philox_lanes(keys, 2, a, b);
        for (int g = 0; g < 2; g++) {
            t[g].a = a[g];
            t[g].b = b[g];
            tie_patch(&t[g], ties + k + 8 * g, t_lo, bits);
        }
    }
    if (k < n) {
        tie_lanes t = tie_counters(ties + k, base_low, base_high);
        philox_lanes(keys, 1, &t.a, &t.b);
        tie_patch(&t, ties + k, t_lo, bits);
    }
}

/* Whole steps of FD_AVX512_GROUPS groups (16 bytes of decisions each), then the last bytes one
 * group at a time, so that a short tile (channel dropout, the end of an array) draws few blocks
 * it does not use. */
FD_AVX512 static void decide_avx512(const fd_params *p, uint64_t j0, uint64_t nbytes,
                                    uint8_t *bits, fd_prefetch *ahead)
{
    philox_lane_keys keys;
    philox_lane_keys_init(&keys, p->seed);
    const __m512i t_hi = _mm512_set1_epi8((char)(p->threshold >> 24));
    const uint64_t ties_matter = fd_ties_matter(p) ? ~UINT64_C(0) : 0;
    uint32_t ties[FD_TIES_MAX + FD_TIES_PAD], tie_count = 0;
    uint64_t first = p->start + j0 / 16;
    const uint64_t step = 16 * FD_AVX512_GROUPS;
    fd_prefetch_plan(ahead, nbytes / step + (nbytes % step + 15) / 16);
    uint64_t b = 0;
    for (; b + step <= nbytes; b += step) {
        fd_prefetch_step(ahead);
        if (tie_count > FD_TIES_MAX - FD_TIES_STEP) {
            resolve_avx512(p, &keys, j0, ties, tie_count, bits);
            tie_count = 0;
        }
        __m512i x[FD_AVX512_GROUPS], y[FD_AVX512_GROUPS];
        counter_lanes(first + b / 2, p->subsequence, FD_AVX512_GROUPS, x, y);
        philox_lanes(&keys, FD_AVX512_GROUPS, x, y);
        for (int g = 0; g < FD_AVX512_GROUPS; g++)
            tie_count = decide_lanes(x[g], y[g], t_hi, ties_matter, bits + b + 16 * g, 16, ties,
                                     tie_count, (uint32_t)(8 * (b + 16 * g)));
    }
    for (; b < nbytes; b += 16) {
        fd_prefetch_step(ahead);
        if (tie_count > FD_TIES_MAX - FD_TIES_STEP) {
            resolve_avx512(p, &keys, j0, ties, tie_count, bits);
            tie_count = 0;
        }
        __m512i x[1], y[1];
        counter_lanes(first + b / 2, p->subsequence, 1, x, y);
        philox_lanes(&keys, 1, x, y);
        tie_count = decide_lanes(x[0], y[0], t_hi, ties_matter, bits + b,
                                 nbytes - b < 16 ? nbytes - b : 16, ties, tie_count,
                                 (uint32_t)(8 * b));
    }
    resolve_avx512(p, &keys, j0, ties, tie_count, bits);
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

/* As fd_float_to_bfloat, sixteen at a time, the bfloat16 bits left in the high half of each
 * 32-bit lane: a NaN becomes the quiet NaN of its sign ((u & sign) | 0x7fc00000, one ternary
 * logic instruction in the NaN lanes), which the rounding then leaves as it is. */
FD_AVX512 static inline __m512i bfloat_high16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    u = _mm512_mask_ternarylogic_epi32(u, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q),
                                       _mm512_set1_epi32((int)0x80000000u),
                                       _mm512_set1_epi32(0x7fc00000), 0xEA); /* (a & b) | c */
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
}

FD_AVX512 static inline void store16_bf16(char *out, __m512 v)
{
    _mm256_storeu_si256((__m256i *)out,
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(bfloat_high16(v), 16)));
}

/* The op of sixteen float32 lanes: x * scale (+ shift) where `keep` is set, `dropped`
 * elsewhere, the select folded into the last arithmetic instruction by its mask. */
FD_AVX512 static inline __m512 op16(__m512 x, __mmask16 keep, __m512 scale, __m512 shift,
                                    __m512 dropped, int affine)
{
    if (affine)
        return _mm512_mask_add_ps(dropped, keep, _mm512_mul_ps(x, scale), shift);
    return _mm512_mask_mul_ps(dropped, keep, x, scale);
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
            store16_##suffix(out, op16(load16_##suffix(in), keep, scale, shift, dropped, affine)); \
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

/* bfloat16 takes 32 elements (four decision bytes) per step, where body_bf16_avx512 takes a
 * widening load and a narrowing store (two instructions on the shuffle port) per 16: one word
 * permute with zeroing puts elements 0-15, another 16-31, in the high halves of 32-bit lanes
 * (their float32 values), and one two-source word permute gathers the 32 rounded high halves
 * back in order.  The decisions of elements 0-15 and 16-31 are then the low and high 16 bits
 * of the four bytes.  body_bf16_avx512 does what is left. */
FD_AVX512 static void body_bf16_quads_avx512(const char *in, char *out, size_t nbytes,
                                             const uint8_t *bytes, const fd_params *p)
{
    static const uint16_t spread_low[32] = {0, 0,  0, 1,  0, 2,  0, 3,  0, 4,  0, 5,  0, 6,
                                            0, 7,  0, 8,  0, 9,  0, 10, 0, 11, 0, 12, 0, 13,
                                            0, 14, 0, 15};
    static const uint16_t spread_high[32] = {0, 16, 0, 17, 0, 18, 0, 19, 0, 20, 0, 21, 0, 22,
                                             0, 23, 0, 24, 0, 25, 0, 26, 0, 27, 0, 28, 0, 29,
                                             0, 30, 0, 31};
    static const uint16_t gather_high[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                             23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                             45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    const __m512i to_low = _mm512_loadu_si512(spread_low);
    const __m512i to_high = _mm512_loadu_si512(spread_high);
    const __m512i back = _mm512_loadu_si512(gather_high);
    const __mmask32 high_halves = 0xAAAAAAAAu;
    const __m512 scale = _mm512_set1_ps((float)p->scale);
    const __m512 shift = _mm512_set1_ps((float)p->shift);
    const __m512 dropped = _mm512_set1_ps((float)p->dropped);
    const int affine = p->affine; /* read once, as in FD_AVX512_BODY */
    size_t b = 0;
    for (; b + 4 <= nbytes; b += 4, in += 64, out += 64) {
        __m512i raw = _mm512_loadu_si512(in);
        uint32_t word = (uint32_t)bytes[b] | (uint32_t)bytes[b + 1] << 8 |
                        (uint32_t)bytes[b + 2] << 16 | (uint32_t)bytes[b + 3] << 24;
        __m512 low = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(high_halves, to_low, raw));
        __m512 high = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(high_halves, to_high, raw));
        low = op16(low, (__mmask16)word, scale, shift, dropped, affine);
        high = op16(high, (__mmask16)(word >> 16), scale, shift, dropped, affine);
        _mm512_storeu_si512(out, _mm512_permutex2var_epi16(bfloat_high16(low), back,
                                                           bfloat_high16(high)));
    }
    body_bf16_avx512(in, out, nbytes - b, bytes + b, p);
}

FD_AVX512 static void body_f64_avx512(const char *in, char *out, size_t nbytes,
                                     const uint8_t *bytes, const fd_params *p)
{
    const __m512d scale = _mm512_set1_pd(p->scale);
    const __m512d shift = _mm512_set1_pd(p->shift);
    const __m512d dropped = _mm512_set1_pd(p->dropped);
    const int affine = p->affine;
    for (size_t b = 0; b < nbytes; b++, in += 64, out += 64) {
        __m512d x = _mm512_loadu_pd((const double *)in);
        __mmask8 keep = (__mmask8)bytes[b];
        __m512d v = affine ? _mm512_mask_add_pd(dropped, keep, _mm512_mul_pd(x, scale), shift)
                           : _mm512_mask_mul_pd(dropped, keep, x, scale);
        _mm512_storeu_pd((double *)out, v);
    }
}

const fd_kernels fd_kernels_avx512 = {
    decide_avx512, {body_f16_avx512, body_bf16_quads_avx512, body_f32_avx512, body_f64_avx512}};

#endif /* FD_ENABLE_AVX512 */
