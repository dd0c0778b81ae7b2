"""Files created whole or not at all, never replacing anything unless asked, with the user's umask.

Every output crdetect writes (FITS files, checkpoints, summaries) goes through :func:`atomic_output`:
the content is written to a hidden temporary file in the destination directory, flushed to disk, and
then *linked* to its final name. ``os.link`` fails when the name exists, so two processes writing the
same output never clobber each other (``os.replace`` would silently let the last one win); with
``overwrite=True`` the temporary file replaces the old one in a single rename.

The temporary file is created with ``os.open(..., 0o666)``, so the process's umask applies exactly
as for any file the user creates (``tempfile.mkstemp`` would make it 0600 whatever the umask).

Temporary names carry the host and process id (``.NAME.crdetect-HOST-PID-RANDOM.tmp``): a killed
run's leftovers are recognised and removed by the next run (:func:`remove_stale_temporaries`), while
those of a run still going on in the same directory are left alone. Temporaries open in this process
are listed in :data:`OPEN_TEMPORARIES` so a signal handler can remove them before the process exits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError, OutputExistsError

logger = logging.getLogger(__name__)

#: Temporary files this process is writing now (removed by :func:`remove_open_temporaries`).
OPEN_TEMPORARIES: set[str] = set()

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_TEMPORARY = re.compile(r"^\..+\.crdetect-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]+\.tmp$")
# link(2) is not supported on some file systems (FAT, SMB, some FUSE mounts): fall back to rename
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def temporary_name(path: Path) -> Path:
    """The hidden temporary name used while ``path`` is being written by this process."""
    return path.with_name(f".{path.name}.crdetect-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[BinaryIO]:
    """Open a binary stream whose content appears at ``path`` only when the block ends without error.

    Parameters
    ----------
    path : path
        Final name. Its directory must exist.
    overwrite : bool
        Replace an existing file (atomically). Without it an existing file, or one created by another
        process while this one was writing, is never touched and :class:`OutputError` is raised.

    Raises
    ------
    OutputError
        ``path`` exists (and ``overwrite`` is false), or the directory cannot be written.
    """
    path = Path(path)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(f"{str(path)!r} exists; pass --overwrite (overwrite=True) to replace it")
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as err:
        raise output_error(f"cannot write into {str(path.parent)!r}: {err.strerror or err}", err) from None
    OPEN_TEMPORARIES.add(str(tmp))
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the content is on disk before the name appears
        _publish(tmp, path, overwrite)
    except OSError as err:
        if isinstance(err, OutputError):
            raise
        raise output_error(f"cannot write {str(path)!r}: {err.strerror or err}", err) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        OPEN_TEMPORARIES.discard(str(tmp))


def output_error(message: str, cause: OSError) -> OutputError:
    """An :class:`OutputError` that keeps the ``errno`` of its cause (a full disk stops a batch)."""
    error = OutputError(message)
    error.errno = cause.errno
    return error


def _publish(tmp: Path, path: Path, overwrite: bool) -> None:
    """Give ``tmp`` its final name: a rename with ``overwrite``, else a link that fails if ``path`` exists."""
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExistsError(f"{str(path)!r} was created by another process meanwhile; it was left as it is "
                          "(pass --overwrite to replace it)") from None
    except OSError as err:
        if err.errno not in _NO_LINKS:
            raise
        # no hard links here: check and rename (a tiny window in which another writer could win)
        if os.path.lexists(path):
            raise OutputError(f"{str(path)!r} exists; pass --overwrite (overwrite=True) to replace it") from None
        os.rename(tmp, path)


def remove_open_temporaries() -> None:
    """Remove the temporary files this process is writing (from signal handlers, before exiting)."""
    for name in list(OPEN_TEMPORARIES):
        with contextlib.suppress(OSError):
            os.unlink(name)
        OPEN_TEMPORARIES.discard(name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove temporary files left in ``directory`` by crdetect processes of this host that no longer run.

    Temporaries of live processes (another run writing into the same directory) and of other hosts
    (a shared file system) are kept. Returns the removed paths.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for candidate in directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp"):
        match = _TEMPORARY.match(candidate.name)
        if not match or match["host"] != _HOST or _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    if removed:
        logger.info("removed %d temporary files left by an interrupted run in %s", len(removed), directory)
    return removed
