"""`python -m hype.rank INIT RANK WORLD`: one training rank that --workers started (not rank 0).

Ctrl+C reaches the terminal's whole process group: rank 0 handles it and stops this rank, so
SIGINT is ignored here. When rank 0 dies, the next collective fails and this rank exits.
"""

from __future__ import annotations

import signal
import sys

import torch.distributed as dist

from hype import distributed
from hype.train import train_worker


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init, rank, world = argv[0], int(argv[1]), int(argv[2])
    dist.init_process_group(distributed.BACKEND, init_method=init, rank=rank, world_size=world,
                            timeout=distributed.TIMEOUT)
    group = distributed.Group(rank, world)
    try:
        train_worker(group)
    finally:
        distributed.close(group)


if __name__ == "__main__":
    main(sys.argv[1:])
