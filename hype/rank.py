"""`python -m hype.rank INIT RANK WORLD`: one training rank that --workers started (not rank 0).

It runs in a session of its own, so a terminal's Ctrl+C reaches rank 0 only, which stops this
rank. When rank 0 dies, even by kill -9 and even before the group is up, this rank notices
that its parent is gone within a second and exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import torch.distributed as dist

from hype import distributed
from hype.train import train_worker


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)  # rank 0 is gone: nothing to train for, and a collective could wait 30 min


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    init, rank, world = argv[0], int(argv[1]), int(argv[2])
    folder = Path(unquote(urlparse(init).path)).parent  # local_group's temporary folder
    distributed.ready_file(folder, rank).touch()
    dist.init_process_group(distributed.BACKEND, init_method=init, rank=rank, world_size=world,
                            timeout=distributed.TIMEOUT)
    group = distributed.Group(rank, world)
    try:
        train_worker(group)
    finally:
        distributed.close(group)


if __name__ == "__main__":
    main(sys.argv[1:])
