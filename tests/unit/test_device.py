"""`device: auto | cpu | cuda`: auto falls back to the CPU, cuda without a GPU stops clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import device
from core.device import DeviceError, onnx_providers, torch_device

REPO = Path(__file__).resolve().parents[2]


def test_cpu_is_always_the_cpu() -> None:
    assert torch_device("cpu", "x") == "cpu"
    assert onnx_providers("cpu", "x") == ["CPUExecutionProvider"]


@pytest.mark.skipif(device.torch_has_cuda(), reason="this machine has a CUDA GPU")
def test_without_a_gpu_auto_is_the_cpu_and_cuda_says_what_to_do() -> None:
    assert torch_device("auto", "embeddings") == "cpu"
    with pytest.raises(DeviceError, match="embeddings: device is cuda.*set device: auto or cpu"):
        torch_device("cuda", "embeddings")


@pytest.mark.skipif(device.onnx_has_cuda(), reason="ONNX Runtime here has the CUDA provider")
def test_without_the_cuda_provider_matte_on_cuda_names_make_gpu() -> None:
    assert onnx_providers("auto", "matte") == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match="make gpu"):
        onnx_providers("cuda", "matte")


def test_auto_on_the_cpu_is_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    if device.torch_has_cuda():
        pytest.skip("this machine has a CUDA GPU")
    device._announced.clear()
    device.check("auto", "embeddings")
    device.check("auto", "embeddings")
    captured = capsys.readouterr()
    assert (captured.out + captured.err).count("embeddings: on the CPU (device: auto") == 1


def test_the_driver_is_looked_for_before_torch_is_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No driver, no CUDA: the coordinator need not import torch (seconds) to learn that."""
    if device.cuda_driver_present():
        pytest.skip("this machine has a GPU driver")
    code = ("import sys; from core import device; device.torch_has_cuda(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout
    assert out.strip() == "False"
    (tmp_path / "version").write_text("NVRM version: 550")
    monkeypatch.setattr(device, "CUDA_DRIVER_PATHS", ("/nonexistent", str(tmp_path / "version")))
    assert device.cuda_driver_present()
