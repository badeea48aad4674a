"""Writing files so that a crash never leaves a half-written one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from genlab.errors import StorageError

# what the disk answers when it cannot take a write: full, over quota, read-only, not ours
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(path: str | os.PathLike[str], code: int) -> StorageError:
    """The one sentence for a write to ``path`` that the disk refused with ``code``."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EROFS: "the file system is read-only"}.get(code, "permission is denied")
    return StorageError(f"cannot write {path}: {why}; free some space or write elsewhere, then run it again "
                        f"(files are renamed into place only when complete, so the last complete checkpoint is kept).")


def storage_errno(e: BaseException) -> int | None:
    """The errno of a refused write, from an OSError or from a library's own error that quotes it
    (safetensors: "I/O error: No space left on device (os error 28)"); None for any other failure."""
    code = e.errno if isinstance(e, OSError) else None
    if code is None:
        m = re.search(r"os error (\d+)", str(e))
        code = int(m.group(1)) if m else None
    return code if code in STORAGE_ERRNOS else None


@contextlib.contextmanager
def refused_writes(path: str | os.PathLike[str]):
    """Inside: a write the disk refuses (full, read-only, not ours) becomes :func:`storage_error` naming ``path``."""
    try:
        yield
    except Exception as e:
        code = storage_errno(e)
        if code is None:
            raise
        raise storage_error(path, code) from None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``; a disk that refuses (full,
    read-only) is a StorageError in one sentence, and the temporary file is removed."""
    path = Path(path)
    with refused_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; the result should look like any other file
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
