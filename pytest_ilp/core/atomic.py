"""Write files so that a reader (or a crash) never sees half of one.

Reports, baselines, Markdown summaries and exports are written to a temporary file in the same
folder, flushed to disk, then renamed over the target: the rename is atomic on POSIX and
Windows, so the old file stays whole until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step, creating its folder if needed.

    The new file keeps the permissions of the one it replaces (or gets the umask's default).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")  # fails, if it fails, before anything is touched
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
