"""``torchrun --nproc_per_node=2`` trains the tiny config on CPU (gloo); the checkpoint that
rank 0 wrote loads into a single-process evaluation, which reproduces the run's metrics.
The process group lives only for a training or evaluation call: it is destroyed at its end,
also when the call raises."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pointset.engine import Trainer
from pointset.engine.data import load_split

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_then_single_process_eval(tmp_path, tiny, restore_threads):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", "-m", "pointset.cli",
        "train", str(tiny.path), *[f"--set={o}" for o in tiny.overrides(out, "train.epochs=2")],
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x 2 processes" in proc.stdout
    assert proc.stdout.count("final: test OA") == 1  # only rank 0 prints

    with open(out / "last.json") as f:
        meta = json.load(f)
    assert meta["epoch"] == 2
    cfg = tiny.config(out)
    result = Trainer(cfg, log=lambda s: None).evaluate(str(out / "last.safetensors"))
    n_test = int(result["confusion"].sum())
    assert n_test == 30  # every test sample once: the two shards were summed
    assert abs(result["oa"] - meta["metrics"]["test_oa"]) <= 1 / n_test
    assert torch.equal(result["confusion"].sum(1), torch.full((15,), 2))

    # The same evaluation under torchrun: the confusion matrix reduced over the two
    # processes must count every test sample exactly once (OA and mAcc cannot tell a
    # sample counted twice or dropped).
    script = tmp_path / "ddp_eval.py"
    script.write_text(
        "import json, sys\n"
        "from pointset.engine import Trainer, load_config\n"
        "trainer = Trainer(load_config(sys.argv[1], sys.argv[3:]), log=lambda s: None)\n"
        "result = trainer.evaluate(sys.argv[2])\n"
        "import torch.distributed as dist\n"
        "after_eval = dist.is_initialized()\n"
        "bad = load_config(sys.argv[1], [*sys.argv[3:], 'data.batch_size=3',\n"
        "    'output_dir=' + sys.argv[2] + '.failed'])\n"
        "try:\n"
        "    Trainer(bad, log=lambda s: None).fit()\n"
        "except ValueError as exc:\n"
        "    assert 'multiple of the number of processes' in str(exc), exc\n"
        "if trainer.dist.is_main:\n"
        "    print('REDUCED', json.dumps({'world': trainer.dist.world_size,\n"
        "        'samples': int(result['confusion'].sum()), 'oa': result['oa'],\n"
        "        'group_after': [after_eval, dist.is_initialized()]}))\n"
    )
    cmd = [
        torchrun, "--standalone", "--nproc_per_node=2", str(script), str(tiny.path),
        str(out / "last.safetensors"), *tiny.overrides(tmp_path / "ddp_eval"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("REDUCED "))
    reduced = json.loads(line.removeprefix("REDUCED "))
    assert reduced["world"] == 2
    assert reduced["samples"] == n_test == len(load_split(cfg.data, "test"))
    assert reduced["oa"] == result["oa"]
    # the group is gone after the evaluation and after a training run that raised
    assert reduced["group_after"] == [False, False]


_GROUP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist
    from pointset.engine import distributed as D

    info = D.process_info("cpu")
    seen = []
    for port in sys.argv[1:]:
        os.environ["MASTER_PORT"] = port
        try:
            with D.process_group(info):
                total = D.all_reduce_sum(torch.tensor([info.rank + 1.0])).item()
                seen.append([dist.is_initialized(), dist.get_world_size(), total])
                if port == sys.argv[-1]:
                    raise RuntimeError("the block fails")
        except RuntimeError:
            pass
        seen.append(dist.is_initialized())
    print(json.dumps(seen))
    """
)


_REJOIN_SCRIPT = textwrap.dedent(
    """
    import json
    import torch
    from pointset.engine import distributed as D

    info = D.process_info("cpu")
    totals = []
    for _ in range(12):
        with D.process_group(info):
            totals.append(D.all_reduce_sum(torch.tensor([info.rank + 1.0])).item())
    print(json.dumps(totals))
    """
)


def test_rejoining_under_one_torchrun_store(tmp_path):
    """One process pair joins and leaves a group twelve times under ``torchrun``, whose store
    outlives every group. Oracle: the sum 1 + 2 of the ranks' values in every join. (Each
    join reading the previous join's addresses from the shared store made gloo connect to
    closed sockets: ``connectFullMesh ... Connection refused``.)"""
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    script = tmp_path / "rejoin.py"
    script.write_text(_REJOIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "--tee=1", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [x.split("]:", 1)[-1].strip() for x in proc.stdout.splitlines() if "[" in x]
    assert [json.loads(x) for x in lines if x.startswith("[")] == [[3.0] * 12] * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_process_group_is_destroyed_after_the_block_also_on_error(tmp_path):
    """Oracle: ``torch.distributed.is_initialized`` in two real gloo processes, and the sum
    1 + 2 of their ranks' values inside the group."""
    ports = [str(_free_port())]
    while len(ports) < 2:  # two different ports: each join has its own rendezvous
        port = str(_free_port())
        if port not in ports:
            ports.append(port)
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
        "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": "2",
    }  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _GROUP_SCRIPT, *ports],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        inside = [True, 2, 3.0]
        assert json.loads(out) == [inside, False, inside, False]
