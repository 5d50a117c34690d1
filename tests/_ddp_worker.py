"""One process of the distributed test in test_torch.py (not a test module itself).

Usage: python _ddp_worker.py RANK WORLD_SIZE PORT OUTPUT.npz

Trains a small MLP with a fastdrop.torch.Dropout layer under DistributedDataParallel (gloo,
loopback) for a few steps.  Every rank seeds torch alike (torch.manual_seed(SEED) before the
steps), and the layer masks with subsequence = rank, so the ranks draw the same keys from torch's
generator but independent masks.  Writes the dropout masks of every step and the final
parameters to OUTPUT.npz for the parent test to compare across ranks and across runs.
"""
import datetime
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fastdrop
import fastdrop.torch as fdt

SEED = 1234
STEPS = 4
BATCH, FEATURES, HIDDEN = 16, 8, 32
P = 0.5


def main() -> None:
    rank, world_size, port, output = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                      sys.argv[4])
    # Two processes share the test machine's cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)
    fastdrop.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)  # the same initial weights (DDP would broadcast rank 0's anyway)
        layer = fdt.Dropout(P, subsequence=rank)
        model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.Tanh(), layer,
                                    torch.nn.Linear(HIDDEN, 1))
        masks = []
        # tanh's output is never exactly 0 here, so the zeros after dropout are its decisions.
        layer.register_forward_hook(lambda module, args, out: masks.append((out != 0).numpy()))
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        data = torch.Generator().manual_seed(100 + rank)  # each rank its own shard of data
        torch.manual_seed(SEED)  # from here on only the dropout layer draws from it
        for _ in range(STEPS):
            x = torch.randn(BATCH, FEATURES, generator=data)
            target = torch.randn(BATCH, 1, generator=data)
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(ddp(x), target)
            loss.backward()  # DDP averages the gradients over the ranks here
            optimizer.step()
        parameters = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
        np.savez(output, masks=np.stack(masks), parameters=parameters)
        # Both ranks done before either tears gloo down: a rank whose peer closed the
        # connection under it was seen to abort ("terminate called without an active
        # exception") on a loaded machine.
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
