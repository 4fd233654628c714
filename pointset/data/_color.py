"""Deciding whether a point set's features are colours (for formats that store colours)."""

from __future__ import annotations

from torch import Tensor

X_AS = ("auto", "color", "feature", "none")


def split_color(x: Tensor | None, x_as: str = "auto") -> tuple[Tensor | None, Tensor | None]:
    """Split ``x [N, C]`` into ``(colors [N, 3] in [0, 1], features)``; either may be None.

    ``x_as``:

    - ``"auto"``: colours when ``x`` has 3 channels, all finite and in ``[0, 1]``; otherwise
      features.
    - ``"color"``: colours; ``x`` must have 3 channels in ``[0, 1]`` (``ValueError``).
    - ``"feature"``: features, never colours.
    - ``"none"``: drop ``x``.
    """
    if x_as not in X_AS:
        raise ValueError(f"x_as must be one of {', '.join(X_AS)}, got {x_as!r}")
    if x is None or x_as == "none":
        return None, None
    if x_as == "feature":
        return None, x
    looks_like = (
        x.dim() == 2
        and x.size(1) == 3
        and x.is_floating_point()
        and (x.numel() == 0 or bool(((x >= 0) & (x <= 1)).all()))
    )
    if x_as == "color" and not looks_like:
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
        raise ValueError(
            f"x_as='color' needs x of shape [N, 3] with values in [0, 1]; got shape "
            f"{tuple(x.shape)}, dtype {x.dtype}, range [{lo}, {hi}]"
        )
    return (x, None) if looks_like else (None, x)
