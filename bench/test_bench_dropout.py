"""pytest-benchmark suites for the peers of ``fastdrop bench`` (SPEC §7), on 10**6 elements.

``pytest bench/ --benchmark-only`` times them; ``pytest bench/ --benchmark-disable`` runs each
once as a smoke check.  The peers themselves are defined once, in fastdrop.bench.PEERS; each
round starts from a freshly refilled input, outside the timed region.
"""
import pytest

from fastdrop import bench

SIZE = 10**6
ROUNDS = 20


@pytest.fixture(scope="module", params=bench.DTYPES)
def workspace(request):
    return bench.Workspace.create(SIZE, request.param, bench.DEFAULT_KEEP_PROB)


@pytest.mark.parametrize("peer", [
    pytest.param(peer, id=peer.name.replace(" ", "-"),
                 marks=pytest.mark.skipif(not peer.available(), reason=f"{peer.name}: not here"))
    for peer in bench.PEERS
])
def test_dropout(benchmark, workspace, peer):
    benchmark.group = f"{workspace.x.dtype.name} {bench.format_size(SIZE)}"
    with peer.prepare(workspace) as call:
        benchmark.pedantic(call, setup=workspace.refill, rounds=ROUNDS, warmup_rounds=1)
