"""Philox4x32-10, the generator under every decision (SPEC §3).

Two implementations are checked: the C one (`fastdrop._core.philox_words`) and the pure-NumPy one
(`fastdrop.reference`).  Both must reproduce Random123's known-answer vectors and agree word for
word with the third-party `randomgen` package, including where the 128-bit counter carries from one
32-bit word into the next: at block 2**32 (word 0 -> word 1), at block 2**64 (the block index ->
the subsequence words) and at 2**128 (the whole counter wraps).
"""
from pathlib import Path

import numpy as np
import pytest
import randomgen

from fastdrop import _core, reference

KAT_PATH = Path(__file__).parent / "data" / "philox4x32_10_kat.txt"


def _kat_vectors():
    """(counter words, key words, output words) of every known-answer line."""
    vectors = []
    for line in KAT_PATH.read_text().splitlines():
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        assert fields[:2] == ["philox4x32", "10"], line
        words = [int(f, 16) for f in fields[2:]]
        assert len(words) == 10, line
        vectors.append((words[0:4], words[4:6], words[6:10]))
    return vectors


KAT = _kat_vectors()


def randomgen_words(seed: int, subsequence: int, first_block: int, nblocks: int) -> np.ndarray:
    """Words of blocks first_block, ... of (seed, subsequence) from randomgen, as uint32.

    randomgen adds 1 to its counter before each block, so it starts at counter C - 1, where
    C = first_block + 2**64 * subsequence is taken modulo 2**128.
    """
    counter = (first_block + 2**64 * subsequence) % 2**128
    gen = randomgen.Philox(key=seed, counter=(counter - 1) % 2**128, number=4, width=32)
    return gen.random_raw(4 * nblocks).astype(np.uint32)


def test_kat_file_holds_the_three_random123_vectors():
    """The data file is the one SPEC §3 names: three vectors, the first the all-zero one."""
    assert len(KAT) == 3
    assert KAT[0][0] == [0, 0, 0, 0] and KAT[0][1] == [0, 0]
    assert KAT[1][0] == [0xFFFFFFFF] * 4 and KAT[1][1] == [0xFFFFFFFF] * 2


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_c_philox_reproduces_known_answers(ctr, key, expected):
    """The C generator gives Random123's outputs: wrong multipliers, Weyl constants, round count,
    word order or key/counter packing all change these words."""
    seed = key[0] | key[1] << 32
    block = ctr[0] | ctr[1] << 32
    high = ctr[2] | ctr[3] << 32
    words = _core.philox_words(seed, high, block, 1)
    assert words.dtype == np.uint32
    assert words.tolist() == expected


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_reference_philox_reproduces_known_answers(ctr, key, expected):
    """The NumPy reference gives Random123's outputs, both through philox4x32_10 and through
    philox_words with the counter split into (block, subsequence)."""
    seed = key[0] | key[1] << 32
    out = reference.philox4x32_10(np.array([ctr], dtype=np.uint64), seed)
    assert out.shape == (1, 4)
    assert out[0].tolist() == expected
    block = ctr[0] | ctr[1] << 32
    high = ctr[2] | ctr[3] << 32
    assert reference.philox_words(seed, high, block, 1).tolist() == expected


def test_randomgen_oracle_reproduces_known_answers():
    """The oracle itself (and the counter - 1 convention used to drive it) is right, so that
    agreement with it below means something."""
    for ctr, key, expected in KAT:
        counter = sum(w << (32 * i) for i, w in enumerate(ctr))
        seed = key[0] | key[1] << 32
        assert randomgen_words(seed, counter >> 64, counter % 2**64, 1).tolist() == expected


# (seed, subsequence, first_block, nblocks): 4 * sum(nblocks) > 10**5 words in all.
RANGES = [
    pytest.param(0, 0, 0, 8192, id="key0-start"),
    pytest.param(1, 0, 2**32 - 3000, 6000, id="key1-carry-word0-into-word1"),
    pytest.param(2**32 - 1, 7, 2**33 - 1000, 2000, id="keylow-carry-at-2**33"),
    pytest.param(2**63 + 12345, 2**63 - 1, 2**64 - 5, 10, id="carry-into-subsequence"),
    pytest.param(2**63 + 12345, 2**63, 123456789, 4096, id="subsequence-2**63"),
    pytest.param(2**64 - 1, 2**64 - 1, 0, 4096, id="all-ones-key-and-high"),
    pytest.param(2**64 - 1, 2**64 - 1, 2**64 - 5, 10, id="counter-wraps-2**128"),
    pytest.param(2**64 - 1, 2**32 - 1, 2**64 - 1500, 3000, id="carry-high-word2-into-word3"),
    pytest.param(0xDEADBEEFCAFEF00D, 3, 0xFFFFFFFF00000000 - 2, 4, id="carry-word1"),
]


@pytest.mark.parametrize("seed, subsequence, first_block, nblocks", RANGES)
def test_c_philox_matches_randomgen(seed, subsequence, first_block, nblocks):
    """The C words equal randomgen's word for word, across every carry of the 128-bit counter."""
    expected = randomgen_words(seed, subsequence, first_block, nblocks)
    words = _core.philox_words(seed, subsequence, first_block, nblocks)
    assert words.shape == (4 * nblocks,)
    np.testing.assert_array_equal(words, expected)


@pytest.mark.parametrize("seed, subsequence, first_block, nblocks", RANGES)
def test_reference_philox_matches_randomgen(seed, subsequence, first_block, nblocks):
    """The NumPy reference's words equal randomgen's word for word, across the same carries."""
    expected = randomgen_words(seed, subsequence, first_block, nblocks)
    words = reference.philox_words(seed, subsequence, first_block, nblocks)
    assert words.shape == (4 * nblocks,)
    np.testing.assert_array_equal(words, expected.astype(np.uint64))


def test_total_words_checked_is_at_least_1e5():
    """Keeps the agreement tests above honest about their size."""
    assert sum(4 * p.values[3] for p in RANGES) >= 10**5


def test_random_counters_and_keys_match_randomgen():
    """Arbitrary 128-bit counters and 64-bit keys (every word random): reference.philox4x32_10
    on a counter array and the C generator agree with randomgen block by block."""
    rng = np.random.default_rng(20240611)
    for _ in range(64):
        seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        words = [int(w) for w in rng.integers(0, 2**32, size=4, dtype=np.uint64)]
        counter = sum(w << (32 * i) for i, w in enumerate(words))
        expected = randomgen_words(seed, counter >> 64, counter % 2**64, 2).tolist()
        ref = reference.philox4x32_10(np.array([words], dtype=np.uint64), seed)
        assert ref[0].tolist() == expected[:4]
        c = _core.philox_words(seed, counter >> 64, counter % 2**64, 2)
        assert c.tolist() == expected


def test_key_words_and_counter_words_are_not_interchangeable():
    """Swapping the key halves, or the block and subsequence, changes the output: the packing of
    seed and counter into words is really what SPEC §3 says (checked against randomgen)."""
    seed = 0x0000000100000002
    swapped = 0x0000000200000001
    a = _core.philox_words(seed, 0, 5, 1)
    assert not np.array_equal(a, _core.philox_words(swapped, 0, 5, 1))
    assert not np.array_equal(a, _core.philox_words(seed, 5, 0, 1))
    np.testing.assert_array_equal(a, randomgen_words(seed, 0, 5, 1))
    np.testing.assert_array_equal(_core.philox_words(seed, 5, 0, 1),
                                  randomgen_words(seed, 5, 0, 1))
