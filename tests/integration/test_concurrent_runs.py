"""Two runs on the same outputs: the second refuses and names the first; nothing is corrupted.

The locks are `fcntl.flock`s, which the kernel drops when their process dies: a killed run
never leaves a stale lock behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runlock import RunLocked, exclusive, lock_path

pytestmark = pytest.mark.integration


def _cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_held_lock_refuses_in_process_and_names_the_holder(tmp_path: Path) -> None:
    with exclusive(tmp_path / "locks", tmp_path / "out"):
        with pytest.raises(RunLocked, match=rf"being written by another run \(pid {os.getpid()} "):
            with exclusive(tmp_path / "locks", tmp_path / "out"):
                pass
        with exclusive(tmp_path / "locks", tmp_path / "other"):  # other outputs: no conflict
            pass
    with exclusive(tmp_path / "locks", tmp_path / "out"):  # released on exit
        pass
    assert lock_path(tmp_path / "locks", tmp_path / "out").read_text() == ""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from core.runlock import exclusive\n"
            "with exclusive(Path(sys.argv[1]), Path(sys.argv[2])):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "locks"),
                             str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"pid {proc.pid} "):
            with exclusive(tmp_path / "locks", tmp_path / "out"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with exclusive(tmp_path / "locks", tmp_path / "out"):
        pass


def test_ingest_refuses_while_another_run_writes_its_store(tmp_path, images, write_params
                                                            ) -> None:
    folder = tmp_path / "photos"
    for i in range(20):
        images.write(folder / f"{i:02d}.jpg", images.jpeg(64, 48, seed=i))
    params = write_params(tmp_path, [{"kind": "folder", "path": str(folder)}], workers=1)
    with exclusive(tmp_path / "cache" / "locks", tmp_path / "store"):
        proc = _cli("curate.cli", "ingest", "--params", str(params), "--out",
                    str(tmp_path / "out"))
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "being written by another run" in out and f"pid {os.getpid()}" in out
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_two_ingests_started_together_never_corrupt_the_outputs(tmp_path, images, write_params
                                                                 ) -> None:
    folder = tmp_path / "photos"
    for i in range(150):
        images.write(folder / f"{i:03d}.jpg", images.jpeg(96, 72, seed=i))
    clean = write_params(tmp_path / "clean", [{"kind": "folder", "path": str(folder)}],
                         workers=2)
    shared = write_params(tmp_path / "shared", [{"kind": "folder", "path": str(folder)}],
                          workers=2)
    first = _cli("curate.cli", "ingest", "--params", str(clean), "--out",
                 str(tmp_path / "clean" / "out"))
    assert first.wait(timeout=240) == 0, first.stdout.read()
    runs = [_cli("curate.cli", "ingest", "--params", str(shared), "--out",
                 str(tmp_path / "shared" / "out")) for _ in range(2)]
    outputs = [run.communicate(timeout=240)[0] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 1]), outputs
    if codes == [0, 1]:  # the loser named the winner
        loser = outputs[[r.returncode for r in runs].index(1)]
        winner = runs[[r.returncode for r in runs].index(0)]
        assert f"pid {winner.pid} " in loser
    for name in ("manifest.parquet", "rejects.parquet"):
        assert ((tmp_path / "shared" / "out" / name).read_bytes()
                == (tmp_path / "clean" / "out" / name).read_bytes())


def test_a_second_trainer_on_the_same_run_folder_refuses(tmp_path: Path) -> None:
    out = tmp_path / "models" / "toy"
    with exclusive(out.parent / ".locks", out):
        started = time.monotonic()
        proc = _cli("train.cli", "fit", "--data", str(tmp_path / "missing.zip"), "--out",
                    str(out))
        text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "being written by another run" in text, text
    assert time.monotonic() - started < 60
