"""PURE: what ``train --resume`` may change, and what it must refuse. Nothing is silently ignored.

Options given on the command line of a resume are compared with what the run recorded:
- CHANGEABLE ones are applied, printed, and recorded in the run (MLflow params are immutable,
  so as a ``hype.resume.<n>`` tag: "at epoch 12: patience 6 -> 10; keep_checkpoints 20 -> 5");
- FIXED ones define the run (its geometry, its data, its names, its stopping metric): a value
  that differs is refused with one line; the same value is fine.
Options about this process only (quiet, force, disk margin, checkpoint folder, tracking URI,
upload queue, --store-every-checkpoint) are neither: they are used and not recorded.

A resume starts from the params as earlier resumes changed them: ``effective`` overlays the
cumulative changes (one JSON tag, ``overlay`` writes it) on the params, so a second resume
without options keeps what the first one changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

# option name (as click names it) -> (the run's param that holds it, why it may change)
CHANGEABLE = {
    "epochs": ("epochs", "train longer (or stop sooner, not below what it ran)"),
    "patience": ("patience", "early stopping replays the store's history under the new patience"),
    "min_delta": ("min_delta", "as patience"),
    "keep": ("keep_checkpoints", "retention applies the new policies at once"),
    "keep_best": ("keep_best", "as keep"),
    "keep_every": ("keep_every", "as keep"),
    "eval_every": ("eval_every", "evaluation cadence"),
    "plot_every": ("plot_every", "picture cadence"),
    "lr": ("lr", "fine-tuning at another learning rate; burn-in keeps its multiplier"),
    "workers": ("workers", "processes on this machine"),
    "backend": ("backend", "the same update, another implementation"),
    "log_pyfunc": ("log_pyfunc", "--no-pyfunc: no MLflow model at the end"),
}
# option name -> the run's param (or tag) it must equal
FIXED = {
    "manifold": "manifold", "dim": "dim", "negs": "negs", "batch_size": "batch_size",
    "burnin": "burnin", "burnin_multiplier": "burnin_multiplier", "dampening": "dampening",
    "seed": "seed", "eval_sample": "eval_sample", "model_name": "model_name", "monitor": "monitor",
    "mode": "mode", "experiment": None, "run_name": None,
}


@dataclass(frozen=True)
class Change:
    option: str  # click's name, e.g. "keep"
    param: str  # the run's param, e.g. "keep_checkpoints"
    before: str  # as recorded
    after: str  # as given

    def __str__(self) -> str:
        return f"{self.param} {self.before} -> {self.after}"


def _text(value) -> str:
    if value is None:
        return "all"  # keep=None: keep every checkpoint
    return str(value)


def _same(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return a.lower() in ("all", "0", "none") and b.lower() in ("all", "0", "none")


def plan(given: Mapping[str, object], params: Mapping[str, str], *, experiment: str,
         run_name: str | None) -> tuple[list[Change], list[str]]:
    """(changes to apply, refusals) for the options ``given`` on a resume's command line.

    params: the run's params; experiment, run_name: where the run is and what it is called.
    """
    changes, refused = [], []
    for option, value in sorted(given.items()):
        if option in CHANGEABLE:
            param = CHANGEABLE[option][0]
            before = params.get(param)
            if before is None or not _same(before, _text(value)):
                changes.append(Change(option, param, before or "unset", _text(value)))
        elif option in FIXED:
            if option == "experiment":
                recorded = experiment
            elif option == "run_name":
                recorded = run_name
            else:
                recorded = params.get(FIXED[option])
            if recorded is not None and not _same(str(recorded), _text(value)):
                flag = "--" + option.replace("_", "-")
                refused.append(f"{flag} {_text(value)}: the run was made with {recorded}, and "
                               f"{FIXED[option] or option} cannot change on resume (start a new run "
                               "for that)")
    return changes, refused


def effective(params: Mapping[str, str], overlay_tag: str | None) -> dict[str, str]:
    """The run's params with earlier resumes' changes applied; ValueError (one line) when the
    tag is not what ``overlay`` writes (edited by hand: nothing is guessed)."""
    out = dict(params)
    if not overlay_tag:
        return out
    try:
        changed = json.loads(overlay_tag)
    except ValueError:
        changed = None
    allowed = {param for param, _ in CHANGEABLE.values()}
    if not isinstance(changed, dict) or not all(
            k in allowed and isinstance(v, str) for k, v in changed.items()):
        raise ValueError(f"its resume record (tag {overlay_tag[:80]!r}) is not a JSON object of "
                         f"changeable params ({', '.join(sorted(allowed))}) to strings")
    out.update(changed)
    return out


def overlay(overlay_tag: str | None, changes: list[Change]) -> str:
    """The tag after this resume: the earlier changes, then this one's."""
    changed = json.loads(overlay_tag) if overlay_tag else {}
    changed.update({c.param: c.after for c in changes})
    return json.dumps(changed, sort_keys=True)


def record(changes: list[Change], epoch: int, rolled_back_from: int | None = None) -> str:
    """The tag value that records one resume's changes (and where it went on from, when that is
    before the newest epoch the run had logged)."""
    at = f"at epoch {epoch}" + (f" (rolled back from epoch {rolled_back_from})" if rolled_back_from else "")
    return f"{at}: " + ("; ".join(map(str, changes)) if changes else "no changes")
