"""What a checkpoint's LoggedModel holds so that `mlflow models serve -m models:/<id>` loads it.

Two small files per checkpoint (about 3 KB together; the weights stay the run's
``hype_checkpoints/<name>``, stored once):
    MLmodel                 python_function (loader: code/hype_checkpoint.py) + the hype flavor
                            {"weights": runs:/R/hype_checkpoints/<name>, "code": runs:/R/hype_code.zip}
    code/hype_checkpoint.py tracker/serving/checkpoint_loader.py
and once per run the code zip (``hype_code.zip`` at the run's artifact root, ~50 KB): hype's
package and the pyfunc model code that the final model ships through code_paths.
"""

from __future__ import annotations

import functools
import io
import platform
import shutil
import zipfile
from pathlib import Path

from tracker.layout import PROJECT_ROOT
from tracker.serving import checkpoint_loader
from tracker.serving.log import CODE_PACKAGE, MODEL_CODE

CODE_ZIP = "hype_code.zip"
LOADER_MODULE = "hype_checkpoint"  # the loader's name inside the model's code/
_LOADER = Path(checkpoint_loader.__file__)


def code_uri(run_id: str) -> str:
    return f"runs:/{run_id}/{CODE_ZIP}"


@functools.cache
def code_zip() -> bytes:
    """hype/**/*.py and the served model's code, as the checkpoint loader imports them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(CODE_PACKAGE.rglob("*.py")):
            z.write(path, path.relative_to(PROJECT_ROOT).as_posix())
        z.write(MODEL_CODE, f"{checkpoint_loader.SERVED_MODULE}.py")
    return buf.getvalue()


def write_code_zip(folder: Path) -> Path:
    path = folder / CODE_ZIP
    path.write_bytes(code_zip())
    return path


def write_model_files(folder: Path, *, weights_uri: str, run_id: str, epoch: int) -> Path:
    """The checkpoint model's files, into ``folder`` (made here); returns it."""
    from mlflow.models import Model

    (folder / "code").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_LOADER, folder / "code" / f"{LOADER_MODULE}.py")
    model = Model()
    model.add_flavor("python_function", loader_module=LOADER_MODULE, code="code",
                     python_version=platform.python_version())
    model.add_flavor(checkpoint_loader.FLAVOR, weights=weights_uri, code=code_uri(run_id), epoch=epoch)
    model.save(str(folder / "MLmodel"))
    return folder
