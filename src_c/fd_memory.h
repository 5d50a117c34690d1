/*
 * Streaming passes over plain memory, for `fastdrop bench` (SPEC §7): the memory floor of a
 * dropout call, and the machine's streaming bandwidth in the manner of the STREAM benchmark's
 * copy and scale.  Not part of the dropout API: they let the bench set a kernel beside the least
 * memory traffic that any kernel doing its job could do, measured in the same process.
 *
 * Plain C like fd_dropout.h.  Each pass is cut into tiles of FD_MEMORY_TILE_BYTES, taken by up
 * to num_threads threads in chunks exactly as the dropout kernels take theirs, and runs on the
 * calling thread alone below FD_MEMORY_PARALLEL_MIN_BYTES (the bytes of the dropout kernels'
 * threshold in float32).
 */
#ifndef FD_MEMORY_H
#define FD_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#ifndef FD_MEMORY_TILE_BYTES
#define FD_MEMORY_TILE_BYTES 16384
#endif
#ifndef FD_MEMORY_PARALLEL_MIN_BYTES
#define FD_MEMORY_PARALLEL_MIN_BYTES 262144
#endif

/* The memory floor of an in-place dropout call over `nbytes` bytes: reads every byte once and
 * writes it once, in place: byte i becomes byte i ^ byte (i % 8) of `pattern`, least
 * significant byte first (pattern 0 leaves the data as it was, and still moves every byte). */
void fd_memory_xor(void *data, size_t nbytes, uint64_t pattern, int num_threads);

/* STREAM's copy: out[i] = in[i] over `nbytes` bytes.  `in` and `out` must not overlap. */
void fd_memory_copy(const void *in, void *out, size_t nbytes, int num_threads);

/* STREAM's scale: out[i] = scale * in[i] for i < n.  `in` and `out` must not overlap. */
void fd_memory_scale_f64(const double *in, double *out, size_t n, double scale, int num_threads);

#endif /* FD_MEMORY_H */
