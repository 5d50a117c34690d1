"""pytest-benchmark suites for the peers of ``fastdrop bench`` (SPEC §7).

``pytest bench/ --benchmark-only`` times them; ``pytest bench/ --benchmark-disable`` runs each
once as a smoke check.  The peers themselves are defined once, in fastdrop.bench: `PEERS` on
10**6 elements of each dtype, `CHANNEL_PEERS` (channel dropout) on a float32 array of
`CHANNEL_SHAPE`.  Each round starts from a freshly refilled input, outside the timed region.
"""
import pytest

from fastdrop import bench

SIZE = 10**6
ROUNDS = 20


def peer_params(peers):
    return [
        pytest.param(peer, id=peer.name.replace(" ", "-"),
                     marks=pytest.mark.skipif(not peer.available(),
                                              reason=f"{peer.name}: not here"))
        for peer in peers
    ]


def time_peer(benchmark, workspace, peer, group):
    if not peer.supports(workspace.x.dtype):
        pytest.skip(f"{peer.name}: does not take {workspace.x.dtype.name}")
    benchmark.group = group
    with peer.prepare(workspace) as call:
        benchmark.pedantic(call, setup=workspace.refill, rounds=ROUNDS, warmup_rounds=1)


@pytest.fixture(scope="module", params=bench.DTYPES)
def workspace(request):
    return bench.Workspace.create(SIZE, request.param, bench.DEFAULT_KEEP_PROB)


@pytest.fixture(scope="module")
def channel_workspace():
    return bench.Workspace.create(bench.CHANNEL_SHAPE, bench.CHANNEL_DTYPE,
                                  bench.DEFAULT_KEEP_PROB)


@pytest.mark.parametrize("peer", peer_params(bench.PEERS))
def test_dropout(benchmark, workspace, peer):
    time_peer(benchmark, workspace, peer, f"{workspace.x.dtype.name} {bench.format_size(SIZE)}")


@pytest.mark.parametrize("peer", peer_params(bench.CHANNEL_PEERS))
def test_channel_dropout(benchmark, channel_workspace, peer):
    time_peer(benchmark, channel_workspace, peer,
              f"channel {bench.CHANNEL_DTYPE} {bench.format_shape(bench.CHANNEL_SHAPE)}")
