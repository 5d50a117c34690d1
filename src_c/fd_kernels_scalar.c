/*
 * The portable path: plain C that any compiler builds.  It also holds the exact decision rule of
 * one block, which every path shares.
 */
#include "fd_kernels.h"
#include "fd_philox.h"

/* The refinement draw g_d of SPEC §3 for d = 8 * start + j: the low 16 bits of word d % 4 of
 * block d / 4 of subsequence 2**63 + subsequence.  d / 4 = 2 * start + j / 4 can pass 2**64;
 * the 128-bit counter then carries into its high words, as 128-bit arithmetic would. */
static uint32_t refinement_draw(const fd_params *p, uint64_t j)
{
    uint64_t doubled = p->start << 1;
    uint64_t carry = p->start >> 63;
    uint64_t block_low = doubled + j / 4;
    carry += block_low < doubled;
    uint64_t block_high = p->subsequence + (UINT64_C(1) << 63) + carry;
    uint32_t words[4];
    fd_philox_block(fd_philox_counter_make(block_low, block_high),
                    fd_philox_key_from_seed(p->seed), words);
    return words[j % 4] & 0xffffu;
}

uint8_t fd_block_decide(const fd_params *p, uint64_t j_block, const uint32_t words[4])
{
    uint32_t t_hi = p->threshold >> 16;
    uint32_t t_lo = p->threshold & 0xffffu;
    unsigned byte = 0;
    for (int half = 0; half < 8; half++) {
        uint32_t h = (words[half / 2] >> (16 * (half % 2))) & 0xffffu;
        /* h == t_hi happens once in 65536 decisions: only then are 16 more bits drawn, which
         * makes the keep probability exactly T / 2**32. */
        unsigned keep = h < t_hi || (h == t_hi && refinement_draw(p, j_block + half) < t_lo);
        byte |= keep << half;
    }
    return (uint8_t)byte;
}

static void decide_scalar(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits,
                          fd_prefetch *ahead)
{
    fd_philox_key key = fd_philox_key_from_seed(p->seed);
    uint32_t t_hi = p->threshold >> 16;
    fd_prefetch_plan(ahead, nbytes);
    for (uint64_t b = 0; b < nbytes; b++) {
        fd_prefetch_step(ahead);
        uint64_t j_block = j0 + 8 * b;
        uint32_t words[4];
        fd_philox_block(fd_philox_counter_make(p->start + j_block / 8, p->subsequence), key, words);
        /* Compare all eight halves without branching (the outcomes are random, so branches
         * would be mispredicted), and take the exact path only for a block with a tie. */
        unsigned byte = 0, ties = 0;
        for (int half = 0; half < 8; half++) {
            uint32_t h = (words[half / 2] >> (16 * (half % 2))) & 0xffffu;
            byte |= (unsigned)(h < t_hi) << half;
            ties |= h == t_hi;
        }
        bits[b] = ties ? fd_block_decide(p, j_block, words) : (uint8_t)byte;
    }
}

#define FD_DEFINE_SCALAR_BODY(suffix, storage, ctype)                                          \
    static void body_scalar_##suffix(const char *in, char *out, size_t nbytes,                 \
                                     const uint8_t *bytes, const fd_params *p)                 \
    {                                                                                          \
        const fd_op_##ctype op = fd_op_##ctype##_of(p);                                        \
        for (size_t b = 0; b < nbytes; b++) {                                                  \
            unsigned byte = bytes[b];                                                          \
            for (unsigned i = 0; i < 8; i++, in += sizeof(storage), out += sizeof(storage))    \
                fd_element_##suffix(in, out, &op, (byte >> i) & 1u);                           \
        }                                                                                      \
    }

FD_DEFINE_SCALAR_BODY(f16, uint16_t, float)
FD_DEFINE_SCALAR_BODY(bf16, uint16_t, float)
FD_DEFINE_SCALAR_BODY(f32, float, float)
FD_DEFINE_SCALAR_BODY(f64, double, double)

const fd_kernels fd_kernels_scalar = {
    decide_scalar, {body_scalar_f16, body_scalar_bf16, body_scalar_f32, body_scalar_f64}};
