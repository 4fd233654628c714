"""What ``pointset info`` prints: library versions, devices and operator backends."""

from __future__ import annotations

import platform

import torch

from .ops import BACKENDS, CPU_ONLY, backend_version, unavailable_reason


def format_info() -> str:
    """A plain-text report of versions, devices and which backends are usable."""
    import numpy
    import torch_geometric

    from . import __version__

    lines = [
        f"pointset        {__version__}",
        f"python          {platform.python_version()} ({platform.machine()})",
        f"torch           {torch.__version__}",
        f"torch_geometric {torch_geometric.__version__}",
        f"numpy           {numpy.__version__}",
        f"cuda            {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}",
        f"cpu threads     {torch.get_num_threads()}",
        "",
        "operator backends:",
    ]
    for name in BACKENDS:
        version = backend_version(name)
        where = "cpu" if name in CPU_ONLY else "cpu, cuda"
        if name == "triton":
            where = "cuda; cpu under TRITON_INTERPRET=1"
        if version is not None:
            lines.append(f"  {name:<14} usable    {version:<12} ({where})")
        else:
            reason = (unavailable_reason(name) or "").splitlines()[0]
            lines.append(f"  {name:<14} missing   {'':<12} {reason}")
    return "\n".join(lines)
