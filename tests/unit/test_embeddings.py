"""Shared embeddings: real MobileNetV2 vectors, a compact per-image cache, only new work done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from core.config import from_mapping
from core.models import ModelMissingError
from curate.config import Params
from curate.embeddings import (
    EmbeddingCache,
    cache_path,
    embed,
    embed_detailed,
    embed_images,
)

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick")


def params_for(root: Path, **embeddings: object) -> Params:
    return from_mapping(Params, {
        "workers": 1,
        "paths": {"store": str(root / "store"), "cache": str(root / "cache"),
                  "models": str(REPO / "models/pretrained")},
        "embeddings": embeddings,
    }, "")


def write_photos(root: Path) -> list[tuple[str, Path]]:
    items = []
    for name in PHOTOS:
        arr = getattr(skimage.data, name)()
        img = Image.fromarray(arr[..., :3] if arr.ndim == 3 else arr).convert("RGB")
        path = root / f"{name}.jpg"
        img.save(path, quality=90)
        items.append((name, path))
    small = Image.open(root / "coffee.jpg").resize((300, 200), Image.Resampling.LANCZOS)
    small.save(root / "coffee-small.jpg", quality=75)
    items.append(("coffee-small", root / "coffee-small.jpg"))
    return items


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Path]]]:
    root = tmp_path_factory.mktemp("emb")
    return root, write_photos(root)


def test_vectors_are_normalised_and_see_content(photos) -> None:
    root, items = photos
    params = params_for(root / "a")
    v = embed(params, items)
    assert v.shape == (len(items), 1280) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=2e-3)
    sims = v @ v.T
    names = [n for n, _ in items]
    copy = sims[names.index("coffee"), names.index("coffee-small")]
    others = [sims[a, b] for a in range(len(PHOTOS)) for b in range(a + 1, len(PHOTOS))]
    assert copy > 0.95 and max(others) < 0.8, (copy, max(others))


def test_only_new_images_are_computed_and_the_cache_is_float16(photos) -> None:
    root, items = photos
    params = params_for(root / "b")
    first = embed_detailed(params, items[:4])
    assert (first.computed, first.cached) == (4, 0)
    again = embed_detailed(params, items)  # 4 known + 3 new (and a repeated item)
    assert (again.computed, again.cached) == (3, 4)
    assert np.allclose(again.vectors[:4], first.vectors, atol=0)
    with EmbeddingCache(cache_path(params)) as cache:
        op = next(iter(cache._db.execute("SELECT op FROM vectors")))[0]
        assert cache.count(op) == len(items)
        blob = cache._db.execute("SELECT vec FROM vectors LIMIT 1").fetchone()[0]
        assert len(blob) == 1280 * 2  # float16, not JSON
    assert embed_detailed(params, items + items[:1]).computed == 0


def test_changing_the_input_size_recomputes(photos) -> None:
    root, items = photos
    embed(params_for(root / "c"), items[:2])
    res = embed_detailed(params_for(root / "c", image_size=160), items[:2])
    assert res.computed == 2


def test_undecodable_images_get_nan_rows_and_a_message(photos, images) -> None:
    root, items = photos
    bad = images.write(root / "bad.jpg", images.truncated_jpeg())
    res = embed_detailed(params_for(root / "d"), [items[0], ("bad", bad), ("gone", root / "x.jpg")])
    assert not np.isnan(res.vectors[0]).any()
    assert np.isnan(res.vectors[1]).all() and np.isnan(res.vectors[2]).all()
    assert res.errors["bad"].startswith("truncated") and res.errors["gone"].startswith("unreadable")
    assert res.computed == 1


def test_manifest_helper_embeds_only_included_rows(photos) -> None:
    root, items = photos
    rels = [str(p.relative_to(root)) for _, p in items[:3]]
    params = from_mapping(Params, {"workers": 1, "paths": {
        "store": str(root), "cache": str(root / "e-cache"),
        "models": str(REPO / "models/pretrained")}}, "")
    v = embed_images(params, [n for n, _ in items[:3]], rels, [True, False, True])
    assert not np.isnan(v[0]).any() and np.isnan(v[1]).all() and not np.isnan(v[2]).any()


def test_missing_weights_name_the_command_only_when_work_is_needed(photos, tmp_path, monkeypatch
                                                                  ) -> None:
    root, items = photos
    monkeypatch.setenv("CURATE_MODELS_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelMissingError, match="curate models provision"):
        embed(params_for(tmp_path), items[:1])
    params = params_for(root / "b")  # everything cached there: no model needed
    assert embed_detailed(params, items[:2]).cached == 2


def test_bytes_of_the_same_image_in_another_format_embed_alike(photos, tmp_path) -> None:
    _root, items = photos
    png = tmp_path / "coffee.png"
    Image.open(dict(items)["coffee"]).save(png)
    v = embed(params_for(tmp_path), [("jpg", dict(items)["coffee"]), ("png", png)])
    assert float(v[0] @ v[1]) > 0.99


def test_the_network_runs_channels_last_with_the_default_layouts_features(photos) -> None:
    """The speed-up's layout is in place, and it does not change what a vector means."""
    import copy

    import torch

    from core.models import require
    from curate.embeddings import load_model, preprocess

    _, items = photos
    net = load_model("mobilenet_v2", str(require("mobilenet_v2", REPO / "models/pretrained")), 1)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last)
                         for m in convs)
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    batch = torch.from_numpy(np.stack([preprocess(p, 224, (255, 255, 255)) for _, p in items]))
    with torch.inference_mode():
        fast = net(batch.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        slow = plain(batch).mean(dim=(2, 3))
    assert not plain[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast, slow, atol=1e-5)
