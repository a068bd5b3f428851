"""Checkpoint file names: how we write them, and which names we recognise as ours.

Two formats are recognised:

- ``<model>_epoch<NNNN>.pth``: ours. The epoch is zero-padded to 4 digits (more when needed) so
  that MLflow's artifact browser, which sorts names as text, lists checkpoints in epoch order.
  Unpadded names (``m_epoch7.pth``) are recognised too.
- ``<model>.pth.<N>``: the original poincare-embeddings writes checkpoints this way.

``<model>.pth`` is the final model. It has no epoch, so it is never a checkpoint, and nothing
that rotates checkpoints may touch it; ``is_final_model_name`` tells it apart.

Parsing is deliberately strict: anything that could be a temporary file, a path, or someone
else's file (``x_epoch3.pth.tmp``, ``notes_epoch3.txt``, ``../m_epoch3.pth``) is not ours and
parses to None, because the callers delete what parses.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Format = Literal["epoch", "poincare"]

# Width of the zero-padded epoch: epochs 0..9999 list in order when sorted as text. Past 9999
# the name grows to 5+ digits and the text order breaks ("m_epoch10000" < "m_epoch9999"); only
# the UI's listing suffers, since retention orders by the epoch number, never by name text.
EPOCH_DIGITS = 4

# [0-9], not \d: \d also matches other scripts' digits ("٣"), which int() accepts but which
# we never write. fullmatch, not $: $ would accept a trailing newline.
_EPOCH_RE = re.compile(r"(?P<model>.+)_epoch(?P<epoch>[0-9]+)\.pth", re.DOTALL)
_POINCARE_RE = re.compile(r"(?P<model>.+)\.pth\.(?P<epoch>[0-9]+)", re.DOTALL)
_FINAL_RE = re.compile(r"(?P<model>.+)\.pth", re.DOTALL)
# A model name ending like this would make its final name read as a checkpoint of another model.
_EPOCH_SUFFIX_RE = re.compile(r".*_epoch[0-9]+", re.DOTALL)


@dataclass(frozen=True)
class ParsedName:
    model: str  # the model name, exactly as written in the file name
    epoch: int  # the epoch number, leading zeros dropped
    format: Format  # "epoch" for <model>_epoch<N>.pth, "poincare" for <model>.pth.<N>


def model_name_problem(model: str) -> str | None:
    """Why ``model`` cannot be part of a checkpoint name, or None when it can.

    Unicode, spaces, dots and underscores are fine. Rejected: empty or blank names, path
    separators, ``..`` anywhere (so no name can climb out of its folder, even after some other
    tool joins it to a path), and control characters (a newline would forge lines in reports).
    """
    if not isinstance(model, str):
        return f"model name must be a string, got {type(model).__name__}"
    if not model.strip():
        return "model name is empty"
    if "/" in model or "\\" in model:
        return f"model name {model!r} contains a path separator"
    if ".." in model:
        return f"model name {model!r} contains '..'"
    if any(unicodedata.category(c) == "Cc" for c in model):
        return f"model name {model!r} contains a control character"
    return None


def _check_model(model: str) -> None:
    problem = model_name_problem(model)
    if problem is not None:
        raise ValueError(problem)


def checkpoint_name(model: str, epoch: int) -> str:
    """``<model>_epoch<NNNN>.pth``: ``checkpoint_name("mammals", 7) == "mammals_epoch0007.pth"``."""
    _check_model(model)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    return f"{model}_epoch{epoch:0{EPOCH_DIGITS}d}.pth"


def final_name(model: str) -> str:
    """``<model>.pth``: the final model, which retention never deletes."""
    _check_model(model)
    if _EPOCH_SUFFIX_RE.fullmatch(model):
        # "m_epoch3" + ".pth" == checkpoint_name("m", 3): the final model would be rotated away.
        raise ValueError(
            f"model name {model!r} ends like a checkpoint (_epoch<N>); "
            f"its final file would be read as a checkpoint of {model.rsplit('_epoch', 1)[0]!r}"
        )
    return f"{model}.pth"


def parse_checkpoint_name(name: str) -> ParsedName | None:
    """The model and epoch a checkpoint file name encodes, or None if the name is not one of ours.

    >>> parse_checkpoint_name("my model_v2_epoch0003.pth")
    ParsedName(model='my model_v2', epoch=3, format='epoch')
    >>> parse_checkpoint_name("mammals.pth.12")
    ParsedName(model='mammals', epoch=12, format='poincare')
    >>> parse_checkpoint_name("mammals.pth") is None  # the final model: see is_final_model_name
    True
    """
    if not isinstance(name, str):
        return None
    for fmt, pattern in (("epoch", _EPOCH_RE), ("poincare", _POINCARE_RE)):
        m = pattern.fullmatch(name)
        if m is None:
            continue
        model = m.group("model")
        if model_name_problem(model) is not None:
            return None
        return ParsedName(model=model, epoch=int(m.group("epoch")), format=fmt)
    return None


def is_final_model_name(name: str) -> bool:
    """True for ``<model>.pth`` unless it is also a checkpoint name (``m_epoch3.pth`` is not)."""
    if not isinstance(name, str) or parse_checkpoint_name(name) is not None:
        return False
    m = _FINAL_RE.fullmatch(name)
    if m is None or model_name_problem(m.group("model")) is not None:
        return False
    # "_epoch3.pth": no model "" has checkpoints, and final_name("_epoch3") is refused
    return _EPOCH_SUFFIX_RE.fullmatch(m.group("model")) is None


def final_model_of(name: str) -> str | None:
    """The model name of a final-model file name, or None."""
    return _FINAL_RE.fullmatch(name).group("model") if is_final_model_name(name) else None


def looks_like_checkpoint(name: str) -> bool:
    """True for names a person may take for a checkpoint that do not parse as one
    (``a_epoch.pth``, ``b_epoch-3.pth``, ``m.pth.3.tmp``): reported, never deleted."""
    return isinstance(name, str) and parse_checkpoint_name(name) is None and (
        "_epoch" in name or ".pth." in name)
