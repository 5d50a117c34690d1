/*
 * Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011), the generator behind every fastdrop decision (SPEC §3).
 *
 * Why a counter-based generator: a block of output is a pure function of (key, counter), so any
 * thread can produce the randomness of any position without touching shared state.  That is what
 * lets the kernels split work across threads and SIMD lanes freely while the mask stays a pure
 * function of (seed, subsequence, position), and what lets backward regenerate the mask instead
 * of storing it.
 *
 * Plain C, header only, so that every kernel inlines it.
 */
#ifndef FD_PHILOX_H
#define FD_PHILOX_H

#include <stdint.h>

/* The round multipliers and the Weyl key increments of Philox4x32 (the golden ratio and
 * sqrt(3) - 1 in 32-bit fixed point); they are part of the generator's definition. */
#define FD_PHILOX_M0 0xD2511F53u
#define FD_PHILOX_M1 0xCD9E8D57u
#define FD_PHILOX_W0 0x9E3779B9u
#define FD_PHILOX_W1 0xBB67AE85u
#define FD_PHILOX_ROUNDS 10

/* A 128-bit counter as four 32-bit words, word 0 least significant; likewise the 64-bit key. */
typedef struct fd_philox_counter { uint32_t w[4]; } fd_philox_counter;
typedef struct fd_philox_key { uint32_t w[2]; } fd_philox_key;

static inline fd_philox_key fd_philox_key_from_seed(uint64_t seed)
{
    fd_philox_key key;
    key.w[0] = (uint32_t)seed;
    key.w[1] = (uint32_t)(seed >> 32);
    return key;
}

/* The counter `block + 2**64 * high` of SPEC §3: the block index fills the low 64 bits and the
 * subsequence the high 64 bits, so subsequences never overlap whatever the block index. */
static inline fd_philox_counter fd_philox_counter_make(uint64_t block, uint64_t high)
{
    fd_philox_counter ctr;
    ctr.w[0] = (uint32_t)block;
    ctr.w[1] = (uint32_t)(block >> 32);
    ctr.w[2] = (uint32_t)high;
    ctr.w[3] = (uint32_t)(high >> 32);
    return ctr;
}

/* Encrypts one counter: ten rounds of two 32x32->64 multiplies, with the key bumped by the Weyl
 * constants between rounds.  out[0..3] receive the four output words. */
static inline void fd_philox_block(fd_philox_counter ctr, fd_philox_key key, uint32_t out[4])
{
    uint32_t c0 = ctr.w[0], c1 = ctr.w[1], c2 = ctr.w[2], c3 = ctr.w[3];
    uint32_t k0 = key.w[0], k1 = key.w[1];
    for (int round = 0; round < FD_PHILOX_ROUNDS; round++) {
        uint64_t p0 = (uint64_t)FD_PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)FD_PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += FD_PHILOX_W0;
        k1 += FD_PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

#endif /* FD_PHILOX_H */
