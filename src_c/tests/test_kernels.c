/*
 * A plain-C test harness for fastdrop's C core (issue 7 item 1): no Python, no NumPy, so that it
 * can run under AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer.
 *
 * Build (tests/test_sanitizers.py does this):
 *   cc -std=c11 -O1 -g -ffp-contract=off -fsanitize=address,undefined -fno-sanitize-recover=all \
 *      [-fopenmp] -Isrc_c src_c/tests/test_kernels.c src_c/fd_*.c -o test_kernels
 *
 * What it checks:
 * - the Random123 known answers of Philox4x32-10 (the vectors of tests/data/philox4x32_10_kat.txt,
 *   embedded);
 * - fd_mask_generate and every kernel (forward with and without stored bits, backward from the
 *   bits and regenerated, in place) on edge cases: sizes 0 to 40 and around multiples of every
 *   vector width, odd, negative and transposed strides, shared axes, every dtype, affine and plain
 *   ops, 1 and 3 threads (OpenMP builds) with a call past the parallel threshold;
 * - every array inside a guard zone of known bytes, each checked unchanged after every call, and
 *   once more with no guard at all (the allocation is exactly the array), so that ASan itself
 *   sees any read or write past either end;
 * - the decisions against an independent implementation of SPEC §3 (including the refinement
 *   draw), the float32/float64 values against the op, and every SIMD path that the CPU supports
 *   (via fd_simd_select) byte for byte against the scalar path.
 * - the process around a call (SPEC §8, OpenMP builds): a threaded call made with flush-to-zero
 *   and denormals-are-zero set on the calling thread only flushes on every thread, and leaves the
 *   pool threads' own mode as it was (x86); a child made by fork() after threaded calls completes
 *   its threaded calls with the parent's bytes, on one thread and, after fd_thread_limit_lift,
 *   on threads of its own (POSIX).
 * - the bench's memory passes (fd_memory.h): the floor's XOR pass changes every byte of its span
 *   by the pattern's byte for its offset and nothing outside it, and copy and scale write exactly
 *   their output, at several start alignments, on sizes around the tile and the threading
 *   threshold, on 1 and 3 threads, on every SIMD path the CPU supports.
 *
 * Exit status 0 when everything passed; failures are printed to stderr.
 */
#define _POSIX_C_SOURCE 200809L /* fork, waitpid, alarm */

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd_dropout.h"
#include "fd_memory.h"
#include "fd_philox.h"

#if FD_FORK_HANDLERS
#include <sys/wait.h>
#include <unistd.h>
#endif
#if FD_USE_OPENMP && defined(__SSE__)
#include <omp.h>
#include <xmmintrin.h>
#endif

static long failures;
static long checks;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        checks++;                                                                                 \
        if (!(cond)) {                                                                            \
            if (failures++ < 40) {                                                                \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                              \
                fprintf(stderr, __VA_ARGS__);                                                     \
                fprintf(stderr, "\n");                                                            \
            }                                                                                     \
        }                                                                                         \
    } while (0)

/* ------------------------------------------------------------------------------------------- */
/* Known answers                                                                                */
/* ------------------------------------------------------------------------------------------- */

static void test_known_answers(void)
{
    static const uint32_t kat[3][10] = {
        {0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000,
         0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        fd_philox_counter ctr = {{kat[v][0], kat[v][1], kat[v][2], kat[v][3]}};
        fd_philox_key key = {{kat[v][4], kat[v][5]}};
        uint32_t out[4];
        fd_philox_block(ctr, key, out);
        for (int w = 0; w < 4; w++)
            CHECK(out[w] == kat[v][6 + w], "KAT %d word %d: %08x != %08x", v, w, out[w],
                  kat[v][6 + w]);
    }
}

/* ------------------------------------------------------------------------------------------- */
/* The decisions of SPEC §3, written independently of fd_dropout.c                              */
/* ------------------------------------------------------------------------------------------- */

static uint32_t byte_of(uint64_t seed, uint64_t subsequence, uint64_t block, unsigned k)
{
    uint32_t out[4];
    fd_philox_block(fd_philox_counter_make(block, subsequence), fd_philox_key_from_seed(seed), out);
    return (out[k / 4] >> (8 * (k % 4))) & 0xFF;
}

static int decision(uint64_t seed, uint64_t subsequence, uint64_t start, uint32_t threshold,
                    uint64_t j)
{
    uint32_t h = byte_of(seed, subsequence, start + j / 16, (unsigned)(j % 16));
    uint32_t t_hi = threshold >> 24, t_lo = threshold & 0xFFFFFF;
    if (h != t_hi)
        return h < t_hi;
    /* d = 16 * start + j as a 128-bit number d_high:d_low, and its refinement block d / 4 */
    uint64_t d_low = (start << 4) + j;
    uint64_t d_high = (start >> 60) + (d_low < (start << 4));
    uint64_t block_low = d_low >> 2 | d_high << 62;
    uint64_t block_high = d_high >> 2;
    uint32_t out[4];
    fd_philox_block(
        fd_philox_counter_make(block_low, subsequence + (UINT64_C(1) << 63) + block_high),
        fd_philox_key_from_seed(seed), out);
    return (out[d_low % 4] & 0xFFFFFF) < t_lo;
}

/* ------------------------------------------------------------------------------------------- */
/* Guarded buffers                                                                              */
/* ------------------------------------------------------------------------------------------- */

typedef struct buffer {
    unsigned char *base;     /* malloc'd, `total` bytes */
    unsigned char *copy;     /* the bytes as they were when last armed */
    unsigned char *allowed;  /* 1 where a byte belongs to an element */
    size_t total;
    unsigned char *origin;   /* element (0, ..., 0) */
} buffer;

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t next_random(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Calls fn(offset, arg) for the byte offset of every element, in C order of the index. */
static void for_each(int ndim, const ptrdiff_t *shape, const ptrdiff_t *strides,
                     void (*fn)(ptrdiff_t offset, uint64_t index, void *arg), void *arg)
{
    ptrdiff_t idx[3] = {0, 0, 0};
    uint64_t count = 1;
    for (int k = 0; k < ndim; k++)
        count *= (uint64_t)shape[k];
    for (uint64_t i = 0; i < count; i++) {
        ptrdiff_t offset = 0;
        for (int k = 0; k < ndim; k++)
            offset += idx[k] * strides[k];
        fn(offset, i, arg);
        for (int k = ndim - 1; k >= 0; k--) {
            if (++idx[k] < shape[k])
                break;
            idx[k] = 0;
        }
    }
}

typedef struct mark_arg { buffer *b; size_t item; } mark_arg;

static void mark(ptrdiff_t offset, uint64_t index, void *arg)
{
    (void)index;
    mark_arg *m = arg;
    memset(m->b->allowed + (m->b->origin - m->b->base) + offset, 1, m->item);
}

static void buffer_arm(buffer *b)
{
    memcpy(b->copy, b->base, b->total);
}

/* A buffer holding an array of `shape` and byte `strides` with `guard` random bytes each side. */
static buffer buffer_make(int ndim, const ptrdiff_t *shape, const ptrdiff_t *strides, size_t item,
                          size_t guard)
{
    buffer b;
    ptrdiff_t low = 0, high = 0;
    int empty = 0;
    for (int k = 0; k < ndim; k++)
        empty |= shape[k] == 0;
    for (int k = 0; k < ndim && !empty; k++) {
        if (strides[k] < 0)
            low += (shape[k] - 1) * strides[k];
        else
            high += (shape[k] - 1) * strides[k];
    }
    size_t span = empty ? 0 : (size_t)(high - low) + item;
    b.total = 2 * guard + span;
    b.base = malloc(b.total ? b.total : 1);
    b.copy = malloc(b.total ? b.total : 1);
    b.allowed = calloc(b.total ? b.total : 1, 1);
    if (!b.base || !b.copy || !b.allowed) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < b.total; i++)
        b.base[i] = (unsigned char)next_random();
    b.origin = b.base + guard - low;
    mark_arg m = {&b, item};
    for_each(ndim, shape, strides, mark, &m);
    buffer_arm(&b);
    return b;
}

static void buffer_free(buffer *b)
{
    free(b->base);
    free(b->copy);
    free(b->allowed);
}

/* Whether bytes changed outside the elements (any byte when `anywhere`). */
static int buffer_overran(const buffer *b, int anywhere)
{
    for (size_t i = 0; i < b->total; i++)
        if ((anywhere || !b->allowed[i]) && b->base[i] != b->copy[i])
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------- */
/* Kernels                                                                                      */
/* ------------------------------------------------------------------------------------------- */

enum { F16, BF16, F32, F64, NTYPES };
static const size_t item_size[NTYPES] = {2, 2, 4, 8};
static const char *type_name[NTYPES] = {"float16", "bfloat16", "float32", "float64"};

static fd_status forward(int type, const fd_params *p, const void *in, void *out, uint8_t *bits)
{
    switch (type) {
    case F16: return fd_dropout_forward_f16(p, in, out, bits);
    case BF16: return fd_dropout_forward_bf16(p, in, out, bits);
    case F32: return fd_dropout_forward_f32(p, in, out, bits);
    default: return fd_dropout_forward_f64(p, in, out, bits);
    }
}

static fd_status backward(int type, const fd_params *p, const void *in, void *out,
                          const uint8_t *bits)
{
    switch (type) {
    case F16: return fd_dropout_backward_f16(p, in, out, bits);
    case BF16: return fd_dropout_backward_bf16(p, in, out, bits);
    case F32: return fd_dropout_backward_f32(p, in, out, bits);
    default: return fd_dropout_backward_f64(p, in, out, bits);
    }
}

/* Finite values of moderate size (no NaN, whose payloads the paths need not agree on). */
static void fill_values(int type, buffer *b, int ndim, const ptrdiff_t *shape,
                        const ptrdiff_t *strides);

typedef struct fill_arg { buffer *b; int type; } fill_arg;

static void fill_one(ptrdiff_t offset, uint64_t index, void *arg)
{
    (void)index;
    fill_arg *f = arg;
    unsigned char *at = f->b->origin + offset;
    uint64_t r = next_random();
    double v = ((double)(r >> 11) / 9007199254740992.0 - 0.5) * 8.0;
    switch (f->type) {
    case F16: {
        uint16_t bits = (uint16_t)((r & 0x8000) | ((1 + (r >> 16) % 29) << 10) | ((r >> 32) & 0x3FF));
        memcpy(at, &bits, 2);
        break;
    }
    case BF16: {
        uint16_t bits = (uint16_t)((r & 0x8000) | ((100 + (r >> 16) % 50) << 7) | ((r >> 32) & 0x7F));
        memcpy(at, &bits, 2);
        break;
    }
    case F32: {
        float x = (float)v;
        memcpy(at, &x, 4);
        break;
    }
    default:
        memcpy(at, &v, 8);
    }
}

static void fill_values(int type, buffer *b, int ndim, const ptrdiff_t *shape,
                        const ptrdiff_t *strides)
{
    fill_arg f = {b, type};
    for_each(ndim, shape, strides, fill_one, &f);
    buffer_arm(b);
}

/* Checks float32 / float64 outputs against the op and the independent decisions. */
typedef struct value_arg {
    int type;
    const fd_params *p;
    const unsigned char *in_origin;
    const unsigned char *out_origin;
    const ptrdiff_t *out_strides;
    const char *where;
} value_arg;

static uint64_t mask_index(const fd_params *p, uint64_t index)
{
    /* C-order element index -> C-order index into the mask shape. */
    uint64_t rest = index, j = 0, mult = 1;
    for (int k = p->ndim - 1; k >= 0; k--) {
        uint64_t n = (uint64_t)p->shape[k];
        uint64_t i = rest % n;
        rest /= n;
        if (!p->shared_axes[k]) {
            j += i * mult;
            mult *= n;
        }
    }
    return j;
}

static void check_value(ptrdiff_t in_offset, uint64_t index, void *arg)
{
    value_arg *v = arg;
    const fd_params *p = v->p;
    /* The output element with the same index: recompute its offset from the out strides. */
    uint64_t rest = index;
    ptrdiff_t out_offset = 0;
    for (int k = p->ndim - 1; k >= 0; k--) {
        out_offset += (ptrdiff_t)(rest % (uint64_t)p->shape[k]) * v->out_strides[k];
        rest /= (uint64_t)p->shape[k];
    }
    int kept = p->keep_all || decision(p->seed, p->subsequence, p->start, p->threshold,
                                       mask_index(p, index));
    if (v->type == F32) {
        float x, y, want;
        memcpy(&x, v->in_origin + in_offset, 4);
        memcpy(&y, v->out_origin + out_offset, 4);
        if (kept) {
            want = x * (float)p->scale;
            if (p->affine)
                want = want + (float)p->shift;
        } else {
            want = (float)p->dropped;
        }
        CHECK(memcmp(&y, &want, 4) == 0, "%s: element %llu is %a, want %a", v->where,
              (unsigned long long)index, y, want);
    } else {
        double x, y, want;
        memcpy(&x, v->in_origin + in_offset, 8);
        memcpy(&y, v->out_origin + out_offset, 8);
        if (kept) {
            want = x * p->scale;
            if (p->affine)
                want = want + p->shift;
        } else {
            want = p->dropped;
        }
        CHECK(memcmp(&y, &want, 8) == 0, "%s: element %llu is %a, want %a", v->where,
              (unsigned long long)index, y, want);
    }
}

typedef struct outcome {
    /* The bytes of every buffer after each step, to compare paths with each other. */
    unsigned char *bytes;
    size_t size;
} outcome;

static void outcome_add(outcome *o, const buffer *b)
{
    o->bytes = realloc(o->bytes, o->size + b->total + 1);
    if (!o->bytes) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memcpy(o->bytes + o->size, b->base, b->total);
    o->size += b->total;
}

typedef struct layout_case {
    int ndim;
    ptrdiff_t shape[3];
    ptrdiff_t in_items[3];   /* element strides of x, in items */
    ptrdiff_t out_items[3];  /* element strides of out */
    uint8_t shared[3];
} layout_case;

/* One case on the active path: every kernel, guards checked after each; the final bytes of
 * every buffer appended to `o`.  The random generator is reset so that every path sees the same
 * buffers. */
static void run_case(int type, const layout_case *c, size_t guard, int threads, int affine,
                     uint32_t threshold, int keep_all, const char *path, outcome *o)
{
    size_t item = item_size[type];
    ptrdiff_t in_strides[3], out_strides[3];
    for (int k = 0; k < c->ndim; k++) {
        in_strides[k] = c->in_items[k] * (ptrdiff_t)item;
        out_strides[k] = c->out_items[k] * (ptrdiff_t)item;
    }
    char where[256];
    snprintf(where, sizeof where,
             "%s %s ndim=%d shape=(%td,%td,%td) in=(%td,%td,%td) out=(%td,%td,%td) "
             "shared=(%d,%d,%d) guard=%zu threads=%d affine=%d T=%u keep_all=%d",
             path, type_name[type], c->ndim, c->shape[0], c->shape[1], c->shape[2],
             c->in_items[0], c->in_items[1], c->in_items[2], c->out_items[0], c->out_items[1],
             c->out_items[2], c->shared[0], c->shared[1], c->shared[2], guard, threads, affine,
             threshold, keep_all);
    rng_state = 0x1234567u + (uint64_t)c->shape[0] * 7919u + (uint64_t)type;

    fd_params p;
    memset(&p, 0, sizeof p);
    p.seed = next_random();
    p.subsequence = next_random() >> 1;
    p.start = next_random() >> 20;
    p.threshold = threshold;
    p.keep_all = keep_all;
    p.scale = type == F64 ? 1.0 / 0.6 : (double)(1.0f / 0.6f);
    p.shift = affine ? (type == F64 ? 0.25 : (double)0.25f) : 0.0;
    p.dropped = affine ? -1.5 : 0.0;
    p.affine = affine;
    p.ndim = c->ndim;
    p.shape = c->shape;
    p.in_strides = in_strides;
    p.out_strides = out_strides;
    p.shared_axes = c->shared;
    p.num_threads = threads;

    uint64_t mask_size = fd_mask_size(&p);
    /* One case in four ends at the last block of the stream, where 4 start, the refinement
     * block of the call's first decision, passes 2**64 and carries into the counter's high half. */
    if (next_random() % 4 == 0)
        p.start = UINT64_MAX - (mask_size + 15) / 16 + 1;
    ptrdiff_t nbits = (ptrdiff_t)((mask_size + 7) / 8), one = 1;

    buffer x = buffer_make(c->ndim, c->shape, in_strides, item, guard);
    buffer y = buffer_make(c->ndim, c->shape, out_strides, item, guard);
    buffer bits = buffer_make(1, &nbits, &one, 1, guard);
    buffer gen = buffer_make(1, &nbits, &one, 1, guard);
    fill_values(type, &x, c->ndim, c->shape, in_strides);

    /* The mask alone. */
    CHECK(fd_mask_generate(&p, gen.origin) == FD_OK, "%s: mask_generate refused", where);
    CHECK(!buffer_overran(&gen, 0), "%s: mask_generate wrote outside its bytes", where);
    for (uint64_t j = 0; j < mask_size; j++) {
        int want = keep_all || decision(p.seed, p.subsequence, p.start, threshold, j);
        int got = (gen.origin[j / 8] >> (j % 8)) & 1;
        if (got != want) {
            CHECK(0, "%s: decision %llu is %d, want %d", where, (unsigned long long)j, got, want);
            break;
        }
    }
    if (mask_size % 8)
        CHECK((gen.origin[mask_size / 8] >> (mask_size % 8)) == 0,
              "%s: unused high bits of the last mask byte are not zero", where);

    /* Forward, storing the bits. */
    CHECK(forward(type, &p, x.origin, y.origin, bits.origin) == FD_OK, "%s: forward", where);
    CHECK(!buffer_overran(&x, 1), "%s: forward wrote into its input", where);
    CHECK(!buffer_overran(&y, 0), "%s: forward wrote outside out", where);
    CHECK(!buffer_overran(&bits, 0), "%s: forward wrote outside the bits", where);
    CHECK(nbits == 0 || memcmp(bits.origin, gen.origin, (size_t)nbits) == 0,
          "%s: stored bits differ from fd_mask_generate", where);
    if (type == F32 || type == F64) {
        value_arg v = {type, &p, x.origin, y.origin, out_strides, where};
        for_each(c->ndim, c->shape, in_strides, check_value, &v);
    }
    outcome_add(o, &y);
    outcome_add(o, &bits);

    /* Forward without bits gives the same output. */
    buffer y2 = buffer_make(c->ndim, c->shape, out_strides, item, guard);
    CHECK(forward(type, &p, x.origin, y2.origin, NULL) == FD_OK, "%s: forward", where);
    CHECK(!buffer_overran(&y2, 0), "%s: forward (no bits) wrote outside out", where);
    outcome_add(o, &y2);

    /* Backward from the stored bits and regenerated, into the same kind of buffer. */
    buffer_arm(&bits);
    buffer dx = buffer_make(c->ndim, c->shape, out_strides, item, guard);
    CHECK(backward(type, &p, x.origin, dx.origin, bits.origin) == FD_OK, "%s: backward", where);
    CHECK(!buffer_overran(&x, 1), "%s: backward wrote into dy", where);
    CHECK(!buffer_overran(&bits, 1), "%s: backward wrote into the bits", where);
    CHECK(!buffer_overran(&dx, 0), "%s: backward wrote outside out", where);
    outcome_add(o, &dx);
    buffer dx2 = buffer_make(c->ndim, c->shape, out_strides, item, guard);
    CHECK(backward(type, &p, x.origin, dx2.origin, NULL) == FD_OK, "%s: backward", where);
    CHECK(!buffer_overran(&dx2, 0), "%s: regenerated backward wrote outside out", where);
    outcome_add(o, &dx2);

    /* In place (in and out the same array, so the same strides). */
    p.out_strides = in_strides;
    CHECK(forward(type, &p, x.origin, x.origin, NULL) == FD_OK, "%s: in-place forward", where);
    CHECK(!buffer_overran(&x, 0), "%s: in-place forward wrote outside the array", where);
    outcome_add(o, &x);
    buffer_arm(&x);
    CHECK(backward(type, &p, x.origin, x.origin, NULL) == FD_OK, "%s: in-place backward", where);
    CHECK(!buffer_overran(&x, 0), "%s: in-place backward wrote outside the array", where);
    outcome_add(o, &x);

    buffer_free(&x);
    buffer_free(&y);
    buffer_free(&y2);
    buffer_free(&bits);
    buffer_free(&gen);
    buffer_free(&dx);
    buffer_free(&dx2);
}

/* Runs a case on every supported path and compares each path's bytes with the scalar path's. */
static void run_all_paths(int type, const layout_case *c, size_t guard, int threads, int affine,
                          uint32_t threshold, int keep_all)
{
    outcome scalar = {NULL, 0};
    for (int path = FD_SIMD_SCALAR; path <= FD_SIMD_AVX512; path++) {
        if (!fd_simd_supported((fd_simd)path))
            continue;
        CHECK(fd_simd_select((fd_simd)path) == FD_OK, "select %d", path);
        outcome o = {NULL, 0};
        run_case(type, c, guard, threads, affine, threshold, keep_all, fd_simd_name((fd_simd)path),
                 &o);
        if (path == FD_SIMD_SCALAR) {
            scalar = o;
        } else {
            CHECK(o.size == scalar.size && memcmp(o.bytes, scalar.bytes, o.size) == 0,
                  "%s %s: bytes differ from the scalar path (shape %td,%td,%td)",
                  fd_simd_name((fd_simd)path), type_name[type], c->shape[0], c->shape[1],
                  c->shape[2]);
            free(o.bytes);
        }
    }
    free(scalar.bytes);
}

static void test_kernels(int max_threads)
{
    static const ptrdiff_t sizes[] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13,
                                      14, 15, 16, 17, 18, 19, 20, 23, 24, 25, 31, 32, 33, 39,
                                      40, 41, 47, 48, 49, 63, 64, 65, 127, 129, 255, 257, 1031};
    /* T_lo = 0 (ties drop without a draw), 1 and 0xffffff (ties almost always drop or keep),
     * T_hi = 0 and 0xff (the extreme bytes), and a q of 0.6. */
    static const uint32_t thresholds[] = {0x9999999Au, 0x00000001u, 0xFFFFFFFFu,
                                          0x80000000u, 0x7F000001u, 0x42FFFFFFu};
    const size_t nthresholds = sizeof thresholds / sizeof thresholds[0];
    const int nsizes = (int)(sizeof sizes / sizeof sizes[0]);
    for (int type = 0; type < NTYPES; type++) {
        for (int s = 0; s < nsizes; s++) {
            ptrdiff_t n = sizes[s];
            ptrdiff_t rows = n / 7 > 0 ? n / 7 : 1, cols = n / rows;
            layout_case cases[] = {
                {1, {n, 1, 1}, {1, 0, 0}, {1, 0, 0}, {0, 0, 0}},
                {1, {n, 1, 1}, {3, 0, 0}, {-1, 0, 0}, {0, 0, 0}},
                {1, {n, 1, 1}, {-2, 0, 0}, {5, 0, 0}, {0, 0, 0}},
                {2, {rows, cols, 1}, {1, rows, 0}, {cols, 1, 0}, {0, 0, 0}},
                {2, {rows, cols, 1}, {cols + 3, 1, 0}, {-cols, 1, 0}, {1, 0, 0}},
                {2, {rows, cols, 1}, {-(2 * cols + 1), 2, 0}, {1, rows, 0}, {0, 1, 0}},
                {3, {2, rows, cols}, {rows * cols, cols, 1}, {1, 2, 2 * rows}, {1, 0, 1}},
                {3, {3, cols, 2}, {-1, 3 * 2, 3}, {2 * cols, 2, 1}, {0, 1, 0}},
            };
            for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
                int affine = (int)((s + k) % 2);
                uint32_t threshold = thresholds[(s + k + (size_t)type) % nthresholds];
                run_all_paths(type, &cases[k], 64, 1, affine, threshold, 0);
                run_all_paths(type, &cases[k], 0, 1, affine, threshold, (s + k) % 11 == 0);
            }
        }
        /* Past the parallel threshold (65536 elements), odd strides, a tail, several threads. */
        for (int threads = 1; threads <= max_threads; threads += 2) {
            layout_case big = {2, {3, 23459, 1}, {-(23459 * 2 + 1), 2, 0}, {1, 3, 0}, {0, 0, 0}};
            run_all_paths(type, &big, 64, threads, type % 2, 0x9999999Au, 0);
            layout_case shared = {2, {70001, 3, 1}, {3, 1, 0}, {3, 1, 0}, {0, 1, 0}};
            run_all_paths(type, &shared, 0, threads, 0, 0x40000000u, 0);
        }
    }
}

/* ------------------------------------------------------------------------------------------- */
/* The process around a call (SPEC §8)                                                          */
/* ------------------------------------------------------------------------------------------- */

#if FD_USE_OPENMP
/* Past the parallel threshold (65536 elements), with a tail. */
#define PROCESS_SIZE 200003

/* A contiguous float32 forward call of PROCESS_SIZE elements on `threads` threads. */
static void forward_f32(const float *x, float *y, int threads)
{
    static const ptrdiff_t shape[1] = {PROCESS_SIZE}, strides[1] = {sizeof(float)};
    static const uint8_t shared[1] = {0};
    fd_params p;
    memset(&p, 0, sizeof p);
    p.seed = 77;
    p.threshold = 0x9999999Au;
    p.scale = (double)(1.0f / 0.6f);
    p.ndim = 1;
    p.shape = shape;
    p.in_strides = strides;
    p.out_strides = strides;
    p.shared_axes = shared;
    p.num_threads = threads;
    CHECK(fd_dropout_forward_f32(&p, x, y, NULL) == FD_OK, "forward_f32 refused");
}

static float *floats(void)
{
    float *a = calloc(PROCESS_SIZE, sizeof(float));
    if (!a) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return a;
}
#endif

/* Runs after the kernel tests, whose threaded calls made the pool threads in the default mode. */
static void test_floating_point_environment(void)
{
#if FD_USE_OPENMP && defined(__SSE__)
    const unsigned int flush = 0x8040; /* MXCSR's flush-to-zero and denormals-are-zero bits */
    float *x = floats(), *one = floats(), *many = floats();
    for (int i = 0; i < PROCESS_SIZE; i++)
        x[i] = ldexpf((float)(i % 1000 + 1), -149) * (i % 2 ? -1.0f : 1.0f); /* subnormals */
    unsigned int before = _mm_getcsr();
    _mm_setcsr(before | flush);
    forward_f32(x, one, 1);
    forward_f32(x, many, 3);
    unsigned int during = _mm_getcsr();
    _mm_setcsr(before);
    CHECK(memcmp(one, many, PROCESS_SIZE * sizeof(float)) == 0,
          "flush-to-zero on the caller: 3 threads differ from 1");
    int unflushed = 0;
    for (int i = 0; i < PROCESS_SIZE; i++)
        unflushed += many[i] != 0.0f;
    CHECK(unflushed == 0, "flush-to-zero on the caller: %d subnormals kept", unflushed);
    CHECK((during & flush) == flush, "the call changed the caller's MXCSR");
    int flushing = 0;
#pragma omp parallel num_threads(3) reduction(+ : flushing)
    flushing += (_mm_getcsr() & flush) != 0;
    CHECK(flushing == 0, "%d pool threads kept the caller's mode after the call", flushing);
    free(x);
    free(one);
    free(many);
#endif
}

/* The memory passes of fd_memory.h, each array inside guard bytes that must stay as they were. */
#define MEMORY_GUARD 64

static void test_memory_on_active_path(int max_threads)
{
    const size_t sizes[] = {0, 1, 7, 8, 9, 15, 17, 100, FD_MEMORY_TILE_BYTES - 1,
                            FD_MEMORY_TILE_BYTES + 9, FD_MEMORY_PARALLEL_MIN_BYTES + 13,
                            3 * FD_MEMORY_PARALLEL_MIN_BYTES + 5};
    const uint64_t pattern = 0x8877665544332211u;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        size_t total = n + 2 * MEMORY_GUARD + 8;
        unsigned char *a = malloc(total), *b = malloc(total), *before = malloc(total);
        double *x = malloc((n / 8 + 1) * sizeof(double)), *y = malloc((n / 8 + 3) * sizeof(double));
        CHECK(a && b && before && x && y, "out of memory");
        if (!(a && b && before && x && y))
            return;
        for (int threads = 1; threads <= max_threads; threads += 2)
            for (size_t align = 0; align < 8; align += 3) {
                unsigned char *data = a + MEMORY_GUARD + align;
                for (size_t i = 0; i < total; i++)
                    a[i] = (unsigned char)next_random();
                memcpy(before, a, total);
                fd_memory_xor(data, n, pattern, threads);
                size_t wrong = 0;
                for (size_t i = 0; i < total; i++) {
                    size_t at = i - (MEMORY_GUARD + align);
                    int inside = i >= MEMORY_GUARD + align && at < n;
                    unsigned char want = inside ? (unsigned char)(before[i] ^ (pattern >> (8 * (at % 8))))
                                                : before[i];
                    wrong += a[i] != want;
                }
                CHECK(wrong == 0, "memory xor of %zu bytes at +%zu, %d threads: %zu bytes wrong",
                      n, align, threads, wrong);
                fd_memory_xor(data, n, pattern, threads);
                CHECK(memcmp(a, before, total) == 0, "memory xor twice is not the identity");

                memset(b, 0xA5, total);
                fd_memory_copy(data, b + MEMORY_GUARD + align, n, threads);
                wrong = 0;
                for (size_t i = 0; i < total; i++) {
                    int inside = i >= MEMORY_GUARD + align && i - (MEMORY_GUARD + align) < n;
                    wrong += b[i] != (inside ? a[i] : 0xA5);
                }
                CHECK(wrong == 0, "memory copy of %zu bytes at +%zu, %d threads: %zu bytes wrong",
                      n, align, threads, wrong);
            }
        /* scale: n / 8 doubles written into y[1 .. n / 8], y[0] and the last slot as guards */
        size_t count = n / 8;
        for (size_t i = 0; i < count; i++)
            x[i] = (double)(int)(next_random() % 2001) - 1000.5;
        for (int threads = 1; threads <= max_threads; threads += 2) {
            for (size_t i = 0; i < count + 2; i++)
                y[i] = -7.0;
            fd_memory_scale_f64(x, y + 1, count, 3.0, threads);
            size_t wrong = (y[0] != -7.0) + (y[count + 1] != -7.0);
            for (size_t i = 0; i < count; i++)
                wrong += y[i + 1] != 3.0 * x[i];
            CHECK(wrong == 0, "memory scale of %zu doubles, %d threads: %zu wrong", count, threads,
                  wrong);
        }
        free(a);
        free(b);
        free(before);
        free(x);
        free(y);
    }
}

static void test_memory(int max_threads)
{
    for (int path = FD_SIMD_SCALAR; path <= FD_SIMD_AVX512; path++)
        if (fd_simd_supported((fd_simd)path)) {
            CHECK(fd_simd_select((fd_simd)path) == FD_OK, "select %d", path);
            test_memory_on_active_path(max_threads);
        }
    CHECK(fd_simd_select(fd_simd_best()) == FD_OK, "select the best path");
}

/* Runs after threaded calls in this process, so the child inherits a pool without threads. */
static void test_fork(void)
{
#if FD_FORK_HANDLERS
    float *x = floats(), *want = floats(), *got = floats();
    for (int i = 0; i < PROCESS_SIZE; i++)
        x[i] = (float)(i % 777) - 300.0f;
    forward_f32(x, want, 3);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        alarm(60); /* a hang kills the child */
        int limited = fd_thread_limit() == 1;
        forward_f32(x, got, 3);
        int one_thread_right = memcmp(got, want, PROCESS_SIZE * sizeof(float)) == 0;
        fd_thread_limit_lift();
        int lifted = fd_thread_limit() == INT_MAX;
        memset(got, 0, PROCESS_SIZE * sizeof(float));
        forward_f32(x, got, 3);
        int threaded_right = memcmp(got, want, PROCESS_SIZE * sizeof(float)) == 0;
        _exit(limited && one_thread_right && lifted && threaded_right ? 0 : 1);
    }
    CHECK(child > 0, "fork failed");
    int status = 0;
    if (child > 0)
        CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "forked child: %s", WIFSIGNALED(status) ? "killed (hung)" : "wrong limit or bytes");
    CHECK(fd_thread_limit() == INT_MAX, "the parent's thread limit changed");
    free(x);
    free(want);
    free(got);
#endif
}

/* The front ends' thread setting: the default until set, then what was set. */
static void test_num_threads_setting(void)
{
    CHECK(fd_num_threads() == fd_default_num_threads(),
          "unset, the thread count is not the default");
    fd_num_threads_set(3);
    CHECK(fd_num_threads() == 3, "the thread count set is not the one read");
    fd_num_threads_set(fd_default_num_threads());
}

int main(void)
{
    test_num_threads_setting();
    test_known_answers();
    int max_threads = fd_openmp_enabled() ? 3 : 1;
    test_kernels(max_threads);
    test_memory(max_threads);
    test_floating_point_environment();
    test_fork();
    int paths = 0;
    for (int path = FD_SIMD_SCALAR; path <= FD_SIMD_AVX512; path++)
        if (fd_simd_supported((fd_simd)path)) {
            printf("path %s\n", fd_simd_name((fd_simd)path));
            paths++;
        }
    printf("%ld checks, %ld failures, %d SIMD paths, OpenMP %s\n", checks, failures, paths,
           fd_openmp_enabled() ? "on" : "off");
    return failures ? 1 : 0;
}
