"""Download dataset files from public mirrors into a folder, verifying their sha256.

Each file is streamed to a temporary file in the destination folder, checked against
its known sha256 and only then renamed into place (``os.replace``), so an interrupted
or corrupt download never leaves a file that looks complete. Mirrors are tried in
order; when all of them fail, a :class:`~genlab.errors.DataError` says where to put
the files by hand. ``MIRRORS`` can be replaced (tests point it at a local server).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

from genlab.errors import DataError

log = logging.getLogger(__name__)

DISPLAY_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

# Base URLs, tried in order; a file's URL is base + file name.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# sha256 of the canonical .gz files (the same bytes every mirror serves).
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _ChecksumMismatch(Exception):
    pass


class _LocalWriteError(Exception):
    """Writing on this machine failed (disk full, permissions): not the mirror's fault."""


def _fetch(url: str, dest: Path, sha256: str, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically; network failures raise OSError-like errors."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise _LocalWriteError(e) from e
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(_CHUNK), b""):
                h.update(block)
                try:
                    out.write(block)
                except OSError as e:
                    raise _LocalWriteError(e) from e
            try:
                out.flush()
            except OSError as e:
                raise _LocalWriteError(e) from e
        if h.hexdigest() != sha256:
            raise _ChecksumMismatch(f"sha256 {h.hexdigest()} instead of {sha256}")
        try:
            os.replace(tmp, dest)
        except OSError as e:
            raise _LocalWriteError(e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(
    name: str,
    filenames: Iterable[str],
    dest_dir: str | os.PathLike,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> list[Path]:
    """Download ``filenames`` of dataset ``name`` into ``dest_dir`` (created); return their paths.

    ``mirrors`` (base URLs) defaults to ``MIRRORS[name]``. Files already present are
    kept as they are. Raises DataError when a file cannot be fetched from any mirror,
    or when every copy fetched had the wrong sha256 (the bad copy is not kept).
    """
    filenames = list(filenames)
    display = DISPLAY_NAMES.get(name, name)
    if name not in SHA256:
        raise DataError(f"genlab cannot download {display}; put its files in {dest_dir} by hand.")
    bases = list(MIRRORS[name] if mirrors is None else mirrors)
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {dest_dir} ({e.strerror}); "
                        f"pass {{data.root}} to a writable folder.") from e
    paths = []
    for filename in filenames:
        if filename not in SHA256[name]:
            raise DataError(f"{filename!r} is not a file of {display}; expected one of "
                            f"{', '.join(SHA256[name])}.")
        dest = dest_dir / filename
        paths.append(dest)
        if dest.exists():
            continue
        failures: list[str] = []
        mismatch = None
        for base in bases:
            url = base.rstrip("/") + "/" + filename
            log.info("downloading %s", url)
            try:
                _fetch(url, dest, SHA256[name][filename], timeout)
                break
            except _LocalWriteError as e:
                raise DataError(f"cannot write {dest} ({e}); free some disk space or pass {{data.root}} to a "
                                f"writable folder.") from e
            except _ChecksumMismatch as e:
                mismatch = f"{url} served a file with {e}"
                failures.append(mismatch)
            except (OSError, http.client.HTTPException, ValueError) as e:
                # URLError/HTTPError/timeouts are OSErrors; ValueError covers a malformed URL.
                reason = getattr(e, "reason", None) or e
                failures.append(f"{url}: {reason}")
        else:
            if mismatch is not None:
                raise DataError(f"downloaded {display} file {filename} is corrupt ({mismatch}), so it was "
                                f"not kept; try again later, or put the canonical file in {dest_dir} by hand.")
            last = failures[-1] if failures else "no mirror configured"
            raise DataError(f"could not download {display} (no network?; last error {last}): put the IDX "
                            f"files ({', '.join(filenames)}) in {dest_dir} or pass {{data.root}} "
                            f"to a folder that holds them.")
    return paths

