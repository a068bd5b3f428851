"""What every benchmark prints beside its timings: which CPU it ran on."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, with its family and model numbers: figures differ across CPUs of
    the same kind (Zen 3 against Zen 5), and a VM may name only "AMD EPYC"."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if not key:  # the first CPU's block has ended
                break
            fields.setdefault(key, value)
        if "model name" in fields:
            ids = [f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields]
            return fields["model name"] + (f" ({', '.join(ids)})" if ids else "")
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
