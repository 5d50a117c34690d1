/*
 * The portable path: plain C that any compiler builds, and the only one off x86-64.
 *
 * Its Philox bound: a round is two 32x32->64 multiplies, which a core's 64-bit multiplier
 * takes one per cycle, so 20 cycles per block; consecutive blocks are independent, so the
 * out-of-order core overlaps their chains (measured on a Xeon of model 207: 28 cycles per block
 * for Philox alone).  The byte compares take 20 more operations per eight bytes (SWAR).
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

/* Bit k of the result is bit 7 of byte k of x (eight bits gathered by one multiply: each
 * product term lands on its own bit, so nothing carries). */
static inline unsigned fd_byte_signs(uint64_t x)
{
    return (unsigned)((((x >> 7) & UINT64_C(0x0101010101010101)) * UINT64_C(0x0102040810204080)) >> 56);
}

/* For the eight bytes h_k of x, bytewise and without branches (SWAR): bit k of *below is
 * h_k < t and bit k of *equal is h_k == t, where every byte of t8 is t.  Setting bit 7 of each
 * byte before subtracting keeps borrows inside their bytes, so that bit 7 of a byte of z is
 * "low 7 bits of h >= those of t"; the top bits are compared apart. */
static inline void fd_bytes_compare(uint64_t x, uint64_t t8, unsigned *below, unsigned *equal)
{
    const uint64_t high = UINT64_C(0x8080808080808080);
    uint64_t z = (x | high) - (t8 & ~high);
    *below = fd_byte_signs((~x & t8) | (~(x ^ t8) & ~z));
    uint64_t v = x ^ t8; /* a byte of v is zero where h == t */
    *equal = fd_byte_signs(~(((v & ~high) + ~high) | v));
}

static void decide_scalar(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits,
                          fd_prefetch *ahead)
{
    fd_philox_key key = fd_philox_key_from_seed(p->seed);
    const uint64_t t8 = (p->threshold >> 24) * UINT64_C(0x0101010101010101);
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
        /* Compared without branches: the outcomes are random, and a branch per byte would be
         * mispredicted every few bytes. */
        unsigned below[2], equal[2];
        for (int half = 0; half < 2; half++)
            fd_bytes_compare((uint64_t)words[2 * half] | (uint64_t)words[2 * half + 1] << 32, t8,
                             &below[half], &equal[half]);
        uint32_t keep = below[0] | below[1] << 8, tied = equal[0] | equal[1] << 8;
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
