"""``DatasetError``: the one error type for missing or malformed dataset files."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset root, file or archive is missing or malformed.

    The message is one line that names the problem (the path, the key, the bad value) and,
    where the files are absent, how to get them.
    """
