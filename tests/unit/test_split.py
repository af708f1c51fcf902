"""Split: tags win, k-NN propagates with a confidence, k-means only proposes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.config import ConfigError, from_mapping
from curate.config import Params
from curate.split.propagate import cross_validated_accuracy, kmeans, knn_predict
from curate.stages.split import assign, tagged_distribution


def _two_blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = np.zeros(32)
    centre[0] = 2.5
    x = np.vstack([rng.normal(0, 1, (n, 32)) + centre, rng.normal(0, 1, (n, 32)) - centre])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.r_[np.zeros(n, int), np.ones(n, int)]


def test_knn_separates_blobs_and_is_unsure_in_between() -> None:
    x, y = _two_blobs(100)
    pred = knn_predict(x[::2], y[::2], x[1::2], 2, k=10)
    assert (pred.labels == y[1::2]).mean() > 0.95
    assert cross_validated_accuracy(x, y, 2) > 0.95
    loo = knn_predict(x, y, x, 2, k=1, exclude_self=True)  # never its own label for free
    assert (loo.labels == y).mean() < 1.0 or len(set(loo.confidence)) > 1
    # CNN-like features: images of either group are sure, images between the two are not
    x, y = _positive_blobs(100)
    held_out = knn_predict(x[::2], y[::2], x[1::2], 2, k=10)
    assert (held_out.labels == y[1::2]).all() and held_out.confidence.mean() > 0.95
    between = np.abs(np.random.default_rng(5).normal(0, 1, (20, 32)))
    between[:, :2] += 4  # as near the one group's centre as the other's
    between /= np.linalg.norm(between, axis=1, keepdims=True)
    unsure = knn_predict(x, y, between.astype(np.float32), 2, k=20).confidence
    assert unsure.mean() < 0.8 and (unsure < 0.7).sum() >= 5


def test_kmeans_finds_the_two_groups_deterministically() -> None:
    x, y = _two_blobs(80, seed=1)
    a, b = kmeans(x, 2, seed=3), kmeans(x, 2, seed=3)
    assert np.array_equal(a, b)
    assert max((a == y).mean(), (a != y).mean()) > 0.95


def test_assign_uses_tags_then_propagation_then_unassigned() -> None:
    x, y = _two_blobs(30)
    names = np.array(["soles", "pov"])
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(len(y))]})
    tagged_ids = [f"id{i}" for i in (*range(10), *range(30, 40))]
    tags = pd.DataFrame({"image_id": [*tagged_ids, "id12"],
                         "verdict": ["soles"] * 10 + ["pov"] * 10 + ["disputed"]})
    tagged = tagged_distribution(live, tags, Params())
    assert pd.isna(tagged.iloc[12])  # disputed is not a tag
    x[7] = np.nan  # an image whose embedding failed: fine when tagged, else unassigned
    out, report = assign(live, x, tagged, Params())
    assert (out.dist_source.iloc[[0, 9, 30, 39]] == "tag").all()
    assert out.dist_source.iloc[7] == "tag"  # a tag needs no embedding
    x[17] = np.nan
    out, report = assign(live, x, tagged, Params())
    assert out.dist_source.iloc[17] == "unassigned"
    prop = out[out.dist_source == "propagated"]
    assert len(prop) > 30
    truth = names[y[prop.index]]
    assert (prop.distribution.to_numpy() == truth).mean() > 0.95
    assert report["tagged"] == 20 and report["cv_accuracy"] > 0.9


def _positive_blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two groups of non-negative unit vectors, like pooled CNN features: every cosine is
    positive (about 0.8 within a group, 0.5 across), so far neighbours' votes still count."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0, 1, (2 * n, 32)))
    x[:n, 0] += 4
    x[n:, 1] += 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.r_[np.zeros(n, int), np.ones(n, int)]


def test_a_category_with_few_tags_still_reaches_its_images() -> None:
    """5 pov tags against 25 soles tags: among 10 voters at least 5 are soles, so no pov
    image could reach 0.7 confidence; k shrinks to the smallest category's tag count."""
    x, y = _positive_blobs(40)
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(len(y))]})
    tags = pd.DataFrame({"image_id": [f"id{i}" for i in (*range(25), *range(40, 45))],
                         "verdict": ["soles"] * 25 + ["pov"] * 5})
    params = _split_params({"name": "soles", "categories": ["soles"]},
                           {"name": "pov", "categories": ["pov"]}, k=10, min_confidence=0.7)
    out, report = assign(live, x, tagged_distribution(live, tags, params), params)
    assert report["k"] == 5
    assert (out.iloc[45:].distribution == "pov").all()
    assert (out.iloc[25:40].distribution == "soles").all()


def _split_params(*distributions: dict, **split: object) -> Params:
    return from_mapping(Params, {"split": {"distributions": list(distributions), **split}}, "")


def test_no_tags_proposes_groups_without_deciding() -> None:
    x, y = _two_blobs(20)
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(40)]})
    out, report = assign(live, x, tagged_distribution(live, None, Params()), Params())
    assert set(out.proposal) == {"cluster_0", "cluster_1"}
    assert out.distribution.isna().all() and (out.dist_source == "unassigned").all()
    assert "proposed" in report["mode"]
    assert report["proposals"] == {"cluster_0": 20, "cluster_1": 20}
    groups = out.proposal.to_numpy()
    assert max((groups == np.where(y == 0, "cluster_0", "cluster_1")).mean(),
               (groups == np.where(y == 1, "cluster_0", "cluster_1")).mean()) > 0.95


def test_proposals_are_numbered_largest_first() -> None:
    x, _ = _two_blobs(30)
    keep = np.r_[0:30, 30:40]  # 30 of one blob, 10 of the other
    live = pd.DataFrame({"image_id": [f"id{i:02d}" for i in keep]})
    out, report = assign(live, x[keep], tagged_distribution(live, None, Params()), Params())
    assert report["proposals"] == {"cluster_0": 30, "cluster_1": 10}
    assert (out.proposal.iloc[:30] == "cluster_0").all()


def test_catch_all_takes_everything_nothing_else_assigns() -> None:
    x, _ = _two_blobs(10)
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(20)]})
    params = _split_params({"name": "all", "catch_all": True})
    out, report = assign(live, x, tagged_distribution(live, None, params), params)
    assert (out.distribution == "all").all() and (out.dist_source == "catch_all").all()
    assert report["proposals"] == {"cluster_0": 10, "cluster_1": 10}  # still proposed


def test_named_proposal_takes_its_group_and_tags_still_win() -> None:
    x, _ = _two_blobs(15)
    live = pd.DataFrame({"image_id": [f"id{i}" for i in range(30)]})
    params = _split_params({"name": "soles", "categories": ["soles"]},
                           {"name": "pov", "categories": ["pov"], "proposals": ["cluster_0"]},
                           {"name": "rest", "catch_all": True})
    out, _ = assign(live, x, tagged_distribution(live, None, params), params)
    named = out[out.dist_source == "proposal"]
    assert len(named) == 15 and (named.distribution == "pov").all()
    assert (out[out.proposal == "cluster_1"].distribution == "rest").all()
    tags = pd.DataFrame({"image_id": [named.index[0]], "verdict": ["soles"]})
    tags["image_id"] = live.image_id.iloc[tags.image_id].to_numpy()
    out, _ = assign(live, x, tagged_distribution(live, tags, params), params)
    assert out.loc[named.index[0], "dist_source"] == "tag"
    assert out.loc[named.index[0], "distribution"] == "soles"


@pytest.mark.parametrize("split,message", [
    ({"distributions": [{"name": "a", "proposals": ["cluster_2"]}]}, "does not exist"),
    ({"distributions": [{"name": "a", "proposals": ["group1"]}]}, "cluster_0"),
    ({"distributions": [{"name": "a", "proposals": ["cluster_0"]},
                        {"name": "b", "proposals": ["cluster_0"]}]}, "named by both"),
    ({"distributions": [{"name": "a", "catch_all": True}, {"name": "b", "catch_all": True}]},
     "at most one"),
    ({"distributions": [{"name": "a", "keypoint_targets": [[0.5, 0.2]]}]},
     r"distributions\[0\].keypoint_targets.*two different"),
    ({"distributions": [{"name": "a", "face_targets": [[0.5, 0.2], [0.5, 0.2]]}]},
     "face_targets.*two different"),
])
def test_bad_distribution_params_name_the_key(split, message) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(Params, {"split": split}, "")


def test_a_distribution_frames_with_its_own_targets() -> None:
    from curate.stages.prepare import settings_for

    params = from_mapping(Params, {"prepare": {"keypoints": {"targets": [[0.4, 0.3],
                                                                         [0.6, 0.3]]}},
                                   "split": {"distributions": [
                                       {"name": "full", "keypoint_targets": [[0.48, 0.16],
                                                                             [0.52, 0.16]],
                                        "face_targets": [[0.47, 0.2], [0.53, 0.2]]},
                                       {"name": "upper"}]}}, "")
    full, upper = (settings_for(params, d) for d in params.split.distributions)
    assert full.keypoint_targets == ((0.48, 0.16), (0.52, 0.16))
    assert full.face_targets == ((0.47, 0.2), (0.53, 0.2))
    assert upper.keypoint_targets == ((0.4, 0.3), (0.6, 0.3))  # the prepare section's
    assert upper.face_targets == ((0.385, 0.44), (0.615, 0.44))  # a face crop


def test_uncertain_strategy_sends_the_least_confident_first() -> None:
    from curate.tags.select import SelectionError, select

    rows = pd.DataFrame({"image_id": ["a", "b", "c", "d"],
                         "dist_confidence": [0.9, 0.4, np.nan, 0.6]})
    assert select("uncertain", rows, 3, 0, Params()) == ["c", "b", "d"]
    import pytest

    with pytest.raises(SelectionError, match="dvc repro split"):
        select("uncertain", rows.drop(columns="dist_confidence"), 2, 0, Params())
