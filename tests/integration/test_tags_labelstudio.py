"""The tags stage against a real Label Studio server on 127.0.0.1.

One server per test session (its venv and a pre-migrated database are built once under
.cache/venvs, see `curate.tags.localserver`). The demo images are generated, ingested and
pushed; two annotators then submit through the API the way the annotation UI does (percent
coordinates, skips, corrections), and the pull must give the merged tags and pixel geometry
exactly. Failures (bad token, missing project, server gone, connection cut mid-export) must say
what to fix and leave the previous snapshot alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml
from label_studio_sdk import LabelStudio

from core.config import from_mapping
from core.manifest import read_table
from curate.config import Params
from curate.demo.generate import generate_demo
from curate.stages.ingest import IngestOptions, run_ingest
from curate.stages.tags import PushOptions, TagsError, run_pull, run_push
from curate.tags.localserver import LocalServer, User

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- fixtures


@dataclass
class Workspace:
    root: Path
    manifest: pd.DataFrame

    def mapping(self, title: str, **tags: Any) -> dict[str, Any]:
        root = self.root
        return {
            "workers": 1,
            "paths": {"store": str(root / "data/store"), "cache": str(root / "cache")},
            "ingest": {"sources": [{"kind": "folder", "path": str(root / "data/demo/raw")}]},
            "tags": {
                "project": {"title": title, "annotators_per_task": 2},
                "images": {"document_root": str(root)},
                "push": {"manifest": str(root / "data/ingest/manifest.parquet")},
                "export": str(root / title.replace(" ", "_") / "export.json"),
                "snapshot": str(root / title.replace(" ", "_") / "export.json"),
                **tags,
            },
        }

    def params(self, title: str, **tags: Any) -> Params:
        return from_mapping(Params, self.mapping(title, **tags), "")

    def out(self, title: str) -> Path:
        return self.root / title.replace(" ", "_")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The demo (small), ingested into a store under one root that Label Studio serves."""
    root = tmp_path_factory.mktemp("tags_ws")
    generate_demo(root / "data/demo", seed=1, n_base=16, workers=2)
    ws = Workspace(root, pd.DataFrame())
    run_ingest(ws.params("setup"), IngestOptions(out_dir=root / "data/ingest", workers=2))
    ws.manifest = read_table(root / "data/ingest/manifest.parquet")
    return ws


@pytest.fixture(scope="session")
def server(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[LocalServer]:
    with LocalServer(tmp_path_factory.mktemp("ls") / "data", workspace.root) as srv:
        yield srv


@pytest.fixture
def env(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.admin.token)
    return server


def sdk(server: LocalServer, user: User) -> LabelStudio:
    return LabelStudio(base_url=server.url, api_key=user.token)


def project_tasks(server: LocalServer, title: str) -> dict[str, tuple[int, dict[str, Any]]]:
    """image_id -> (task id, data) of the project titled ``title``."""
    ls = sdk(server, server.admin)
    (project,) = [p for p in ls.projects.list(title=title) if p.title == title]
    tasks = ls.tasks.list(project=project.id, page_size=1000)
    return {t.data["image_id"]: (t.id, t.data) for t in tasks}


# ------------------------------------------------------ what annotators send


def region(kind: str, name: str, value: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    return {"from_name": name, "to_name": "image", "type": kind, "value": value,
            "original_width": size[0], "original_height": size[1], "image_rotation": 0}


def category(value: str, size: tuple[int, int]) -> dict[str, Any]:
    return region("choices", "category", {"choices": [value]}, size)


def crop(x: float, y: float, w: float, h: float, rotation: float, size: tuple[int, int]
         ) -> dict[str, Any]:
    return region("rectanglelabels", "crop", {"x": x, "y": y, "width": w, "height": h,
                                              "rotation": rotation, "rectanglelabels": ["crop"]},
                  size)


def keypoint(label: str, x: float, y: float, size: tuple[int, int]) -> dict[str, Any]:
    return region("keypointlabels", "keypoints",
                  {"x": x, "y": y, "width": 0.8, "keypointlabels": [label]}, size)


def note(text: str, size: tuple[int, int]) -> dict[str, Any]:
    return region("textarea", "note", {"text": [text]}, size)


def submit(server: LocalServer, user: User, task_id: int, result: list[dict[str, Any]],
           cancelled: bool = False) -> int:
    created = sdk(server, user).annotations.create(id=task_id, result=result,
                                                   was_cancelled=cancelled, lead_time=12.5)
    return int(created.id)


def px(percent: float, total: int) -> float:
    return percent * total / 100.0


# ------------------------------------------------------------------- tests


def test_push_creates_the_project_and_serves_images_from_the_store(
        env: LocalServer, workspace: Workspace) -> None:
    title = "push once"
    report = run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    live = workspace.manifest[workspace.manifest["status"] == "ok"]
    assert report.summary.counts["new task"] == len(live) > 10
    assert report.details["events"] == [f"created project {title!r}", ("added local-files storage "
                             f"{workspace.root.as_posix()}/data/store")]
    tasks = project_tasks(env, title)
    assert set(tasks) == set(live["image_id"])
    # the browser can load each image through the local-files storage: same bytes as the store
    row = live.iloc[0]
    _, data = tasks[row.image_id]
    assert data["image"] == f"/data/local-files/?d=data/store/{row.store_path}"
    got = httpx.get(env.url + data["image"],
                    headers={"Authorization": f"Token {env.admin.token}"}, timeout=30)
    assert got.status_code == 200
    assert got.content == (workspace.root / "data/store" / row.store_path).read_bytes()
    project = sdk(env, env.admin).projects.list(title=title)
    (p,) = [p for p in project if p.title == title]
    config = sdk(env, env.admin).projects.get(id=p.id).label_config
    assert '<Choice value="reject"/>' in config and '<Label value="heel"' in config

    again = run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    assert again.summary.counts["new task"] == 0
    assert again.summary.counts["already in project"] == len(live)
    assert again.details == {"events": [], "project_id": report.details["project_id"]}
    assert len(project_tasks(env, title)) == len(live)


def test_random_sample_pushes_grow_without_duplicates(env: LocalServer,
                                                      workspace: Workspace) -> None:
    title = "random sample"
    params = workspace.params(title, push={"manifest": str(workspace.root /
                                                           "data/ingest/manifest.parquet"),
                                           "strategy": "random", "n": 3, "seed": 4})
    first = run_push(params, PushOptions(out_dir=workspace.out(title)))
    ids_first = set(project_tasks(env, title))
    second = run_push(params, PushOptions(out_dir=workspace.out(title)))
    ids_second = set(project_tasks(env, title))
    assert first.summary.counts["new task"] == second.summary.counts["new task"] == 3
    assert len(ids_first) == 3 and len(ids_second) == 6 and ids_first < ids_second
    # switching to serve by URL re-points the existing tasks instead of duplicating them
    url_params = workspace.params(title, images={"serve": "url",
                                                 "url_base": "https://cdn.example/store"},
                                  push={"manifest": str(workspace.root /
                                                        "data/ingest/manifest.parquet"),
                                        "n": 1})
    third = run_push(url_params, PushOptions(out_dir=workspace.out(title)))
    assert third.summary.reasons["image URL re-pointed"] == 6
    assert third.summary.counts["new task"] == 1
    urls = [d["image"] for _, d in project_tasks(env, title).values()]
    assert len(urls) == 7 and all(u.startswith("https://cdn.example/store/") for u in urls)


def _three_subjects(raw: Path) -> dict[str, str]:
    """Four framings each of three unrelated photos; file name -> subject."""
    import skimage.data
    from PIL import Image

    raw.mkdir(parents=True, exist_ok=True)
    subjects = {}
    for name in ("astronaut", "coffee", "chelsea"):
        photo = getattr(skimage.data, name)()
        h, w = photo.shape[:2]
        for k, (fx, fy) in enumerate(((0, 0), (0.1, 0), (0, 0.1), (0.08, 0.08))):
            x, y = int(fx * w), int(fy * h)
            Image.fromarray(photo[y:y + int(h * 0.9), x:x + int(w * 0.9)]).save(
                raw / f"{name}-{k}.jpg", quality=90)
            subjects[f"{name}-{k}.jpg"] = name
    return subjects


def test_diverse_push_sends_one_image_per_kind(env: LocalServer, workspace: Workspace) -> None:
    """`--strategy diverse -n 3` on three subjects: one task each, embedded with the run's
    params (its own store and cache, not whatever params.yaml the working directory has)."""
    title = "diverse"
    root = workspace.root / "diverse"
    subjects = _three_subjects(root / "raw")
    mapping = workspace.mapping(title, push={"manifest": str(root / "ingest/manifest.parquet"),
                                             "strategy": "diverse", "n": 3})
    mapping["paths"] = {"store": str(root / "store"), "cache": str(root / "cache"),
                        "models": str(REPO / "models/pretrained")}
    mapping["ingest"] = {"sources": [{"kind": "folder", "path": str(root / "raw")}]}
    params = from_mapping(Params, mapping, "")
    run_ingest(params, IngestOptions(out_dir=root / "ingest", workers=1))
    pushed = run_push(params, PushOptions(out_dir=workspace.out(title)))
    assert pushed.computed == pushed.summary.counts["new task"] == 3
    assert pushed.summary.counts["not selected"] == len(subjects) - 3
    manifest = read_table(root / "ingest/manifest.parquet").set_index("image_id")
    chosen = [Path(manifest.loc[i, "source_uri"]).name for i in project_tasks(env, title)]
    assert sorted(subjects[f] for f in chosen) == ["astronaut", "chelsea", "coffee"]


def test_round_trip_merges_annotators_and_converts_geometry(env: LocalServer,
                                                           workspace: Workspace) -> None:
    title = "round trip"
    run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    tasks = project_tasks(env, title)
    sizes = {r.image_id: (int(r.width), int(r.height)) for r in workspace.manifest.itertuples()}
    ids = sorted(tasks, key=lambda i: tasks[i][0])
    admin, bob = env.admin, env.annotator
    disagree, skipped, corrected, rejected, agreed, bad = ids[:6]

    # two annotators disagree; the admin draws a rotated box and both keypoints
    s = sizes[disagree]
    submit(env, admin, tasks[disagree][0], [
        category("soles", s), crop(10, 20, 30, 40, 15, s), keypoint("heel", 25, 75, s),
        keypoint("toe", 50, 10, s)])
    submit(env, bob, tasks[disagree][0], [category("pov", s), crop(20, 30, 30, 40, 25, s)])
    # bob skips; the admin tags
    s = sizes[skipped]
    submit(env, bob, tasks[skipped][0], [], cancelled=True)
    submit(env, admin, tasks[skipped][0], [category("pov", s)])
    # the admin edits an annotation later; bob submits twice, the newer one counts
    s = sizes[corrected]
    first = submit(env, admin, tasks[corrected][0], [category("soles", s)])
    sdk(env, admin).annotations.update(id=first, result=[category("pov", s),
                                                         keypoint("heel", 40, 60, s)])
    submit(env, bob, tasks[corrected][0], [category("soles", s)])
    submit(env, bob, tasks[corrected][0], [category("pov", s), keypoint("heel", 50, 70, s)])
    # a reject with a note wins over a category
    s = sizes[rejected]
    submit(env, admin, tasks[rejected][0], [category("reject", s), note("blurry, unusable", s)])
    submit(env, bob, tasks[rejected][0], [category("soles", s)])
    # agreement: boxes at 350 and 10 degrees average to 0
    s = sizes[agreed]
    submit(env, admin, tasks[agreed][0], [category("pov", s), crop(10, 10, 50, 50, 350, s)])
    submit(env, bob, tasks[agreed][0], [category("pov", s), crop(20, 30, 40, 60, 10, s)])
    # the server stores results the config does not allow; the pull must not
    s = sizes[bad]
    submit(env, admin, tasks[bad][0], [category("sandals", s)])

    pulled = run_pull(workspace.params(title), out_dir=workspace.out(title))
    out = workspace.out(title)
    assert (out / "export.json").exists()
    tags = read_table(out / "tags.parquet")
    merged = read_table(out / "merged.parquet").set_index("image_id")
    assert len(merged) == 6 and pulled.details["agreement"]["images"] == 6

    row = merged.loc[disagree]
    w, h = sizes[disagree]
    assert (row.verdict, row.category, bool(row.reject), row.n_annotators, row.n_agree) == (
        "disputed", "disputed", False, 2, 0)
    assert row.bbox_x == pytest.approx((px(10, w) + px(20, w)) / 2, rel=1e-12)
    assert row.bbox_y == pytest.approx((px(20, h) + px(30, h)) / 2, rel=1e-12)
    assert row.bbox_w == pytest.approx(px(30, w), rel=1e-12)
    assert row.bbox_h == pytest.approx(px(40, h), rel=1e-12)
    assert row.bbox_rotation == pytest.approx(20.0)
    assert (row.kp_heel_x, row.kp_heel_y) == (px(25, w), px(75, h))
    assert (row.kp_toe_x, row.kp_toe_y) == (px(50, w), px(10, h))
    admin_row = tags[(tags.image_id == disagree) & (tags.annotator == 1)].iloc[0]
    assert (admin_row.bbox_x, admin_row.bbox_y, admin_row.bbox_w, admin_row.bbox_h,
            admin_row.bbox_rotation) == (px(10, w), px(20, h), px(30, w), px(40, h), 15.0)
    assert (admin_row.original_width, admin_row.original_height) == (w, h)

    row = merged.loc[skipped]
    assert (row.verdict, row.n_annotators, row.annotators) == ("pov", 1, "1")
    assert tags[(tags.image_id == skipped) & (tags.annotator == 2)]["cancelled"].tolist() == [True]

    row = merged.loc[corrected]
    w, h = sizes[corrected]
    assert (row.verdict, row.n_annotators, row.n_agree, row.votes) == ("pov", 2, 2, "pov:2")
    assert (row.kp_heel_x, row.kp_heel_y) == (pytest.approx((px(40, w) + px(50, w)) / 2),
                                              pytest.approx((px(60, h) + px(70, h)) / 2))
    bob_rows = tags[(tags.image_id == corrected) & (tags.annotator == 2)]
    assert bob_rows.sort_values("annotation_id")["latest"].tolist() == [False, True]

    row = merged.loc[rejected]
    assert (row.verdict, bool(row.reject), row.category, row.note) == (
        "reject", True, "soles", "blurry, unusable")

    row = merged.loc[agreed]
    w, h = sizes[agreed]
    assert (row.verdict, row.n_agree, row.agreement) == ("pov", 2, 1.0)
    assert row.bbox_rotation == 0.0
    assert row.bbox_x == pytest.approx((px(10, w) + px(20, w)) / 2, rel=1e-12)
    assert row.bbox_h == pytest.approx((px(50, h) + px(60, h)) / 2, rel=1e-12)

    row = merged.loc[bad]
    assert pd.isna(row.verdict) and list(row.problems) == ["unknown_choice:sandals"]

    (pair,) = pulled.details["agreement"]["pairwise"]
    assert pair["annotators"] == [1, 2] and pair["images"] == 4
    assert pair["agreement"] == 0.5  # corrected and agreed match; disagree and rejected do not
    agreed = pulled.details["agreement"]
    assert agreed["cancelled"] == 1 and agreed["superseded"] == 1
    assert agreed["pending_tasks"] == len(tasks) - 6

    # images tagged here are not sent again to another project
    again = run_push(workspace.params("second round"),
                     PushOptions(out_dir=workspace.out(title)))
    assert again.summary.counts["already tagged"] == 6
    assert again.summary.counts["new task"] == len(tasks) - 6


def test_cli_pull_never_shows_the_token(env: LocalServer, workspace: Workspace,
                                        tmp_path: Path) -> None:
    title = "cli pull"
    run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(workspace.mapping(title)))
    cmd = [str(BIN / "curate"), "tags", "pull", "--params", str(params), "--out",
           str(workspace.out(title))]
    run_env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    ok = subprocess.run(cmd, check=False, capture_output=True, text=True, env=run_env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300,
                         env=dict(run_env, LABEL_STUDIO_API_KEY="not-" + env.admin.token))
    assert bad.returncode == 1
    assert "refused the token in LABEL_STUDIO_API_KEY" in " ".join(bad.stderr.split())
    assert "Traceback" not in bad.stderr
    for text in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert env.admin.token not in text
    for path in workspace.out(title).iterdir():
        assert env.admin.token.encode() not in path.read_bytes(), path


def _snapshot(workspace: Workspace, title: str) -> bytes:
    """Make a first good snapshot for ``title``; return its bytes."""
    run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    run_pull(workspace.params(title), out_dir=workspace.out(title))
    return (workspace.out(title) / "export.json").read_bytes()


def _unchanged(workspace: Workspace, title: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in workspace.out(title).iterdir()}


@pytest.mark.parametrize(("case", "message"), [
    ("bad token", "refused the token in LABEL_STUDIO_API_KEY"),
    ("missing project", "no project titled 'no such project': run `curate tags push`"),
    ("unreachable", "cannot reach Label Studio at http://127.0.0.1:"),
    ("no url", "LABEL_STUDIO_URL is not set"),
])
def test_failures_say_what_to_fix_and_keep_the_snapshot(
        case: str, message: str, env: LocalServer, workspace: Workspace,
        monkeypatch: pytest.MonkeyPatch, refused_port: int) -> None:
    title = "failures"
    if not (workspace.out(title) / "export.json").exists():
        _snapshot(workspace, title)
    before = _unchanged(workspace, title)
    params = workspace.params(title)
    if case == "bad token":
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0" * 40)
    elif case == "missing project":
        params = workspace.params("no such project",
                                  export=str(workspace.out(title) / "export.json"))
    elif case == "unreachable":
        monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{refused_port}")
    else:
        monkeypatch.delenv("LABEL_STUDIO_URL")
    with pytest.raises(TagsError, match=message.replace("(", r"\(")) as err:
        run_pull(params, out_dir=workspace.out(title))
    assert env.admin.token not in str(err.value)
    assert _unchanged(workspace, title) == before


class CuttingProxy(threading.Thread):
    """A TCP proxy to the server that cuts any connection mid-way through an export response."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.upstream_port, self.cut_after = upstream_port, cut_after
        self.cuts = 0

    def run(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"export": False}

        def up() -> None:
            try:
                while data := client.recv(65536):
                    if b"/export" in data:
                        state["export"] = True
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if state["export"]:
                    room = self.cut_after - sent
                    client.sendall(data[:max(room, 0)])
                    sent += len(data)
                    if sent >= self.cut_after:
                        self.cuts += 1
                        break
                else:
                    client.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):  # shutdown sends FIN now, even with a reader blocked
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.sock.close()


def test_connection_cut_mid_export_keeps_the_snapshot(env: LocalServer, workspace: Workspace,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    title = "cut export"
    _snapshot(workspace, title)
    before = _unchanged(workspace, title)
    proxy = CuttingProxy(env.port, cut_after=len(before["export.json"]) // 2)
    proxy.start()
    try:
        monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{proxy.port}")
        with pytest.raises(TagsError, match="connection to Label Studio|not a complete") as err:
            run_pull(workspace.params(title, timeout_s=20), out_dir=workspace.out(title))
    finally:
        proxy.close()
    assert proxy.cuts >= 1, err.value
    assert _unchanged(workspace, title) == before


def test_server_stopped_between_push_and_pull(workspace: Workspace, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    title = "stopped server"
    with LocalServer(tmp_path / "data", workspace.root) as other:
        monkeypatch.setenv("LABEL_STUDIO_URL", other.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", other.admin.token)
        first = _snapshot(workspace, title)
    before = _unchanged(workspace, title)
    with pytest.raises(TagsError, match=f"cannot reach Label Studio at {other.url}"):
        run_pull(workspace.params(title), out_dir=workspace.out(title))
    with pytest.raises(TagsError, match="is the server running"):
        run_push(workspace.params(title), PushOptions(out_dir=workspace.out(title)))
    assert _unchanged(workspace, title) == before and before["export.json"] == first
