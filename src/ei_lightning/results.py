"""The per-job result file: what one training run leaves for the sweep report."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
PIXEL_PERMUTATION_FILE = "pixel_permutation.json"
LABEL_PERMUTATION_FILE = "label_permutation.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one, never half.

    The text goes to a temporary file in the same directory, then replaces ``path`` in one
    rename, which is atomic on POSIX file systems.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; results are to share
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_result(job_dir: Path) -> dict[str, Any] | None:
    """The job's result, or ``None`` when the job never finished writing one."""
    path = job_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
