"""What to say when torch's weights-only loader refuses a file.

torch's refusal opens with advice to load again with weights_only=False: that would run the
payload, so it is never ours to give. The checkpoint loader (tracker) and the served model
(which ships only `hype`, through code_paths) both word a refusal with this one function.
"""

from __future__ import annotations

import pickle

# the lines of torch's message that are advice or links, not the reason
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def refusal(error: pickle.UnpicklingError) -> str:
    """One line: why the file was refused, with torch's advice stripped."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    why = next((ln for ln in lines if not ln.startswith(_TORCH_BOILERPLATE)), "unsafe content")
    return (f"refused to load: it holds more than tensors and plain types ({why.rstrip('.')}); "
            "nothing in it was run")
