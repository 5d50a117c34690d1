"""Shared fixtures and the hypothesis settings of fastdrop's test suite.

Profiles: "ci" (the default) keeps the property tests quick; "thorough" runs many more examples.
Pick one with the HYPOTHESIS_PROFILE environment variable.
"""
import os

import pytest
from hypothesis import settings

import fastdrop
from fastdrop import _core

settings.register_profile("ci", deadline=None, max_examples=60, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def restore_threads():
    """Restores fastdrop's thread count after a test that changes it."""
    before = fastdrop.get_num_threads()
    yield before
    fastdrop.set_num_threads(before)


@pytest.fixture
def restore_default_stream():
    """Restores the default stream's seed, subsequence and position after a test that moves it."""
    stream = fastdrop.default_stream()
    seed, subsequence, position = stream.seed, stream.subsequence, stream.position
    yield stream
    stream.manual_seed(seed, subsequence)
    stream.reserve(position)


@pytest.fixture(scope="module", params=_core.simd_paths())
def every_simd_path(request):
    """Runs each test of a module once per SIMD path this machine supports (every path must give
    the same bits), restoring the path chosen at import afterwards."""
    before = _core.simd_path()
    _core.set_simd_path(request.param)
    yield request.param
    _core.set_simd_path(before)
