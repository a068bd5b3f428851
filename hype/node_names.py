"""Node names inside a checkpoint: one uint8 tensor of NUL-separated UTF-8, not a list of str.

torch.save pickles a list of 82k strings in about 21 ms and the weights-only loader reads it
back in about 140 ms; the same names as one byte tensor take about 2 ms each way. A run saves
a checkpoint every epoch, so this is most of what saving costs beyond the embedding itself.
"""

from __future__ import annotations

import torch

SEP = "\0"  # separator; names that contain it keep the list form


def encode(names: list[str]) -> torch.Tensor | list[str]:
    """(B,) uint8 tensor; no names, or a name with a NUL in it, keep the list form."""
    if not names or any(SEP in n for n in names):
        return list(names)
    return torch.frombuffer(bytearray(SEP.join(names).encode("utf-8")), dtype=torch.uint8)


def decode(value: torch.Tensor | list[str]) -> list[str]:
    """Names as a list, from either form (checkpoints of format 1 hold the list)."""
    if isinstance(value, torch.Tensor):
        return bytes(value.numpy()).decode("utf-8").split(SEP)
    return [str(n) for n in value]
