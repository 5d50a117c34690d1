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

/* Build knobs: 1 to compile the AVX2 / AVX-512 paths.  They need GCC or clang (for per-function
 * target attributes) on x86-64; -DFD_ENABLE_AVX2=0 or -DFD_ENABLE_AVX512=0 leave a path out. */
#if defined(__GNUC__) && defined(__x86_64__)
#  define FD_X86_GNUC 1
#else
#  define FD_X86_GNUC 0
#endif
#ifndef FD_ENABLE_AVX2
#  define FD_ENABLE_AVX2 FD_X86_GNUC
#endif
#ifndef FD_ENABLE_AVX512
#  define FD_ENABLE_AVX512 FD_X86_GNUC
#endif

/* Writes the packed decisions of blocks j0 / 8 .. j0 / 8 + nbytes - 1 of the call (one byte per
 * block, bit h for half h), for p->keep_all == 0.  j0 is a multiple of 8. */
typedef void (*fd_decide_fn)(const fd_params *p, uint64_t j0, uint64_t nbytes, uint8_t *bits);

/* The hot loop: out = kept ? in * scale : +0.0 for 8 * nbytes contiguous elements whose
 * decisions are the bits of bytes[0 .. nbytes - 1], element i taking bit i % 8 of byte i / 8.
 * Everything else (strides, shared axes, rows that start or end inside a byte) is done once,
 * in fd_dropout.c, with the scalar loop. */
typedef void (*fd_body_fn)(const char *in, char *out, size_t nbytes, const uint8_t *bytes,
                           double scale);

typedef struct fd_kernels {
    fd_decide_fn decide;
    fd_body_fn body_f32;
    fd_body_fn body_f64;
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

/* out = bit ? in * s : +0.0 for one element.  The select works on the bits (AND with all ones
 * or zero), not with a multiply, so a dropped NaN or Inf does not survive (SPEC §2); and not
 * with a branch, which random decisions would mispredict every few elements. */
#define FD_DEFINE_SELECT(suffix, type, utype)                                                  \
    static inline void fd_select_##suffix(const char *in, char *out, type s, unsigned bit)     \
    {                                                                                          \
        type kept = *(const type *)in * s;                                                     \
        utype u;                                                                               \
        memcpy(&u, &kept, sizeof u);                                                           \
        u &= (utype)0 - (utype)bit;                                                            \
        memcpy(out, &u, sizeof u);                                                             \
    }
FD_DEFINE_SELECT(f32, float, uint32_t)
FD_DEFINE_SELECT(f64, double, uint64_t)

#endif /* FD_KERNELS_H */
