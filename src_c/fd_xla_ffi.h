/*
 * fastdrop's kernels as an XLA FFI handler: the typed custom call that XLA's CPU backend makes
 * for jax.ffi.ffi_call, writing the result straight into the buffer XLA allocated for it.
 *
 * Plain C, and no XLA or JAX header: fd_xla_ffi.c declares its own copy of the few structures of
 * XLA's FFI C ABI it reads, so that the core builds wherever a C compiler does.  The caller
 * registers fd_xla_ffi_dropout with XLA (jax.ffi.register_ffi_target, api_version=1) and calls
 * it with jax.ffi.ffi_call; XLA refuses the registration when its FFI API's major version
 * differs from FD_XLA_FFI_API_MAJOR or the minor version is outside the range it serves, and
 * the caller then takes another route.
 *
 * The call: operands x (float16, bfloat16, float32 or float64, any shape) and the key's words
 * (uint32, shape (..., 2): high and low halves of the 64-bit seed); one result of x's dtype and
 * shape.  The words' leading axes are batch axes (jax.vmap's "expand_dims" method): x and the
 * result have them first, each of the words' and x's batch extents either the result's or 1,
 * and each key masks its own members as a call on one member with that key would; along a batch
 * axis where the key has extent 1, every member gets the same mask.  Scalar attributes:
 * forward (int32: 1 forward, 0 backward, i.e. decisions regenerated from the key), threshold
 * (uint32), scale, shift and dropped (float64), affine (int32), shared_axes (uint64: bit k set
 * when member axis k is shared), as fd_params has them.
 */
#ifndef FD_XLA_FFI_H
#define FD_XLA_FFI_H

/* The version of XLA's FFI C API that fd_xla_ffi.c's declarations follow (XLA_FFI_API_MAJOR
 * and XLA_FFI_API_MINOR of xla/ffi/api/c_api.h), reported to XLA when it registers the
 * handler.  XLA refuses a minor version above its own, and the fields the handler reads are
 * laid out alike in every 0.x from 0.1 on (a minor version only appends), so the minor is the
 * oldest of those: jaxlib 0.5 to 0.7 serve 0.1, and 0.10 serves 0.1 to 0.3. */
#ifndef FD_XLA_FFI_API_MAJOR
#define FD_XLA_FFI_API_MAJOR 0
#endif
#ifndef FD_XLA_FFI_API_MINOR
#define FD_XLA_FFI_API_MINOR 1
#endif

/* The handler (an XLA_FFI_Handler): takes an XLA_FFI_CallFrame, returns NULL or the
 * XLA_FFI_Error that XLA reports to the caller.  Both are opaque here. */
void *fd_xla_ffi_dropout(void *call_frame);

#endif /* FD_XLA_FFI_H */
