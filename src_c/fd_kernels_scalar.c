/*
 * The portable path: plain C that any compiler builds.
 */
#include "fd_kernels.h"
#include "fd_philox.h"

/* Decides the listed ties, decisions j0 + at[k], from their refinement words, one block each. */
static void resolve_scalar(const fd_params *p, uint64_t j0, const uint32_t *at, uint32_t count,
                           uint8_t *bits)
{
    fd_philox_key key = fd_philox_key_from_seed(p->seed);
    uint64_t low, high;
    fd_refinement_counter(p, j0, &low, &high);
    for (uint32_t k = 0; k < count; k++) {
        uint32_t i = at[k];
        uint64_t block = low + i / 4;
        uint32_t words[4];
        fd_philox_block(fd_philox_counter_make(block, high + (block < low)), key, words);
        fd_tie_keep(bits, i, fd_tie_keeps(p, words[i % 4]));
    }
}

static void decide_scalar(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits,
                          fd_prefetch *ahead)
{
    fd_philox_key key = fd_philox_key_from_seed(p->seed);
    uint32_t t_hi = p->threshold >> 24;
    uint64_t ties_matter = fd_ties_matter(p) ? ~UINT64_C(0) : 0;
    uint32_t ties[FD_TIES_MAX + FD_TIES_PAD], tie_count = 0;
    uint64_t nblocks = (nbytes + 1) / 2;
    fd_prefetch_plan(ahead, nblocks);
    for (uint64_t b = 0; b < nblocks; b++) {
        fd_prefetch_step(ahead);
        if (tie_count > FD_TIES_MAX - FD_TIES_STEP) {
            resolve_scalar(p, j0, ties, tie_count, bits);
            tie_count = 0;
        }
        uint32_t words[4];
        fd_philox_block(fd_philox_counter_make(p->start + j0 / 16 + b, p->subsequence), key,
                        words);
        /* All sixteen bytes compared without branching (the outcomes are random, so branches
         * would be mispredicted). */
        uint32_t keep = 0, tied = 0;
        for (unsigned k = 0; k < 16; k++) {
            uint32_t h = (words[k / 4] >> (8 * (k % 4))) & 0xffu;
            keep |= (uint32_t)(h < t_hi) << k;
            tied |= (uint32_t)(h == t_hi) << k;
        }
        unsigned bytes = nbytes - 2 * b < 2 ? 1 : 2;
        bits[2 * b] = (uint8_t)keep;
        if (bytes == 2)
            bits[2 * b + 1] = (uint8_t)(keep >> 8);
        uint64_t in_range = bytes == 2 ? 0xffffu : 0xffu;
        tie_count = fd_ties_add(ties, tie_count, tied & in_range & ties_matter,
                                (uint32_t)(16 * b));
    }
    resolve_scalar(p, j0, ties, tie_count, bits);
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
