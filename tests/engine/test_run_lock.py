"""One run per output_dir: a second run while the first is alive stops with an error naming
the first one's process id (oracle: the pid of the subprocess that runs it), and a fresh
start refuses a folder holding any run file unless overwriting."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pointset.data.lock import LockHeldError
from pointset.engine import RunExistsError, Trainer

REPO = Path(__file__).resolve().parents[2]

# Trains the tiny config; at its first step it creates sys.argv[1] and waits until that
# file is deleted, so the test can start a second run meanwhile.
PAUSED = textwrap.dedent(
    """
    import os, sys, time
    from pointset.engine import Trainer, load_config

    flag = sys.argv[1]

    def hook(epoch, step):
        if (epoch, step) == (0, 0):
            open(flag, "w").close()
            while os.path.exists(flag):
                time.sleep(0.05)

    Trainer(load_config(sys.argv[2], sys.argv[3:]), on_step=hook, log=lambda s: None).fit()
    """
)


@pytest.mark.slow
def test_second_run_into_a_busy_output_dir_is_refused(tmp_path, tiny, restore_threads):
    out, flag = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    sets = tiny.overrides(out, "train.epochs=1")
    args = [sys.executable, "-c", PAUSED, str(flag), str(tiny.path), *sets]
    first = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not flag.exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for resume in (False, True):
            with pytest.raises(LockHeldError) as info:
                Trainer(tiny.config(out), resume=resume, overwrite=True, log=lambda s: None).fit()
            assert f"process {first.pid}" in str(info.value) and str(out) in str(info.value)
            assert info.value.pid == first.pid
    finally:
        flag.unlink(missing_ok=True)
        assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert (out / "last.json").is_file()  # the first run finished undisturbed


@pytest.mark.parametrize("name", ["config.yaml", "metrics.jsonl", "best.safetensors"])
def test_fresh_start_refuses_any_run_file(tmp_path, tiny, restore_threads, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(b"from an earlier run")
    with pytest.raises(RunExistsError, match=f"{name}.*--resume.*--overwrite"):
        Trainer(tiny.config(out, "train.epochs=1"), log=lambda s: None).fit()
    assert (out / name).read_bytes() == b"from an earlier run"


def test_overwrite_removes_the_old_checkpoints(tmp_path, tiny, restore_threads):
    out = tmp_path / "run"
    out.mkdir()
    (out / "best.safetensors").write_bytes(b"old")
    (out / "best.json").write_text("{}")
    (out / ".metrics.jsonl.0123456789abcdef0123456789abcdef.tmp").write_text("killed write")
    Trainer(tiny.config(out, "train.epochs=1"), overwrite=True, log=lambda s: None).fit()
    assert (out / "best.safetensors").read_bytes() != b"old"
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
