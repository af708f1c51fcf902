"""Distributed training for real: `torchrun --standalone --nproc-per-node 2` with gloo on CPU.

Two processes on 4 images each must produce the same summed gradients, step by step, as one
process on the 8 images (the discriminator step, its R1 step and the generator step, with
augmentation, style mixing and noise drawn per sample). One process in two accumulation
rounds must too. Then a whole `train fit` runs under torchrun: rank 0 alone writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from train.synthetic import make_blob_dataset, tiny_config

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1")
for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(var, None)


def _torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", str(nproc), *args]


def _run(cmd: list[str], timeout: float = 300) -> str:
    proc = subprocess.run(cmd, check=False, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_blob_dataset(tmp_path_factory.mktemp("ddp") / "blobs.zip", 32, 16)


def test_two_processes_match_one_on_the_doubled_batch(dataset: Path, tmp_path: Path) -> None:
    worker = str(HERE / "train_ddp_worker.py")
    _run(_torchrun(2, worker, str(dataset), str(tmp_path / "ddp.pt"), "4"))
    _run([sys.executable, worker, str(dataset), str(tmp_path / "one.pt"), "8"])
    _run([sys.executable, worker, str(dataset), str(tmp_path / "accum.pt"), "4"])
    ddp, one, accum = (torch.load(tmp_path / f"{n}.pt", weights_only=True)
                       for n in ("ddp", "one", "accum"))
    assert (ddp["world"], one["world"], accum["accum"]) == (2, 1, 2)
    assert len(one["steps"]) == 3  # D, R1, G
    for other in (ddp, accum):
        assert len(other["steps"]) == len(one["steps"])
        for ref, got in zip(one["steps"], other["steps"], strict=True):
            assert ref.keys() == got.keys()
            # Summing in another order changes a float32 sum by about 1e-7 of its *terms*,
            # not of the result: a noise strength's gradient (noise times upstream gradient,
            # summed over every pixel) cancels to 1e-5 from terms near the step's largest
            # gradients, and differed by 1.8e-7 on one CPU. So the floor follows the step's
            # largest gradient; a wrong sum (a sample lost or counted twice) moves every
            # gradient by about its own size, far past it.
            floor = 1e-5 * max(v.abs().max().item() for v in ref.values())
            for name in ref:
                scale = ref[name].abs().max().item() + 1e-12
                err = (ref[name] - got[name]).abs().max().item()
                assert err <= 1e-4 * scale + floor, f"{name}: {err} vs magnitude {scale}"
        assert torch.allclose(other["w_avg"], one["w_avg"], atol=1e-6)


def test_train_fit_under_torchrun(dataset: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": tiny_config("stylegan2", kimg=0.032)}))
    out = tmp_path / "run"
    log = _run(_torchrun(2, "--no-python", str(BIN / "train"), "fit", "--params", str(params),
                         "--data", str(dataset), "--out", str(out), "--device", "cpu"))
    assert "on 2 cpu process(es): global batch 8 = 2 x 4 x 1" in log
    assert log.count("exported EMA generator") == 1  # rank 0 alone logs and writes
    assert (out / "export" / "generator.json").exists()
    assert len(list((out / "checkpoints").glob("state-*.pt"))) == 2  # initial + final
