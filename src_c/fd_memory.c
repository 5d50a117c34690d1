/*
 * Streaming passes over plain memory for `fastdrop bench`; see fd_memory.h.  The loops are plain
 * C that the compiler vectorises.  The floor's loop is compiled once per SIMD path and runs on the
 * path the dropout kernels use, so that on arrays the caches hold, where instructions rather than
 * memory bound a pass, it moves bytes with vectors as wide as theirs.
 */
#include "fd_memory.h"

#include <string.h>

#include "fd_kernels.h"

/* fn over the tiles of a pass over `nbytes`, on up to num_threads threads. */
static void run_pass(size_t nbytes, int num_threads, fd_tile_fn fn, const void *ctx)
{
    int64_t tiles = (int64_t)((nbytes + FD_MEMORY_TILE_BYTES - 1) / FD_MEMORY_TILE_BYTES);
    fd_tiles_run(tiles,
                 fd_tiles_threads(num_threads, nbytes < FD_MEMORY_PARALLEL_MIN_BYTES,
                                  (uint64_t)tiles),
                 fn, ctx);
}

/* Bytes [t * FD_MEMORY_TILE_BYTES, ...) of a pass over `nbytes`: the tile's offset and length. */
static size_t tile_span(size_t nbytes, int64_t t, size_t *length)
{
    size_t offset = (size_t)t * FD_MEMORY_TILE_BYTES;
    size_t rest = nbytes - offset;
    *length = rest < FD_MEMORY_TILE_BYTES ? rest : FD_MEMORY_TILE_BYTES;
    return offset;
}

/* at[k] ^= word for k < words, 8-byte words at any alignment. */
typedef void (*xor_words_fn)(unsigned char *at, size_t words, uint64_t word);

#define FD_DEFINE_XOR_WORDS(name, target)                                                      \
    target static void name(unsigned char *at, size_t words, uint64_t word)                    \
    {                                                                                          \
        for (size_t k = 0; k < words; k++) {                                                   \
            uint64_t w;                                                                        \
            memcpy(&w, at + 8 * k, 8);                                                         \
            w ^= word;                                                                         \
            memcpy(at + 8 * k, &w, 8);                                                         \
        }                                                                                      \
    }

FD_DEFINE_XOR_WORDS(xor_words_scalar, )
#if FD_ENABLE_AVX2
FD_DEFINE_XOR_WORDS(xor_words_avx2, FD_TARGET("avx2"))
#endif
/* The emulated AVX-512 of the test builds runs on CPUs without it: the portable loop serves it. */
#if FD_ENABLE_AVX512 && !FD_AVX512_EMULATED
FD_DEFINE_XOR_WORDS(xor_words_avx512, FD_TARGET("avx512f,avx512bw"))
#endif

static xor_words_fn xor_words_for(fd_simd path)
{
#if FD_ENABLE_AVX512 && !FD_AVX512_EMULATED
    if (path == FD_SIMD_AVX512)
        return xor_words_avx512;
#endif
#if FD_ENABLE_AVX2
    if (path == FD_SIMD_AVX2 || path == FD_SIMD_AVX512)
        return xor_words_avx2;
#endif
    (void)path;
    return xor_words_scalar;
}

typedef struct xor_pass {
    unsigned char *data;
    size_t nbytes;
    xor_words_fn words;
    uint64_t word;              /* the pattern as it lies in memory */
    unsigned char bytes[8];     /* the pattern's bytes, least significant first */
} xor_pass;

static void xor_tile(const void *ctx, int64_t t)
{
    const xor_pass *x = ctx;
    size_t length;
    /* Tiles are multiples of 8 bytes long, so word k of a tile is word k of the pattern. */
    unsigned char *at = x->data + tile_span(x->nbytes, t, &length);
    size_t words = length / 8;
    x->words(at, words, x->word);
    for (size_t i = 8 * words; i < length; i++)
        at[i] ^= x->bytes[i % 8];
}

void fd_memory_xor(void *data, size_t nbytes, uint64_t pattern, int num_threads)
{
    xor_pass x = {.data = data, .nbytes = nbytes, .words = xor_words_for(fd_simd_active())};
    for (int b = 0; b < 8; b++)
        x.bytes[b] = (unsigned char)(pattern >> (8 * b));
    memcpy(&x.word, x.bytes, 8);
    run_pass(nbytes, num_threads, xor_tile, &x);
}

typedef struct copy_pass {
    const unsigned char *in;
    unsigned char *out;
    size_t nbytes;
} copy_pass;

static void copy_tile(const void *ctx, int64_t t)
{
    const copy_pass *c = ctx;
    size_t length;
    size_t offset = tile_span(c->nbytes, t, &length);
    memcpy(c->out + offset, c->in + offset, length);
}

void fd_memory_copy(const void *in, void *out, size_t nbytes, int num_threads)
{
    copy_pass c = {in, out, nbytes};
    run_pass(nbytes, num_threads, copy_tile, &c);
}

typedef struct scale_pass {
    const double *in;
    double *out;
    size_t nbytes;
    double scale;
} scale_pass;

static void scale_tile(const void *ctx, int64_t t)
{
    const scale_pass *s = ctx;
    size_t length;
    size_t first = tile_span(s->nbytes, t, &length) / sizeof(double);
    size_t count = length / sizeof(double);
    const double *in = s->in + first;
    double *out = s->out + first;
    for (size_t i = 0; i < count; i++)
        out[i] = s->scale * in[i];
}

void fd_memory_scale_f64(const double *in, double *out, size_t n, double scale, int num_threads)
{
    scale_pass s = {in, out, n * sizeof(double), scale};
    run_pass(s.nbytes, num_threads, scale_tile, &s);
}
