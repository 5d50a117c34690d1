/*
 * fastdrop's kernels as an XLA FFI handler (see fd_xla_ffi.h for the call it serves).
 *
 * The structures below are the parts of XLA's FFI C ABI (xla/ffi/api/c_api.h, API version
 * FD_XLA_FFI_API_MAJOR.FD_XLA_FFI_API_MINOR) that the handler reads, declared here with fields
 * of the same types in the same order, so that their layout is XLA's on every ABI.  XLA's enums
 * are C enums, held here as int.  Every structure XLA passes starts with its struct_size, which
 * is checked against the size of the fields read before any of them is.
 */
#include "fd_xla_ffi.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fd_dropout.h"

/* The size XLA gives a structure whose last field the handler reads is `last`. */
#define FD_XLA_SIZE_TO(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))

typedef struct fd_xla_extension {
    size_t struct_size;
    int type;
    struct fd_xla_extension *next;
} fd_xla_extension;

enum { FD_XLA_EXTENSION_METADATA = 1 };

typedef struct fd_xla_api_version {
    size_t struct_size;
    fd_xla_extension *extension_start;
    int major_version;
    int minor_version;
} fd_xla_api_version;

typedef struct fd_xla_metadata {
    size_t struct_size;
    fd_xla_api_version api_version;
    uint32_t traits;
} fd_xla_metadata;

typedef struct fd_xla_metadata_extension {
    fd_xla_extension extension_base;
    fd_xla_metadata *metadata;
} fd_xla_metadata_extension;

typedef struct fd_xla_error_create_args {
    size_t struct_size;
    fd_xla_extension *extension_start;
    const char *message;
    int errc;
} fd_xla_error_create_args;

enum { FD_XLA_ERROR_INVALID_ARGUMENT = 3, FD_XLA_ERROR_INTERNAL = 13 };

typedef void *fd_xla_error_create(fd_xla_error_create_args *args);

/* The API table begins with its version and the error constructor; the handler needs no more. */
typedef struct fd_xla_api {
    size_t struct_size;
    fd_xla_extension *extension_start;
    fd_xla_api_version api_version;
    const void *internal_api;
    fd_xla_error_create *error_create;
} fd_xla_api;

enum {
    FD_XLA_F16 = 10,
    FD_XLA_F32 = 11,
    FD_XLA_F64 = 12,
    FD_XLA_BF16 = 16,
    FD_XLA_U32 = 8,
    FD_XLA_S32 = 4,
    FD_XLA_U64 = 9,
};

typedef struct fd_xla_buffer {
    size_t struct_size;
    fd_xla_extension *extension_start;
    int dtype;
    void *data;
    int64_t rank;
    int64_t *dims;
} fd_xla_buffer;

enum { FD_XLA_BUFFER = 1 }; /* the argument and result type of a buffer */

typedef struct fd_xla_list { /* XLA_FFI_Args and XLA_FFI_Rets */
    size_t struct_size;
    fd_xla_extension *extension_start;
    int64_t size;
    int *types;
    void **items;
} fd_xla_list;

typedef struct fd_xla_byte_span {
    const char *ptr;
    size_t len;
} fd_xla_byte_span;

typedef struct fd_xla_scalar {
    int dtype;
    void *value;
} fd_xla_scalar;

enum { FD_XLA_ATTR_SCALAR = 3 };

typedef struct fd_xla_attrs {
    size_t struct_size;
    fd_xla_extension *extension_start;
    int64_t size;
    int *types;
    fd_xla_byte_span **names;
    void **attrs;
} fd_xla_attrs;

enum { FD_XLA_STAGE_EXECUTE = 3 };

typedef struct fd_xla_call_frame {
    size_t struct_size;
    fd_xla_extension *extension_start;
    const fd_xla_api *api;
    void *ctx;
    int stage;
    fd_xla_list args;
    fd_xla_list rets;
    fd_xla_attrs attrs;
} fd_xla_call_frame;

/* ------------------------------------------------------------------------------------------ */

/* An XLA error with a message (a string literal: XLA copies it). */
static void *error(const fd_xla_api *api, int code, const char *message)
{
    /* Every API table of the major version XLA accepted the handler for has the constructor. */
    fd_xla_error_create_args args;
    memset(&args, 0, sizeof args);
    args.struct_size = FD_XLA_SIZE_TO(fd_xla_error_create_args, errc);
    args.message = message;
    args.errc = code;
    return api->error_create(&args);
}

/* XLA asks a handler for its metadata, when registering it, with a call frame that carries a
 * metadata extension and no API table: the answer is the API version these declarations
 * follow.  A structure too small to hold the answer is left alone, so that XLA reads the
 * version it set before the call (0.0) and refuses the handler. */
static void *report_metadata(fd_xla_metadata_extension *extension)
{
    if (extension->extension_base.struct_size < FD_XLA_SIZE_TO(fd_xla_metadata_extension,
                                                               metadata)
        || extension->metadata == NULL
        || extension->metadata->struct_size < FD_XLA_SIZE_TO(fd_xla_metadata, traits))
        return NULL;
    fd_xla_metadata *metadata = extension->metadata;
    metadata->api_version.struct_size = FD_XLA_SIZE_TO(fd_xla_api_version, minor_version);
    metadata->api_version.extension_start = NULL;
    metadata->api_version.major_version = FD_XLA_FFI_API_MAJOR;
    metadata->api_version.minor_version = FD_XLA_FFI_API_MINOR;
    metadata->traits = 0;
    return NULL;
}

/* The scalar attribute `name` of type `dtype`, or NULL when there is none such. */
static const void *attribute(const fd_xla_attrs *attrs, const char *name, int dtype)
{
    size_t len = strlen(name);
    for (int64_t i = 0; i < attrs->size; i++) {
        const fd_xla_byte_span *key = attrs->names[i];
        if (key->len != len || memcmp(key->ptr, name, len) != 0)
            continue;
        const fd_xla_scalar *scalar = (const fd_xla_scalar *)attrs->attrs[i];
        if (attrs->types[i] != FD_XLA_ATTR_SCALAR || scalar->dtype != dtype)
            return NULL;
        return scalar->value;
    }
    return NULL;
}

/* The buffer item i of a list of arguments or results, or NULL when it is not a buffer XLA
 * passed with every field the handler reads. */
static const fd_xla_buffer *buffer(const fd_xla_list *list, int64_t i)
{
    if (list->types[i] != FD_XLA_BUFFER)
        return NULL;
    const fd_xla_buffer *b = (const fd_xla_buffer *)list->items[i];
    if (b->struct_size < FD_XLA_SIZE_TO(fd_xla_buffer, dims) || b->rank < 0
        || b->rank > FD_MAX_NDIM)
        return NULL;
    return b;
}

static fd_status run(int forward, int dtype, const fd_params *p, const char *in, char *out)
{
    switch (dtype) {
    case FD_XLA_F16:
        return forward ? fd_dropout_forward_f16(p, (const uint16_t *)in, (uint16_t *)out, NULL)
                       : fd_dropout_backward_f16(p, (const uint16_t *)in, (uint16_t *)out, NULL);
    case FD_XLA_BF16:
        return forward ? fd_dropout_forward_bf16(p, (const uint16_t *)in, (uint16_t *)out, NULL)
                       : fd_dropout_backward_bf16(p, (const uint16_t *)in, (uint16_t *)out, NULL);
    case FD_XLA_F32:
        return forward ? fd_dropout_forward_f32(p, (const float *)in, (float *)out, NULL)
                       : fd_dropout_backward_f32(p, (const float *)in, (float *)out, NULL);
    default:
        return forward ? fd_dropout_forward_f64(p, (const double *)in, (double *)out, NULL)
                       : fd_dropout_backward_f64(p, (const double *)in, (double *)out, NULL);
    }
}

static size_t item_size(int dtype)
{
    switch (dtype) {
    case FD_XLA_F16:
    case FD_XLA_BF16:
        return 2;
    case FD_XLA_F32:
        return 4;
    case FD_XLA_F64:
        return 8;
    default:
        return 0;
    }
}

void *fd_xla_ffi_dropout(void *frame_pointer)
{
    fd_xla_call_frame *frame = (fd_xla_call_frame *)frame_pointer;
    if (frame->extension_start != NULL
        && frame->extension_start->type == FD_XLA_EXTENSION_METADATA)
        return report_metadata((fd_xla_metadata_extension *)frame->extension_start);
    const fd_xla_api *api = frame->api;
    if (frame->struct_size < FD_XLA_SIZE_TO(fd_xla_call_frame, attrs))
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler: the call frame is older than its FFI version");
    if (frame->stage != FD_XLA_STAGE_EXECUTE)
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler runs at the execute stage only");
    if (frame->args.size != 2 || frame->rets.size != 1)
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler takes two operands (x, key words), one result");
    const fd_xla_buffer *x = buffer(&frame->args, 0);
    const fd_xla_buffer *words = buffer(&frame->args, 1);
    const fd_xla_buffer *y = buffer(&frame->rets, 0);
    if (x == NULL || words == NULL || y == NULL)
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler: operands and result must be buffers of at most "
                     "64 axes");

    const int32_t *forward = attribute(&frame->attrs, "forward", FD_XLA_S32);
    const uint32_t *threshold = attribute(&frame->attrs, "threshold", FD_XLA_U32);
    const double *scale = attribute(&frame->attrs, "scale", FD_XLA_F64);
    const double *shift = attribute(&frame->attrs, "shift", FD_XLA_F64);
    const double *dropped = attribute(&frame->attrs, "dropped", FD_XLA_F64);
    const int32_t *affine = attribute(&frame->attrs, "affine", FD_XLA_S32);
    const uint64_t *shared_axes = attribute(&frame->attrs, "shared_axes", FD_XLA_U64);
    if (!forward || !threshold || !scale || !shift || !dropped || !affine || !shared_axes)
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler: an attribute is missing or of the wrong type");

    /* The words' leading axes are the batch axes; the rest of x's are the member's. */
    int64_t ndim = y->rank, batch_ndim = words->rank - 1;
    size_t itemsize = item_size(x->dtype);
    if (itemsize == 0 || y->dtype != x->dtype || words->dtype != FD_XLA_U32
        || x->rank != ndim || batch_ndim < 0 || batch_ndim > ndim || words->dims[batch_ndim] != 2)
        return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                     "fastdrop's XLA handler: x must be float16, bfloat16, float32 or float64 "
                     "and the result alike, the key words uint32 of shape (..., 2)");
    for (int64_t k = 0; k < ndim; k++) {
        int64_t n = y->dims[k];
        int batch = k < batch_ndim;
        if (x->dims[k] != n && !(batch && x->dims[k] == 1))
            return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                         "fastdrop's XLA handler: x and the result differ in shape");
        if (batch && words->dims[k] != n && words->dims[k] != 1)
            return error(api, FD_XLA_ERROR_INVALID_ARGUMENT,
                         "fastdrop's XLA handler: the key words' batch axes do not match x's");
        if (n == 0)
            return NULL; /* nothing to write */
    }

    /* Row-major byte strides (XLA's default layout, which ffi_call asks for); a batch axis
     * along which x is broadcast has stride 0.  A batch axis where the key has extent 1 is
     * shared like the member's shared axes; one where it has the result's extent (a "keyed"
     * axis) is walked below, one key per member, with extent 1 in the kernel's shape. */
    ptrdiff_t shape[FD_MAX_NDIM], in_strides[FD_MAX_NDIM], out_strides[FD_MAX_NDIM];
    ptrdiff_t word_strides[FD_MAX_NDIM];
    uint8_t shared[FD_MAX_NDIM];
    int64_t keyed[FD_MAX_NDIM], position[FD_MAX_NDIM];
    int num_keyed = 0;
    ptrdiff_t in_stride = (ptrdiff_t)itemsize, out_stride = (ptrdiff_t)itemsize;
    ptrdiff_t word_stride = 2;
    for (int64_t k = ndim - 1; k >= 0; k--) {
        int batch = k < batch_ndim;
        in_strides[k] = x->dims[k] == 1 ? 0 : in_stride;
        out_strides[k] = out_stride;
        in_stride *= (ptrdiff_t)x->dims[k];
        out_stride *= (ptrdiff_t)y->dims[k];
        shape[k] = (ptrdiff_t)y->dims[k];
        shared[k] = batch ? words->dims[k] == 1 : (*shared_axes >> (k - batch_ndim)) & 1;
        if (batch) {
            word_strides[k] = word_stride;
            word_stride *= (ptrdiff_t)words->dims[k];
        }
        if (batch && words->dims[k] > 1)
            keyed[num_keyed++] = k;
    }
    for (int i = 0; i < num_keyed; i++) {
        shape[keyed[i]] = 1;
        position[i] = 0;
    }

    fd_params p;
    memset(&p, 0, sizeof p);
    p.threshold = *threshold;
    p.scale = *scale;
    p.shift = *shift;
    p.dropped = *dropped;
    p.affine = *affine;
    p.ndim = (int)ndim;
    p.shape = shape;
    p.in_strides = in_strides;
    p.out_strides = out_strides;
    p.shared_axes = shared;
    p.num_threads = fd_num_threads();

    /* One kernel call per key: keyed[] holds the keyed axes innermost first, and position[]
     * counts through them like an odometer. */
    const uint32_t *word_data = (const uint32_t *)words->data;
    for (;;) {
        ptrdiff_t in_offset = 0, out_offset = 0, word_offset = 0;
        for (int i = 0; i < num_keyed; i++) {
            int64_t k = keyed[i];
            in_offset += (ptrdiff_t)position[i] * in_strides[k];
            out_offset += (ptrdiff_t)position[i] * out_strides[k];
            word_offset += (ptrdiff_t)position[i] * word_strides[k];
        }
        p.seed = (uint64_t)word_data[word_offset] << 32 | word_data[word_offset + 1];
        fd_status status = run(*forward, x->dtype, &p, (const char *)x->data + in_offset,
                                (char *)y->data + out_offset);
        if (status != FD_OK)
            return error(api, FD_XLA_ERROR_INTERNAL,
                         "fastdrop's C core refused a call from its XLA handler; this is a bug "
                         "in fastdrop, please report it");
        int i = 0;
        while (i < num_keyed && ++position[i] == y->dims[keyed[i]])
            position[i++] = 0;
        if (i == num_keyed)
            return NULL;
    }
}
