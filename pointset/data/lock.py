"""An exclusive lock on a file, held by one process at a time.

:func:`exclusive_lock` takes an advisory ``flock`` on a lock file and writes the holder's
process id into it, so that a second process is refused with a message naming the first.
The operating system drops the lock when the holder exits, even when it is killed, so a
stale lock file never blocks anyone. Where ``fcntl`` does not exist (Windows) no lock is
taken.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class LockHeldError(ValueError):
    """Another process holds the lock.

    Attributes:
        pid: the holder's process id as written in the lock file (``None`` if unknown).
    """

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        return int(text)
    except (OSError, ValueError):
        return None


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with``
    block.

    Args:
        path: the lock file.
        what: what the lock protects, for the error message (e.g. ``"output_dir runs/x"``).
        remove: delete the lock file on exit (while still holding the lock; a process that
            locked the deleted file notices and locks the new one).

    Raises:
        LockHeldError: another process holds the lock; the message names its process id.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    path = os.fspath(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            who = f"process {pid}" if pid is not None else "another process"
            raise LockHeldError(
                f"{what} is in use by {who} (lock file {path}); wait for it to end or stop it",
                pid,
            ) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder deleted the file we locked: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if remove and _same_file(fd, path):
            os.remove(path)
        os.close(fd)  # closing the descriptor releases the lock
