"""The README's layer table states each layer's base class; the classes must say the same.

Oracle: ``issubclass`` on the classes exported by :mod:`pointset.nn`. (The README used to
say every layer is a ``MessagePassing``, which held for two of them.)
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn
from torch_geometric.nn import MessagePassing

import pointset.nn as layers

README = Path(__file__).resolve().parents[2] / "README.md"
BASES = {"MessagePassing": MessagePassing, "Module": nn.Module}


def _layer_table() -> dict[str, str]:
    """layer name -> base class named in the README's "## Layers" table."""
    section = README.read_text().split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("layer", "---"):
            continue
        for name in re.findall(r"`(\w+)`", cells[0]):
            rows[name] = cells[1].strip("`")
    return rows


def test_readme_names_the_base_class_of_every_layer():
    table = _layer_table()
    exported = {
        name
        for name in layers.__all__
        if isinstance(getattr(layers, name), type) and issubclass(getattr(layers, name), nn.Module)
    }
    assert set(table) == exported
    for name, base in table.items():
        cls = getattr(layers, name)
        assert issubclass(cls, BASES[base]), f"{name} is not a {base}"
        if base == "Module":
            assert not issubclass(cls, MessagePassing), f"{name} is a MessagePassing"
    assert sorted(n for n, b in table.items() if b == "MessagePassing") == [
        "ClusterAttention",
        "ContextCluster",
    ]
