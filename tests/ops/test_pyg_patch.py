"""Tests for ``pointset.ops.patch_pyg``: PyG's own point operators running on pointset.

Every check runs in a fresh interpreter in which neither ``torch_cluster`` nor ``pyg_lib``
can be imported (the state of a plain ``pip install torch_geometric``), so PyG's functions
raise ``ImportError`` until the switch is on, and again after it is undone.

Oracles: brute-force loops written here (kNN by (distance, index), radius by index order,
nearest, FPS) and hand-computed values on small clouds.

PyG's own test files are not shipped in its wheel or its source distribution. Given a
checkout of pyg-team/pytorch_geometric (its root in ``POINTSET_PYG_TESTS``),
:func:`test_pyg_own_tests_pass_through_the_switch` runs its test files for these operators,
unmodified, with pytest, the switch on and torch-cluster and pyg-lib hidden; without a
checkout it is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch_geometric")

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "pointset_pyg_switch_plugin"

#: Hides torch-cluster and pyg-lib from the interpreter (an entry of None makes the import
#: fail), as on a machine where only torch_geometric is installed.
HIDE = "import sys\nsys.modules['torch_cluster'] = None\nsys.modules['pyg_lib'] = None\n"


def run_isolated(body: str) -> str:
    """Run ``body`` in a fresh interpreter with torch-cluster and pyg-lib hidden; return
    its stdout, failing the test with its stderr if it fails."""
    code = HIDE + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_pyg_functions_run_on_pointset_only_while_switched_on():
    """PyG's knn, knn_graph, radius, radius_graph, fps, nearest, voxel_grid,
    knn_interpolate, KNNGraph and RadiusGraph: ImportError before the switch, brute-force
    answers while it is on (patch_pyg and the context manager), ImportError after undo."""
    out = run_isolated(
        """
        import math
        import torch
        import torch_geometric.transforms as T
        from torch_geometric.data import Data
        from torch_geometric.nn import (
            fps, knn, knn_graph, knn_interpolate, nearest, radius, radius_graph, voxel_grid
        )
        import pointset.ops as ops

        def calls():
            return {
                "knn": lambda: knn(x, y, 3, bx, by),
                "knn_graph": lambda: knn_graph(x, 3, bx),
                "radius": lambda: radius(x, y, 0.3, bx, by, max_num_neighbors=500),
                "radius_graph": lambda: radius_graph(x, 0.3, bx, max_num_neighbors=500),
                "fps": lambda: fps(x, bx, ratio=0.28, random_start=False),
                "nearest": lambda: nearest(y, x, by, bx),
                "voxel_grid": lambda: voxel_grid(x, size=0.5, batch=bx),
                "knn_interpolate": lambda: knn_interpolate(feat, x, y, bx, by, k=3),
                "KNNGraph": lambda: T.KNNGraph(k=3)(Data(pos=x.clone())),
                "RadiusGraph": lambda: T.RadiusGraph(r=0.3)(Data(pos=x.clone())),
            }

        gen = torch.Generator().manual_seed(0)
        x = torch.rand(45, 2, generator=gen)
        y = torch.rand(12, 2, generator=gen)
        bx = torch.tensor([0] * 25 + [1] * 20)
        by = torch.tensor([0] * 5 + [1] * 7)
        feat = torch.rand(45, 4, generator=gen)

        def blocked():
            out = []
            for name, call in calls().items():
                try:
                    call()
                except ImportError:
                    out.append(name)
            return out

        assert blocked() == list(calls()), blocked()
        print("installed", ops.patch_pyg())

        def d2(a, b):
            return float(((a - b) ** 2).sum())

        # kNN oracle: per query, its cloud's points by (distance, index).
        edge = knn(x, y, 3, bx, by)
        want = []
        for i in range(12):
            cand = sorted((d2(x[j], y[i]), j) for j in range(45) if bx[j] == by[i])
            want += [[i, j] for _, j in cand[:3]]
        assert edge.t().tolist() == want

        graph = knn_graph(x, 3, bx)  # source_to_target: row 0 neighbours, row 1 centers
        want = []
        for i in range(45):
            cand = sorted((d2(x[j], x[i]), j) for j in range(45) if bx[j] == bx[i] and j != i)
            want += [[j, i] for _, j in cand[:3]]
        assert graph.t().tolist() == want

        # Radius oracle: strict d^2 < r^2 in index order.
        r2 = torch.tensor(0.3 * 0.3).item()
        edge = radius(x, y, 0.3, bx, by, max_num_neighbors=500)
        want = [[i, j] for i in range(12) for j in range(45)
                if bx[j] == by[i] and d2(x[j], y[i]) < r2]
        assert edge.t().tolist() == want
        # The op's ignore_same_index on two different sets drops only the pairs (i, i).
        same = torch.ops.pyg.radius(x, y, None, None, 0.3, 500, 1, True)
        want = [[i, j] for i in range(12) for j in range(45) if i != j and d2(x[j], y[i]) < r2]
        assert same.t().tolist() == want
        graph = radius_graph(x, 0.3, bx, max_num_neighbors=500)
        want = sorted([j, i] for i in range(45) for j in range(45)
                      if j != i and bx[j] == bx[i] and d2(x[j], x[i]) < r2)
        assert sorted(graph.t().tolist()) == want

        # FPS oracle: plain loop from each cloud's first point, ceil(0.28 n) exactly.
        idx = fps(x, bx, ratio=0.28, random_start=False)
        want = []
        for start, n in ((0, 25), (25, 20)):
            pts = x[start:start + n]
            dist = torch.full((n,), math.inf)
            pick = [0]
            for _ in range(math.ceil(28 * n / 100) - 1):
                dist = torch.minimum(dist, ((pts - pts[pick[-1]]) ** 2).sum(1))
                pick.append(int(dist.argmax()))
            want += [start + p for p in pick]
        assert idx.tolist() == want, (idx.tolist(), want)

        # nearest oracle: for every y, the closest x of its cloud (lowest index on ties).
        got = nearest(y, x, by, bx)
        want = [min((d2(x[j], y[i]), j) for j in range(45) if bx[j] == by[i])[1]
                for i in range(12)]
        assert got.tolist() == want

        # knn_interpolate: inverse squared distance weights of the 3 nearest (oracle above).
        out = knn_interpolate(feat, x, y, bx, by, k=3)
        for i in range(12):
            cand = sorted((d2(x[j], y[i]), j) for j in range(45) if bx[j] == by[i])[:3]
            w = torch.tensor([1 / max(d, 1e-16) for d, _ in cand])
            ref = (feat[[j for _, j in cand]] * w[:, None]).sum(0) / w.sum()
            assert torch.allclose(out[i], ref, atol=1e-5)

        # The transforms give the functions' graphs.
        data = T.KNNGraph(k=3)(Data(pos=x.clone()))
        assert data.edge_index.size(1) >= 45 * 3
        data = T.RadiusGraph(r=0.3)(Data(pos=x.clone()))
        assert sorted(data.edge_index.t().tolist()) == sorted(
            radius_graph(x, 0.3).t().tolist()
        )

        # voxel_grid: hand-computed ids (first coordinate fastest, batch slowest).
        pos = torch.tensor([[0.0, 0.0], [11.0, 9.0], [2.0, 8.0], [2.0, 2.0], [8.0, 3.0]])
        assert voxel_grid(pos, size=5.0).tolist() == [0, 5, 3, 0, 1]

        ops.unpatch_pyg()
        assert blocked() == list(calls()), blocked()
        with ops.pyg_on_pointset() as installed:
            assert "pyg::knn" in installed and blocked() == []
        assert blocked() == list(calls())
        print("ok")
        """
    )
    assert "installed ['pyg::fps', 'pyg::knn', 'pyg::radius', 'pyg::nearest'" in out
    assert out.strip().endswith("ok")


def test_switch_leaves_an_installed_provider_alone():
    """With the ops already defined (as pyg-lib does), patch_pyg defines nothing more and
    reports nothing installed (oracle: the op object is unchanged)."""
    out = run_isolated(
        """
        import torch
        import torch_geometric.typing as tgt
        lib = torch.library.Library("pyg", "FRAGMENT")
        lib.define("knn(Tensor x, Tensor y, Tensor? ptr_x=None, Tensor? ptr_y=None, "
                   "int k=1, bool cosine=False, int num_workers=1) -> Tensor")
        lib.impl("knn", lambda x, y, px=None, py=None, k=1, c=False, w=1: torch.zeros(2, 0, dtype=torch.long),
                 "CompositeImplicitAutograd")
        tgt.WITH_KNN = True
        import pointset.ops as ops
        installed = ops.patch_pyg()
        assert "pyg::knn" not in installed and "pyg::fps" in installed, installed
        from torch_geometric.nn import knn
        assert knn(torch.rand(5, 2), torch.rand(2, 2), 2).shape == (2, 0)  # the provider's
        ops.unpatch_pyg()
        assert tgt.WITH_KNN is True and tgt.WITH_FPS is False
        print("ok")
        """
    )
    assert out.strip() == "ok"


#: PyG's test files (paths in pyg-team/pytorch_geometric) that exercise the switched ops.
PYG_TEST_FILES = (
    "test/nn/unpool/test_knn_interpolate.py",
    "test/transforms/test_knn_graph.py",
    "test/transforms/test_radius_graph.py",
    "test/nn/pool/test_voxel_grid.py",
    "test/nn/pool/test_pool.py",
)


def test_pyg_own_tests_pass_through_the_switch(tmp_path):
    """PyG's own test files for these operators pass, unmodified, with the switch on and
    torch-cluster / pyg-lib hidden (oracle: PyG's hand-written expected values)."""
    root = os.environ.get("POINTSET_PYG_TESTS")
    if not root:
        pytest.skip("set POINTSET_PYG_TESTS to a pytorch_geometric checkout to run its tests")
    files = [str(Path(root) / f) for f in PYG_TEST_FILES if (Path(root) / f).is_file()]
    if not files:
        pytest.skip(f"none of {PYG_TEST_FILES} found under {root}")
    # A pytest plugin, loaded before the test files are imported: hide torch-cluster and
    # pyg-lib, switch PyG onto pointset, and let PyG's "needs torch_cluster / pyg_lib"
    # markers see the switch as that package.
    (tmp_path / f"{PLUGIN}.py").write_text(
        HIDE
        + textwrap.dedent(
            """
            import torch_geometric.testing.decorators as decorators
            import pointset.ops

            pointset.ops.patch_pyg()
            _has_package = decorators.has_package

            def has_package(package):
                name = package.split(">")[0].split("=")[0].split("<")[0].strip()
                if name in ("torch_cluster", "pyg_lib", "torch-cluster", "pyg-lib"):
                    return True
                return _has_package(package)

            decorators.has_package = has_package
            """
        )
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO_ROOT)]),
        OMP_NUM_THREADS="1",
        FULL_TEST="1",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", PLUGIN, "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    print(proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout
