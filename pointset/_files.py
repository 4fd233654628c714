"""File-system helpers shared by the packages: atomic replacement of a file."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``.

    Whatever the block writes to the temporary path appears at ``path`` in one
    ``os.replace`` when the block ends without error, so readers see the old file or the
    new one, never a half-written one. On error the temporary file is removed and
    ``path`` is left as it was.

    Example::

        >>> with atomic_path("metrics.json") as tmp, open(tmp, "w") as f:
        ...     f.write("{}")
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
