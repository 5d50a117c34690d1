"""The JAX adapter, fastdrop.jax: the same bits as fastdrop.dropout for the key's seed, eager
and under jit, grad (the key the only residual) and vmap; key_to_seed; shared axes, modes,
dtypes and refusals."""
import ctypes
import doctest
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip(
    "jax", reason="jax is not installed: pip install \"fastdropout[jax]\" to test the JAX adapter")
import jax.numpy as jnp  # noqa: E402

import fastdrop  # noqa: E402
import fastdrop.jax as fdj  # noqa: E402
from fastdrop._api import SUPPORTED_DTYPES  # noqa: E402

DTYPES = [dtype.name for dtype in SUPPORTED_DTYPES]
RATE = 0.3


def bits(array) -> bytes:
    """The bytes of an array, so that +0.0 and -0.0 (or two NaNs) are told apart."""
    array = np.asarray(array)
    return array.dtype.name.encode() + str(array.shape).encode() + array.tobytes()


def expected(x, rate, key, **kwargs):
    return fastdrop.dropout(np.asarray(x), 1 - rate, seed=fdj.key_to_seed(key), **kwargs)


def normal(shape, dtype="float32", seed=0):
    return jax.random.normal(jax.random.key(seed), shape, dtype=jnp.float32).astype(dtype)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# ---------------------------------------------------------------------------------------------
# The same output as fastdrop.dropout
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_eager_and_jit_equal_fastdrop(dtype, x64):
    x, key = normal((5, 7, 3), dtype), jax.random.key(11)
    y, _ = expected(x, RATE, key)
    assert bits(fdj.dropout(x, RATE, key)) == bits(y)
    jitted = jax.jit(fdj.dropout, static_argnums=1)
    assert bits(jitted(x, RATE, key)) == bits(y)
    assert 0 < np.count_nonzero(y) < y.size


@pytest.mark.parametrize("mode", ["inverted", "classic", "alpha"])
def test_modes_equal_fastdrop(mode):
    x, key = normal((64, 9)), jax.random.key(3)
    y, _ = expected(x, RATE, key, mode=mode)
    run = jax.jit(lambda x, key: fdj.dropout(x, RATE, key, mode=mode))
    assert bits(run(x, key)) == bits(y)


@pytest.mark.parametrize("axes", [0, (1,), (-1,), (0, 2), (-3, -1)])
def test_shared_axes_equal_fastdrop(axes):
    x, key = normal((6, 5, 4)), jax.random.key(5)
    y, mask = expected(x, RATE, key, shared_axes=axes)
    out = jax.jit(lambda x, key: fdj.dropout(x, RATE, key, shared_axes=axes))(x, key)
    assert bits(out) == bits(y)
    kept = np.asarray(out) != 0
    for axis in np.atleast_1d(axes):  # the decisions are constant along each shared axis
        assert np.array_equal(kept, np.broadcast_to(kept.any(axis=int(axis), keepdims=True),
                                                    kept.shape))


def test_typed_and_raw_keys_give_the_same_mask():
    x = normal((100,))
    typed, raw = jax.random.key(2024), jax.random.PRNGKey(2024)
    assert fdj.key_to_seed(typed) == fdj.key_to_seed(raw) == 2024
    assert bits(fdj.dropout(x, RATE, typed)) == bits(fdj.dropout(x, RATE, raw))


def test_rate_zero_and_empty_arrays_are_returned_as_they_are():
    x, key = normal((4, 4)), jax.random.key(0)
    assert fdj.dropout(x, 0.0, key) is x
    empty = jnp.zeros((0, 3))
    assert fdj.dropout(empty, RATE, key).shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["inverted", "classic", "alpha"])
def test_grad_is_the_mask_scaled_upstream_gradient(mode):
    x, key = normal((32, 16)), jax.random.key(8)
    upstream = normal((32, 16), seed=1)
    _, mask = expected(x, RATE, key, mode=mode)

    def loss(x):
        return jnp.sum(fdj.dropout(x, RATE, key, mode=mode) * upstream)

    for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
        gradient = np.asarray(grad(x))
        assert bits(gradient) == bits(fastdrop.dropout_backward(np.asarray(upstream), mask))
    # Independently of fastdrop's backward: the kept units' upstream gradient, scaled.
    scale = {"inverted": 1 / (1 - RATE), "classic": 1.0}.get(mode)
    if scale is not None:
        keep = mask.to_bool()
        np.testing.assert_allclose(gradient, np.where(keep, np.asarray(upstream) * scale, 0),
                                   rtol=1e-6)


def test_backward_keeps_the_key_not_a_mask():
    x, key = normal((256, 256)), jax.random.key(1)
    y, pullback = jax.vjp(lambda x: fdj.dropout(x, RATE, key), x)
    residuals = jax.tree_util.tree_leaves(pullback)
    assert residuals and max(np.size(leaf) for leaf in residuals) <= 2
    _, mask = expected(x, RATE, key)
    ones = np.ones(x.shape, np.float32)
    assert bits(pullback(jnp.asarray(ones))[0]) == bits(fastdrop.dropout_backward(ones, mask))


# ---------------------------------------------------------------------------------------------
# vmap: a batch of keys gives each member the mask of a call on that member with its key
# ---------------------------------------------------------------------------------------------

def loop(function, *columns):
    return np.stack([np.asarray(function(*members)) for members in zip(*columns)])


def test_vmap_over_keys_and_inputs_equals_a_loop():
    x = normal((4, 6, 5))
    keys = jax.random.split(jax.random.key(9), 4)

    def drop(x, key):
        return fdj.dropout(x, RATE, key, shared_axes=-1)

    assert bits(jax.jit(jax.vmap(drop))(x, keys)) == bits(loop(drop, x, keys))
    raw_keys = jax.random.key_data(keys)
    assert bits(jax.vmap(drop)(x, raw_keys)) == bits(loop(drop, x, keys))


def test_vmap_over_keys_of_one_input_equals_a_loop():
    x = normal((6, 5))
    keys = jax.random.split(jax.random.key(4), 3)
    batched = jax.vmap(lambda key: fdj.dropout(x, RATE, key))(keys)
    assert bits(batched) == bits(loop(lambda key: fdj.dropout(x, RATE, key), keys))
    assert len({bits(member) for member in np.asarray(batched)}) == 3


def test_vmap_with_one_key_gives_every_member_its_mask():
    x = normal((3, 40))
    key = jax.random.key(6)
    batched = np.asarray(jax.vmap(lambda x: fdj.dropout(x, RATE, key))(x))
    assert bits(batched) == bits(loop(lambda x: fdj.dropout(x, RATE, key), x))
    kept = batched != 0
    assert (kept == kept[0]).all()


def test_nested_vmap_with_keys_batched_on_the_outer_axis():
    x = normal((3, 4, 8))
    keys = jax.random.split(jax.random.key(12), 3)

    def drop(x, key):
        return fdj.dropout(x, RATE, key)

    nested = jax.vmap(jax.vmap(drop, in_axes=(0, None)), in_axes=(0, 0))(x, keys)
    looped = np.stack([loop(lambda row: drop(row, keys[i]), x[i]) for i in range(3)])
    assert bits(nested) == bits(looped)


def test_vmap_of_grad_equals_a_loop():
    x, upstream = normal((5, 12)), normal((5, 12), seed=2)
    keys = jax.random.split(jax.random.key(13), 5)

    def gradient(x, upstream, key):
        return jax.grad(lambda x: jnp.sum(fdj.dropout(x, RATE, key) * upstream))(x)

    assert bits(jax.jit(jax.vmap(gradient))(x, upstream, keys)) == \
        bits(loop(gradient, x, upstream, keys))


# ---------------------------------------------------------------------------------------------
# key_to_seed
# ---------------------------------------------------------------------------------------------

def test_key_to_seed_is_the_seed_of_jax_random_key(x64):
    for seed in (0, 1, 2**32 - 1, 2**32, 2**63 - 1):
        assert fdj.key_to_seed(jax.random.key(seed)) == seed
    assert fdj.key_to_seed(jax.random.key(-1)) == 2**64 - 1  # (JAX takes -1 as 2**64 - 1)


def test_key_to_seed_is_deterministic_and_distinct():
    keys = jax.random.split(jax.random.key(0), 2000)
    seeds = [fdj.key_to_seed(key) for key in keys]
    assert seeds == [fdj.key_to_seed(key) for key in keys]
    assert len(set(seeds)) == len(seeds)
    assert len({fdj.key_to_seed(jax.random.fold_in(keys[0], i)) for i in range(100)}) == 100


def test_key_to_seed_refuses_traced_and_foreign_keys():
    with pytest.raises(TypeError, match="concrete key"):
        jax.jit(fdj.key_to_seed)(jax.random.key(0))
    with pytest.raises(TypeError, match="threefry2x32"):
        fdj.key_to_seed(jax.random.key(0, impl="rbg"))
    for key in (jnp.zeros(3, jnp.uint32), jnp.zeros(2, jnp.int32), 7,
                jax.random.split(jax.random.key(0), 2)):
        with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
            fdj.key_to_seed(key)


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), 1 - 2**-40])
def test_bad_rates(rate):
    with pytest.raises(ValueError, match="rate"):
        fdj.dropout(normal((4,)), rate, jax.random.key(0))


def test_rate_must_be_a_concrete_number():
    x, key = normal((4,)), jax.random.key(0)
    with pytest.raises(TypeError, match="rate"):
        fdj.dropout(x, True, key)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(fdj.dropout)(x, 0.5, key)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool", "complex64"])
def test_bad_dtypes(dtype):
    with pytest.raises(TypeError, match=f"x has dtype {dtype}"):
        fdj.dropout(jnp.zeros(4, dtype), 0.5, jax.random.key(0))


def test_bad_mode_axes_and_key():
    x, key = normal((4, 3)), jax.random.key(0)
    with pytest.raises(ValueError, match="mode"):
        fdj.dropout(x, 0.5, key, mode="gaussian")
    with pytest.raises(ValueError, match="shared_axes"):
        fdj.dropout(x, 0.5, key, shared_axes=2)
    with pytest.raises(ValueError, match="more than once"):
        fdj.dropout(x, 0.5, key, shared_axes=(0, -2))
    with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
        fdj.dropout(x, 0.5, jax.random.split(key, 2))


def test_other_platforms_are_refused(monkeypatch):
    """Under tracing the array has no device: the default backend is where it will run."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="runs on the CPU; x is on gpu"):
        jax.make_jaxpr(lambda x: fdj.dropout(x, 0.5, jax.random.key(0)))(normal((4,)))


@pytest.mark.parametrize("device", ["cpu", "device"])
def test_a_cpu_default_device_is_served_under_tracing(device, monkeypatch):
    """The refusal's own advice: jax.default_device puts a traced computation on the CPU even
    where the default backend is another platform, so the trace is served."""
    x = normal((4,))
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with jax.default_device(jax.devices("cpu")[0] if device == "device" else "cpu"):
        assert route_of(lambda x: fdj.dropout(x, 0.5, jax.random.key(0)), x) == "ffi"


def test_docstring_examples():
    results = doctest.testmod(fdj)
    assert results.attempted > 0 and results.failed == 0


# ---------------------------------------------------------------------------------------------
# Routes: the C core's XLA FFI handler where XLA takes it (here), else pure_callback
# ---------------------------------------------------------------------------------------------

SRC = pathlib.Path(__file__).resolve().parents[1] / "src_c"


def route_of(function, *args) -> str:
    """Which route the kernels of function(*args) take, read from its jaxpr."""
    text = str(jax.make_jaxpr(function)(*args))
    ffi, callback = "target_name=fastdrop_dropout" in text, "pure_callback" in text
    assert ffi != callback, text
    return "ffi" if ffi else "callback"


@pytest.fixture
def callback_route(monkeypatch):
    monkeypatch.setattr(fdj, "_preferred_route", "callback")


def test_the_ffi_route_is_taken_here():
    x, key = normal((8, 3)), jax.random.key(0)
    assert fdj._route() == "ffi"
    assert route_of(lambda x: fdj.dropout(x, RATE, key), x) == "ffi"
    gradient = jax.make_jaxpr(jax.grad(lambda x: fdj.dropout(x, RATE, key).sum()))(x)
    assert str(gradient).count("target_name=fastdrop_dropout") >= 2  # forward and backward


def runs(x, key):
    """Calls that cover each way into the kernels: eager, jit with shared axes and alpha
    dropout, grad, vmap over keys, over inputs, over both with shared axes, and over keys on the
    inner of two batch axes only.  Built anew on
    each call, so that no trace is reused from another route."""
    keys = jax.random.split(key, x.shape[0])
    weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape).astype(x.dtype)
    return {
        "eager": fdj.dropout(x, RATE, key),
        "jit": jax.jit(lambda x: fdj.dropout(x, RATE, key, shared_axes=0, mode="alpha"))(x),
        "grad": jax.grad(lambda x: jnp.sum(fdj.dropout(x, RATE, key, mode="classic")
                                           * weights).astype(jnp.float32))(x),
        "vmap keys": jax.vmap(lambda key: fdj.dropout(x[0], RATE, key))(keys),
        "vmap inputs": jax.jit(jax.vmap(lambda row: fdj.dropout(row, RATE, key)))(x),
        "vmap both": jax.vmap(lambda row, key: fdj.dropout(row, RATE, key, shared_axes=-1))(
            x, keys),
        "nested vmap, keys inside": jax.vmap(
            jax.vmap(lambda row, key: fdj.dropout(row, RATE, key)), in_axes=(0, None))(
                x, jax.random.split(key, x.shape[1])),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_callback_route_gives_the_ffi_routes_bits(dtype, x64, monkeypatch):
    x, key = normal((4, 6, 5), dtype), jax.random.key(21)
    on_ffi = runs(x, key)
    monkeypatch.setattr(fdj, "_preferred_route", "callback")
    assert route_of(lambda x: fdj.dropout(x, RATE, key), x) == "callback"
    on_callback = runs(x, key)
    assert bits(on_callback["eager"]) == bits(expected(x, RATE, key)[0])
    for name, result in on_ffi.items():
        assert bits(on_callback[name]) == bits(result), name


def test_the_route_can_be_chosen_by_the_environment(tmp_path):
    script = ("import jax, fastdrop.jax as fdj\n"
              "x, key = jax.numpy.ones(5), jax.random.key(0)\n"
              "print(fdj._route(), 'pure_callback' in str(jax.make_jaxpr("
              "lambda x: fdj.dropout(x, 0.5, key))(x)))\n")
    environment = {**os.environ, "FASTDROP_JAX_ROUTE": "callback"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["callback", "True"]


def test_an_unknown_route_is_refused(monkeypatch):
    monkeypatch.setattr(fdj, "_preferred_route", "gpu")
    with pytest.raises(ValueError, match="FASTDROP_JAX_ROUTE must be one of ffi, callback"):
        fdj.dropout(normal((4,)), RATE, jax.random.key(0))


def _compiler_or_skip():
    if not SRC.is_dir():
        pytest.skip(f"{SRC} is not here (tests run outside the source tree)")
    if shutil.which(COMPILER) is None:
        pytest.skip(f"no C compiler ({COMPILER!r} not found)")


COMPILER = os.environ.get("CC", "cc")


def test_the_handlers_declarations_have_xla_ffis_layout(tmp_path):
    """fd_xla_ffi.c declares the structures of XLA's FFI C ABI itself; compiled next to the
    header jaxlib ships (xla/ffi/api/c_api.h), every field it reads sits at the same offset and
    has the same size, and the API version it reports is one the header's XLA serves."""
    _compiler_or_skip()
    header = pathlib.Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
    if not header.exists():
        pytest.skip(f"jaxlib ships no FFI header here ({header})")
    fields = {
        "fd_xla_extension": ("XLA_FFI_Extension_Base", ["struct_size", "type", "next"]),
        "fd_xla_api_version": ("XLA_FFI_Api_Version", ["struct_size", "extension_start",
                                                       "major_version", "minor_version"]),
        "fd_xla_metadata": ("XLA_FFI_Metadata", ["struct_size", "api_version", "traits"]),
        "fd_xla_metadata_extension": ("XLA_FFI_Metadata_Extension", ["extension_base",
                                                                     "metadata"]),
        "fd_xla_error_create_args": ("XLA_FFI_Error_Create_Args", ["struct_size",
                                                                   "extension_start",
                                                                   "message", "errc"]),
        "fd_xla_buffer": ("XLA_FFI_Buffer", ["struct_size", "extension_start", "dtype", "data",
                                             "rank", "dims"]),
        "fd_xla_byte_span": ("XLA_FFI_ByteSpan", ["ptr", "len"]),
        "fd_xla_scalar": ("XLA_FFI_Scalar", ["dtype", "value"]),
        "fd_xla_attrs": ("XLA_FFI_Attrs", ["struct_size", "extension_start", "size", "types",
                                           "names", "attrs"]),
        "fd_xla_call_frame": ("XLA_FFI_CallFrame", ["struct_size", "extension_start", "api",
                                                    "ctx", "stage", "args", "rets", "attrs"]),
    }
    renamed = {("fd_xla_api", "error_create"): "XLA_FFI_Error_Create"}
    checks = [f"CHECK({ours}, {field}, {theirs}, {field})"
              for ours, (theirs, names) in fields.items() for field in names]
    checks += [f"CHECK(fd_xla_list, {field}, XLA_FFI_{kind}, {theirs})"
               for kind, items in (("Args", "args"), ("Rets", "rets"))
               for field, theirs in (("struct_size", "struct_size"), ("size", "size"),
                                     ("types", "types"), ("items", items))]
    checks += [f"CHECK(fd_xla_api, {field}, XLA_FFI_Api, {field})"
               for field in ("struct_size", "api_version")]
    checks += [f"CHECK({ours}, {field}, XLA_FFI_Api, {theirs})"
               for (ours, field), theirs in renamed.items()]
    constants = [("FD_XLA_EXTENSION_METADATA", "XLA_FFI_Extension_Metadata"),
                 ("FD_XLA_ERROR_INVALID_ARGUMENT", "XLA_FFI_Error_Code_INVALID_ARGUMENT"),
                 ("FD_XLA_ERROR_INTERNAL", "XLA_FFI_Error_Code_INTERNAL"),
                 ("FD_XLA_F16", "XLA_FFI_DataType_F16"), ("FD_XLA_F32", "XLA_FFI_DataType_F32"),
                 ("FD_XLA_F64", "XLA_FFI_DataType_F64"), ("FD_XLA_BF16", "XLA_FFI_DataType_BF16"),
                 ("FD_XLA_U32", "XLA_FFI_DataType_U32"), ("FD_XLA_S32", "XLA_FFI_DataType_S32"),
                 ("FD_XLA_U64", "XLA_FFI_DataType_U64"), ("FD_XLA_BUFFER", "XLA_FFI_ArgType_BUFFER"),
                 ("FD_XLA_BUFFER", "XLA_FFI_RetType_BUFFER"),
                 ("FD_XLA_ATTR_SCALAR", "XLA_FFI_AttrType_SCALAR"),
                 ("FD_XLA_STAGE_EXECUTE", "XLA_FFI_ExecutionStage_EXECUTE"),
                 ("FD_XLA_FFI_API_MAJOR", "XLA_FFI_API_MAJOR")]
    source = tmp_path / "layout.c"
    source.write_text(
        '#include "fd_xla_ffi.c"\n#include "xla/ffi/api/c_api.h"\n'
        "#define CHECK(ours, field, theirs, their_field) \\\n"
        "    _Static_assert(offsetof(ours, field) == offsetof(theirs, their_field) && \\\n"
        "                   sizeof(((ours *)0)->field) == sizeof(((theirs *)0)->their_field), \\\n"
        '                   #ours "." #field);\n'
        + "".join(f"{check}\n" for check in checks)
        + "".join(f'_Static_assert({ours} == {theirs}, "{ours}");\n' for ours, theirs in constants)
        # (a newer minor version of the header only adds to what the handler reads)
        + '_Static_assert(FD_XLA_FFI_API_MINOR <= XLA_FFI_API_MINOR, "minor version");\n')
    result = subprocess.run([COMPILER, "-std=c11", "-fsyntax-only", f"-I{SRC}",
                             f"-I{jax.ffi.include_dir()}", str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


class _ApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major_version", ctypes.c_int), ("minor_version", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _ApiVersion),
                ("traits", ctypes.c_uint32), ("state_type_id", ctypes.c_int64)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int),
                ("next", ctypes.c_void_p), ("metadata", ctypes.POINTER(_Metadata))]


class _MetadataCallFrame(ctypes.Structure):
    # (the call frame's other fields: a metadata query leaves them zero)
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("extension_start", ctypes.POINTER(_MetadataExtension)),
                ("rest", ctypes.c_char * 256)]


def test_the_handler_reports_the_oldest_ffi_version_its_layout_follows():
    """XLA refuses a handler whose FFI API minor version is above its own, and jaxlib 0.5 to
    0.7 serve 0.1.  The fields the handler reads are laid out alike in every 0.x from 0.1 (later
    minor versions only append), so it reports 0.1, which this jaxlib (0.3) serves too: the
    version asked the way XLA asks it when it registers a handler."""
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                  ctypes.c_char_p]
    handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(
        get_pointer(fastdrop._core.xla_ffi_handler(), None))
    metadata = _Metadata(struct_size=ctypes.sizeof(_Metadata))
    extension = _MetadataExtension(struct_size=ctypes.sizeof(_MetadataExtension), type=1,
                                   metadata=ctypes.pointer(metadata))
    frame = _MetadataCallFrame(struct_size=ctypes.sizeof(_MetadataCallFrame),
                               extension_start=ctypes.pointer(extension))
    assert handler(ctypes.addressof(frame)) is None
    version = metadata.api_version
    assert (version.major_version, version.minor_version) == (0, 1)
    assert fdj._ffi_registered()


def test_xla_refuses_a_foreign_version_and_the_callback_route_serves(tmp_path, monkeypatch):
    """XLA checks the FFI API version a handler reports when it registers it: a build of the
    handler that reports a foreign major version is refused, and fastdrop.jax then takes the
    pure_callback route, with the same results."""
    _compiler_or_skip()
    library = tmp_path / "libforeign.so"
    build = subprocess.run([COMPILER, "-std=c11", "-O1", "-shared", "-fPIC",
                            "-DFD_XLA_FFI_API_MAJOR=1", f"-I{SRC}",
                            *sorted(str(p) for p in SRC.glob("fd_*.c")), "-o", str(library)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    foreign = jax.ffi.pycapsule(ctypes.CDLL(str(library)).fd_xla_ffi_dropout)
    jax.devices("cpu")  # (registration with a running backend raises at once)
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"API version \(1\.\d+\)"):
        jax.ffi.register_ffi_target("fastdrop_foreign", foreign, platform="cpu")

    x, key = normal((7, 9)), jax.random.key(5)
    on_ffi = fdj.dropout(x, RATE, key)
    monkeypatch.setattr(fdj, "xla_ffi_handler", lambda: foreign)
    fdj._ffi_registered.cache_clear()
    try:
        assert fdj._route() == "callback"
        assert route_of(lambda x: fdj.dropout(x, RATE, key), x) == "callback"
        assert bits(fdj.dropout(x, RATE, key)) == bits(on_ffi)
    finally:
        fdj._ffi_registered.cache_clear()  # the next call registers the real handler again
