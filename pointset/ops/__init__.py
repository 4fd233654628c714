"""Point-set operators with pluggable backends (see ``pointset.ops._backend``)."""

from ._backend import (
    BACKENDS,
    BackendUnavailableError,
    available_backends,
    is_available,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "is_available",
    "use_backend",
]
