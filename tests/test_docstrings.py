"""The examples in the public docstrings run and print what they show."""
import doctest

import pytest

import fastdrop._api
import fastdrop._core


@pytest.mark.parametrize("module", [fastdrop._api, fastdrop._core], ids=lambda m: m.__name__)
def test_docstring_examples(module, restore_default_stream):
    results = doctest.testmod(module)
    assert results.attempted > 0 and results.failed == 0
