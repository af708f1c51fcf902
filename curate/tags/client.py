"""The Label Studio server, seen through label-studio-sdk, with errors phrased for people.

The URL and token come only from the environment (``LABEL_STUDIO_URL``,
``LABEL_STUDIO_API_KEY``): never from params.yaml, so they cannot end up in git or dvc.lock.
The token is never printed: messages name the variable, not its value, and URLs are shown
without any user:password part.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

ENV_URL = "LABEL_STUDIO_URL"
ENV_KEY = "LABEL_STUDIO_API_KEY"
_T = TypeVar("_T")


class LabelStudioError(RuntimeError):
    """Talking to Label Studio failed; the message says what to fix."""


def display_url(url: str) -> str:
    """``url`` without credentials, query or fragment: safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Connection:
    """Where the server is and the token to use (``repr`` never shows the token)."""

    url: str
    api_key: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Connection:
        env = os.environ if environ is None else environ
        url = (env.get(ENV_URL) or "").strip()
        key = (env.get(ENV_KEY) or "").strip()
        if not url:
            raise LabelStudioError(
                f"{ENV_URL} is not set: export {ENV_URL}=http://localhost:8080 (the address "
                "you open Label Studio at)")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise LabelStudioError(f"{ENV_URL}={display_url(url)!r} is not an http(s) URL, "
                                   "e.g. http://localhost:8080")
        if not key:
            raise LabelStudioError(
                f"{ENV_KEY} is not set: copy your token from Label Studio (Account & Settings "
                f"> Personal Access Token, or the legacy Access Token) and export {ENV_KEY}=...")
        return cls(url.rstrip("/"), key)


def _body_text(body: Any, limit: int = 300) -> str:
    if isinstance(body, dict):
        text = body.get("detail") or body.get("validation_errors") or body
    else:
        text = body
    text = str(text).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


class LabelStudioClient:
    """The few calls the tags stage needs, each turning failures into `LabelStudioError`."""

    def __init__(self, conn: Connection, timeout_s: float = 120.0) -> None:
        self.url = display_url(conn.url)
        self._sdk = LabelStudio(base_url=conn.url, api_key=conn.api_key, timeout=timeout_s,
                                max_retries=2)

    # ------------------------------------------------------------------ errors

    def _call(self, doing: str, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except ApiError as exc:
            raise self._api_error(doing, exc) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} while {doing} ({type(exc).__name__}): "
                f"is the server running, and is {ENV_URL} right?") from None
        except httpx.TimeoutException:
            raise LabelStudioError(
                f"Label Studio at {self.url} did not answer in time while {doing}: try again, or "
                "raise tags.timeout_s in params.yaml for big projects") from None
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"the connection to Label Studio at {self.url} broke while {doing} "
                f"({type(exc).__name__}): was the server stopped? Start it and run the command "
                "again; nothing was written") from None

    def _api_error(self, doing: str, exc: ApiError) -> LabelStudioError:
        status = exc.status_code
        if status in (401, 403):
            return LabelStudioError(
                f"Label Studio at {self.url} refused the token in {ENV_KEY} (HTTP {status}) while "
                f"{doing}: copy a valid token from Account & Settings; a legacy token also needs "
                "legacy tokens enabled for the organisation")
        if status is None:
            return LabelStudioError(f"Label Studio client error while {doing}: "
                                    f"{_body_text(exc.body)}")
        return LabelStudioError(f"Label Studio at {self.url} answered HTTP {status} while "
                                f"{doing}: {_body_text(exc.body)}")

    # -------------------------------------------------------------- the calls

    def whoami(self) -> int:
        """The id of the token's user (checks that the server is there and the token works)."""
        user = self._call("checking the token", self._sdk.users.whoami)
        return int(user.id)

    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project with exactly this title (the oldest if several), or None."""
        def find() -> list[Any]:
            return [p for p in self._sdk.projects.list(title=title, page_size=100)
                    if p.title == title]
        found = self._call(f"looking for project {title!r}", find)
        if not found:
            return None
        project = min(found, key=lambda p: p.id)
        return self.project(int(project.id))

    def project(self, project_id: int) -> dict[str, Any]:
        got = self._call(f"reading project {project_id}",
                         lambda: self._sdk.projects.get(id=project_id))
        return {"id": int(got.id), "title": got.title, "label_config": got.label_config or "",
                "description": got.description or "",
                "maximum_annotations": got.maximum_annotations}

    def create_project(self, title: str, description: str, label_config: str,
                       maximum_annotations: int) -> int:
        created = self._call(f"creating project {title!r}", lambda: self._sdk.projects.create(
            title=title, description=description, label_config=label_config,
            maximum_annotations=maximum_annotations))
        return int(created.id)

    def update_project(self, project_id: int, **changes: Any) -> None:
        self._call(f"updating project {project_id} ({', '.join(changes)})",
                   lambda: self._sdk.projects.update(id=project_id, **changes))

    def tasks(self, project_id: int, page_size: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        """(task id, task data) of every task in the project."""
        def fetch() -> list[tuple[int, dict[str, Any]]]:
            pager = self._sdk.tasks.list(project=project_id, page_size=page_size,
                                         fields="task_only", include="id,data")
            return [(int(t.id), dict(t.data or {})) for t in pager]
        return self._call(f"listing the tasks of project {project_id}", fetch)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        """Create tasks; returns how many the server made. No retry: a rerun is idempotent."""
        result = self._call(
            f"importing {len(tasks)} tasks into project {project_id}",
            lambda: self._sdk.projects.import_tasks(id=project_id, request=tasks,
                                                    request_options={"max_retries": 0}))
        return int(result.task_count or 0)

    def update_task_data(self, task_id: int, data: dict[str, Any]) -> None:
        self._call(f"updating task {task_id}",
                   lambda: self._sdk.tasks.update(id=str(task_id), data=data))

    def local_storages(self, project_id: int) -> list[str]:
        """Paths of the project's local-files import storages."""
        return self._call(
            "listing local-files storages",
            lambda: [s.path or "" for s in self._sdk.import_storage.local.list(project=project_id)])

    def add_local_storage(self, project_id: int, path: str, title: str) -> None:
        """Register a local-files storage (never synced: tasks are imported by `push`)."""
        storages = self._sdk.import_storage.local
        self._call(f"adding local-files storage {path}", lambda: storages.create(
            project=project_id, path=path, title=title, use_blob_urls=True, regex_filter=""))

    def export(self, project_id: int) -> bytes:
        """The full JSON export of every task (cancelled annotations included)."""
        def download() -> bytes:
            chunks: Iterable[bytes] = self._sdk.projects.exports.download_sync(
                project_id, export_type="JSON", download_all_tasks=True)
            return b"".join(chunks)
        return self._call(f"exporting project {project_id}", download)
