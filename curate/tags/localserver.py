"""A real Label Studio server on 127.0.0.1, for the integration tests and the benchmark.

The server (the ``label-studio`` package, ~1 GB with Django and friends) lives in its own
virtualenv, ``.cache/venvs/label-studio``, built on first use, so its pins never touch the
project's. A fresh database needs ~25-70 s of migrations, so a pre-migrated data folder (an
admin and a second annotator, each with a legacy API token) is made once next to the venv and
copied for every server: a start then takes a few seconds.

Label Studio is told to stay home (no version check, analytics or Sentry) and gets a clean
environment: it also reads bare ``HOST``/``PORT``/``USERNAME``/``PASSWORD`` variables. If its
port is taken it silently binds the next one, so the port is read back from its log.

Try it by hand::

    python -m curate.tags.localserver --document-root .   # prints URL and tokens, Ctrl-C stops
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx

from core.polling import until

LS_REQUIREMENT = "label-studio==1.23.2"
REPO = Path(__file__).resolve().parents[2]
HOME = REPO / ".cache" / "venvs"
_STARTED = re.compile(r"Starting development server at http://127\.0\.0\.1:(\d+)/")
_STRIP = ("HOST", "PORT", "USERNAME", "PASSWORD", "USER_TOKEN", "DATABASE_NAME", "DJANGO_DB",
          "DJANGO_SETTINGS_MODULE", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")


class ServerError(RuntimeError):
    """The local server could not be installed or started; the message holds its log tail."""


@dataclass(frozen=True)
class User:
    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock: two test runs or a test and a bench do not build at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _run_logged(cmd: list[str], log: Path, env: dict[str, str] | None = None,
                timeout: float = 1800) -> None:
    with open(log, "ab") as fh:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                              env=env, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise ServerError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{_tail(log)}")


def ensure_venv(home: Path = HOME) -> Path:
    """The ``label-studio`` executable of the server's own venv, installing it on first use."""
    venv = home / "label-studio"
    exe, stamp = venv / "bin" / "label-studio", venv / ".curate-requirement"
    if exe.exists() and stamp.exists() and stamp.read_text() == LS_REQUIREMENT:
        return exe
    with _locked(home / ".label-studio.lock"):
        if exe.exists() and stamp.exists() and stamp.read_text() == LS_REQUIREMENT:
            return exe
        print(f"installing {LS_REQUIREMENT} into {venv} (once, ~1-2 min)", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        log = home / "label-studio-install.log"
        log.unlink(missing_ok=True)
        _run_logged([sys.executable, "-m", "venv", str(venv)], log)
        _run_logged([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                     "--disable-pip-version-check", LS_REQUIREMENT], log)
        stamp.write_text(LS_REQUIREMENT)
    return exe


def server_env(data_dir: Path, document_root: Path | None = None) -> dict[str, str]:
    """The environment the server runs with: ours minus what confuses it, plus its settings."""
    env = {k: v for k, v in os.environ.items() if k not in _STRIP}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "PYTHONUNBUFFERED": "1",
    })
    if document_root is not None:
        env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] = "true"
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(Path(document_root).absolute())
    return env


def _init_user(exe: Path, data_dir: Path, user: User, log: Path) -> None:
    _run_logged([str(exe), "init", "--data-dir", str(data_dir), "--username", user.email,
                 "--password", user.password, "--user-token", user.token,
                 "--enable-legacy-api-token", "-q"], log, env=server_env(data_dir), timeout=900)


def _load_users(template: Path) -> list[User]:
    return [User(**u) for u in json.loads((template / "users.json").read_text())]


def ensure_template(home: Path = HOME) -> tuple[Path, list[User]]:
    """A migrated data folder with an admin and an annotator (made once), and those users."""
    exe = ensure_venv(home)
    template = home / "label-studio-template"
    stamp = template / ".curate-requirement"
    if stamp.exists() and stamp.read_text() == LS_REQUIREMENT:
        return template, _load_users(template)
    with _locked(home / ".label-studio.lock"):
        if stamp.exists() and stamp.read_text() == LS_REQUIREMENT:
            return template, _load_users(template)
        print(f"migrating a Label Studio template database in {template} (once)", file=sys.stderr)
        building = home / "label-studio-template.building"
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir(parents=True)
        users = [User(f"{name}@example.com", secrets.token_hex(8), secrets.token_hex(20))
                 for name in ("admin", "annotator")]
        log = home / "label-studio-template.log"
        log.unlink(missing_ok=True)
        for user in users:
            _init_user(exe, building, user, log)
        (building / "users.json").write_text(json.dumps([u.__dict__ for u in users]))
        (building / ".curate-requirement").write_text(LS_REQUIREMENT)
        shutil.rmtree(template, ignore_errors=True)
        building.rename(template)
    return template, users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """One Label Studio process on 127.0.0.1 over a copy of the template data folder."""

    def __init__(self, data_dir: Path, document_root: Path | None = None,
                 home: Path = HOME) -> None:
        self.data_dir = Path(data_dir)
        self.document_root = document_root
        self.home = home
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.port = 0
        self.users: list[User] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> User:
        return self.users[0]

    @property
    def annotator(self) -> User:
        return self.users[1]

    def start(self, timeout: float = 180.0) -> LocalServer:
        """Start the server (copying the template on first start) and wait until it answers."""
        template, self.users = ensure_template(self.home)
        exe = ensure_venv(self.home)
        if not (self.data_dir / "label_studio.sqlite3").exists():
            shutil.copytree(template, self.data_dir, dirs_exist_ok=True)
        wanted = free_port()
        with open(self.log, "ab") as fh:
            self._proc = subprocess.Popen(
                [str(exe), "start", "--no-browser", "--data-dir", str(self.data_dir),
                 "--internal-host", "127.0.0.1", "--port", str(wanted),
                 "--username", self.admin.email, "--password", self.admin.password,
                 "--user-token", self.admin.token, "--enable-legacy-api-token"],
                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                env=server_env(self.data_dir, self.document_root), start_new_session=True)
        self._wait(timeout, len(_STARTED.findall(_tail(self.log, 10**7))))
        return self

    def _wait(self, timeout: float, seen_before: int) -> None:
        try:
            until(lambda: self._answering(seen_before), "Label Studio", timeout, interval=0.3)
        except TimeoutError:
            self.stop()
            raise ServerError(f"Label Studio did not answer within {timeout:.0f} s:\n"
                              f"{_tail(self.log)}") from None

    def _answering(self, seen_before: int) -> bool:
        """Whether the server we started answers its health check (ServerError if it exited)."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ServerError(f"Label Studio exited with {self._proc.returncode}:\n"
                              f"{_tail(self.log)}")
        ports = _STARTED.findall(_tail(self.log, 10**7))
        if len(ports) <= seen_before:
            return False
        self.port = int(ports[-1])
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the server and everything it started (it runs in its own process group)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Start a throwaway server for trying the round trip by hand."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--document-root", type=Path, default=Path.cwd(),
                        help="folder served to the browser by local-files (contains the store)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the database here (default: a temporary folder)")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="label-studio-")) / "data"
    with LocalServer(data_dir, args.document_root) as server:
        print(f"export LABEL_STUDIO_URL={server.url}")
        print(f"export LABEL_STUDIO_API_KEY={server.admin.token}   # {server.admin.email}, "
              f"password {server.admin.password}")
        print(f"# second annotator: {server.annotator.email}, password "
              f"{server.annotator.password}; Ctrl-C stops the server")
        with contextlib.suppress(KeyboardInterrupt):
            while server._proc is not None and server._proc.poll() is None:
                time.sleep(1)


if __name__ == "__main__":
    main()
