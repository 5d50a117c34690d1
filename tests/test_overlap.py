"""Which arrays may share memory in a call (SPEC §6; issue 13, items 7, 8, 9 and 12).

- out= (or x / dy written in place) must have distinct elements: with a zero or overlapping
  stride the result depends on the order of the writes, which threads do not fix.
- out= is x itself (the same elements: strides along axes of one element do not matter) or shares
  no memory with it.
- backward's out= must not overlap the mask's stored bits, which it reads as it writes.
- telling whether two views share memory is bounded work: what cannot be told cheaply is refused.
A read-only x whose elements overlap (a broadcast input) is served: only what is written must be
distinct.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

import fastdrop
from fastdrop import _core, reference

IMPLEMENTATIONS = [pytest.param(fastdrop, id="fastdrop"), pytest.param(reference, id="reference")]


def data(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Item 8: elements that overlap each other
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_out_with_a_zero_stride_is_refused(impl):
    """out= that broadcasts one float over 10**5 elements (threads would race on it) is
    refused, naming the strides, and nothing is written."""
    cell = np.full(1, 7.0, np.float32)
    out = as_strided(cell, shape=(10**5,), strides=(0,))
    with pytest.raises(ValueError, match=r"out has elements that share memory.*\(0,\)"):
        impl.dropout(data(10**5), 0.5, seed=1, out=out)
    assert cell[0] == 7.0


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_in_place_on_overlapping_rows_is_refused(impl):
    """Rows of 8 that start every 4 elements share half their memory: in place on them is
    refused (the result would depend on which row is written last)."""
    buffer = data(4 * 99 + 8)
    x = as_strided(buffer, shape=(100, 8), strides=(16, 4))
    before = buffer.copy()
    with pytest.raises(ValueError, match="x, written in place, has elements that share memory"):
        impl.dropout(x, 0.5, seed=1, out=x)
    with pytest.raises(ValueError, match="dy, written in place, has elements that share memory"):
        impl.dropout_backward(x, fastdrop.dropout(np.ones((100, 8)), 0.5, seed=1)[1], out=x)
    np.testing.assert_array_equal(buffer, before)


def test_broadcast_input_is_served():
    """A read-only x whose elements overlap (broadcast_to) is only read: served, and equal to
    dropout of its copy."""
    row = data(8)
    x = np.broadcast_to(row, (500, 8))
    y, _ = fastdrop.dropout(x, 0.5, seed=1)
    np.testing.assert_array_equal(y, fastdrop.dropout(np.ascontiguousarray(x), 0.5, seed=1)[0])


def element_byte_ranges_are_distinct(a: np.ndarray) -> bool:
    """Brute force: no two elements of `a` share a byte."""
    if a.size == 0:
        return True
    offsets = np.zeros(1, dtype=np.int64)
    for n, stride in zip(a.shape, a.strides):
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * stride).ravel()
    offsets.sort()
    return bool(np.all(np.diff(offsets) >= a.itemsize))


def accepted_as_out(a: np.ndarray) -> bool:
    try:
        _core.check_out(a, np.empty(a.shape, a.dtype), "x")
    except ValueError as error:
        assert "share memory" in str(error)
        return False
    return True


@given(shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       strides=st.lists(st.integers(-20, 20), min_size=4, max_size=4),
       itemsize=st.sampled_from([2, 4, 8]))
def test_accepted_outs_have_distinct_elements(shape, strides, itemsize):
    """Any aligned strides: an out= that the check accepts has no two elements sharing a byte,
    and one whose extent-1 axes are dropped is judged the same."""
    strides = [s * itemsize for s in strides[:len(shape)]]
    dtype = {2: np.float16, 4: np.float32, 8: np.float64}[itemsize]
    buffer = np.zeros(4096, dtype=np.uint8)
    start = 2048 - 2048 % itemsize
    a = as_strided(buffer[start:].view(dtype), shape=shape, strides=strides)
    accepted = accepted_as_out(a)
    if accepted:
        assert element_byte_ranges_are_distinct(a)
    squeezed = as_strided(a, shape=[n for n in shape if n != 1],
                          strides=[s for n, s in zip(shape, strides) if n != 1])
    assert accepted_as_out(squeezed) == accepted


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), data_=st.data())
def test_views_numpy_makes_are_accepted(shape, data_):
    """Slices with steps, reversals and transposes of a fresh array always pass."""
    a = np.zeros([n * 3 for n in shape], dtype=np.float32)
    index = tuple(slice(data_.draw(st.integers(0, 2)), None,
                        data_.draw(st.sampled_from([1, 2, 3, -1, -2]))) for _ in shape)
    view = a[index].transpose(data_.draw(st.permutations(range(len(shape)))))
    assert accepted_as_out(view)


# ---------------------------------------------------------------------------------------------
# Item 12: the same memory with other strides along axes of one element is in place
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("other_stride", [0, 4, 1200, -8])
def test_same_view_up_to_extent_one_strides_is_in_place(impl, other_stride):
    """out= with x's memory and strides, but another stride along x's axis of one element,
    is x: served in place, equal to the out-of-place result."""
    x = data((40, 1, 30))
    expected, _ = reference.dropout(x, 0.5, seed=2)
    out = as_strided(x, strides=(x.strides[0], other_stride, x.strides[2]))
    y, _ = impl.dropout(x, 0.5, seed=2, out=out)
    assert y is out
    np.testing.assert_array_equal(x, expected)


def test_partial_overlap_is_still_refused():
    x = data(1000)
    with pytest.raises(ValueError, match="out overlaps x without being the same view"):
        fastdrop.dropout(x[:-1], 0.5, seed=1, out=x[1:])


# ---------------------------------------------------------------------------------------------
# Item 7: backward's out= and the stored bits
# ---------------------------------------------------------------------------------------------

N = 4096


@pytest.fixture
def stored():
    """A float32 mask of N decisions whose bits (N / 8 bytes) live in the first bytes of
    `memory`, a float32 buffer of N elements."""
    x = data(N)
    _, mask = fastdrop.dropout(x, 0.5, seed=9, store="bits")
    memory = np.zeros(N, np.float32)
    memory.view(np.uint8)[:N // 8] = mask.bits
    mask.bits = memory.view(np.uint8)[:N // 8]
    return mask, memory


def test_in_place_gradient_over_the_bits_is_refused(stored):
    """dy written in place over the bits it is masked by is refused: writing the first
    gradients would change the decisions of the later ones."""
    mask, memory = stored
    memory[N // 32:] = data(N - N // 32, seed=3)
    before = memory.copy()
    with pytest.raises(ValueError, match=r"out overlaps the mask's stored bits"):
        fastdrop.dropout_backward(memory, mask, out=memory)
    np.testing.assert_array_equal(memory, before)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_out_over_the_bits_is_refused(impl, stored):
    mask, memory = stored
    dy = data(N, seed=3)
    with pytest.raises(ValueError, match=r"out overlaps the mask's stored bits"):
        impl.dropout_backward(dy, mask, out=memory)


def test_out_beside_the_bits_in_one_buffer_is_served(stored):
    """The bits and out= in one buffer but apart: served, equal to backward from the seed."""
    mask, _ = stored
    memory = np.zeros(N + N // 32, np.float32)
    memory.view(np.uint8)[:N // 8] = mask.bits
    mask.bits = memory.view(np.uint8)[:N // 8]
    dy = data(N, seed=3)
    dx = fastdrop.dropout_backward(dy, mask, out=memory[N // 32:])
    regenerated = mask.bits
    mask.bits = None
    np.testing.assert_array_equal(dx, fastdrop.dropout_backward(dy, mask))
    mask.bits = regenerated


# ---------------------------------------------------------------------------------------------
# Item 9: bounded work to tell whether two views share memory
# ---------------------------------------------------------------------------------------------

def awkward_views():
    """Two views of one buffer of 87 000 float64 that share no memory, but whose strides make
    the exact test a search of more than 16384 steps (numpy.shares_memory with max_work=16384
    gives up on them)."""
    buffer = np.zeros(87000, dtype=np.float64)
    x = as_strided(buffer, shape=(2, 6, 6, 7), strides=(8192, 5480, 13864, 20000))
    out = as_strided(buffer[2669:], shape=(2, 6, 6, 7), strides=(54824, 9320, 110160, 1192))
    return x, out


def test_the_awkward_views_are_what_they_claim():
    x, out = awkward_views()
    assert not np.shares_memory(x, out)
    with pytest.raises(Exception, match="max_work"):
        np.shares_memory(x, out, max_work=16384)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_overlap_that_cannot_be_told_cheaply_is_refused(impl):
    """Refused with a message that says why, instead of an exact search that holds the GIL for
    as long as it takes."""
    x, out = awkward_views()
    with pytest.raises(ValueError, match="cannot tell cheaply whether out and x share memory"):
        impl.dropout(x, 0.5, seed=1, out=out)
    assert not out.any()
