"""Pair search (Hamming, cosine) and clustering: exact results, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from curate.dedup import clusters as cl
from curate.dedup.hamming import brute_force_pairs, hamming_pairs, mih_pairs, plan


def planted_hashes(n: int, seed: int, bits: int = 64, near_fraction: float = 0.1) -> np.ndarray:
    """Random hashes, a fraction of them copies of others with a few bits flipped, plus a
    block of identical hashes (one huge bucket, the worst case for the tables)."""
    rng = np.random.default_rng(seed)
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, n).astype(np.uint64)
    h &= mask
    k = int(n * near_fraction)
    src, dst = rng.integers(0, n, k), rng.integers(0, n, k)
    flips = np.zeros(k, dtype=np.uint64)
    for _ in range(rng.integers(1, 14)):
        flips ^= np.uint64(1) << rng.integers(0, bits, k).astype(np.uint64)
    h[dst] = h[src] ^ flips
    if n > 40:
        h[:30] = h[30]
    return h


def as_set(pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> set[tuple[int, int, int]]:
    return {(int(i), int(j), int(d)) for i, j, d in zip(*pairs)}


@pytest.mark.parametrize("n", [0, 1, 2, 50, 3000])
@pytest.mark.parametrize("threshold", [0, 3, 10])
def test_hamming_pairs_are_exactly_the_brute_force_pairs(n: int, threshold: int) -> None:
    h = planted_hashes(n, seed=n + threshold)
    expected = brute_force_pairs(h, threshold)
    got = hamming_pairs(h, threshold)
    assert as_set(got) == as_set(expected)
    assert all((a == b).all() for a, b in zip(got, expected))  # same order too: sorted (i, j)
    if n > 40:
        assert len(expected[0]) > 400  # the planted pairs and the identical block are there


@pytest.mark.parametrize("m", [3, 4, 5, 7, 11])
def test_every_chunk_layout_is_exact_and_reports_each_pair_once(m: int) -> None:
    h = planted_hashes(2000, seed=m)
    got = mih_pairs(h, 10, m)
    pairs = list(zip(got[0].tolist(), got[1].tolist()))
    assert len(pairs) == len(set(pairs))
    assert all(i < j for i, j in pairs)
    assert as_set(got) == as_set(brute_force_pairs(h, 10))


def test_short_hashes_and_forced_methods_agree() -> None:
    h = planted_hashes(1500, seed=7, bits=42)  # colorhash size
    expected = as_set(brute_force_pairs(h, 6))
    assert as_set(hamming_pairs(h, 6, bits=42, method="mih")) == expected
    assert as_set(hamming_pairs(h, 6, bits=42, method="brute")) == expected


def test_planner_picks_brute_force_only_where_it_is_cheaper() -> None:
    _, small = plan(10, 10)
    m, big = plan(1_000_000, 10)
    assert small >= 10 * 10 / 2  # tiny sets: brute force
    assert big < 1_000_000**2 / 2 / 50  # large sets: far below the quadratic cost
    assert 3 <= m <= 11


def test_hamming_pairs_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="method"):
        hamming_pairs(np.zeros(3, np.uint64), 2, method="fast")
    with pytest.raises(ValueError, match="bits"):
        hamming_pairs(np.zeros(3, np.uint64), 2, bits=65)


# ------------------------------------------------------------------------ clusters


def test_union_find_merges_chains_and_labels_by_smallest_index() -> None:
    labels = cl.components(7, np.array([5, 1, 3]), np.array([6, 3, 6]))
    assert labels.tolist() == [0, 1, 2, 1, 4, 1, 1]
    assert cl.components(3, np.array([], np.int64), np.array([], np.int64)).tolist() == [0, 1, 2]


def cand(image_id: str, w: int = 100, h: int = 100, sharp: float = 1.0, size: int = 1000,
         uris: tuple[str, ...] = ("x",)) -> cl.Candidate:
    return cl.Candidate(image_id, w, h, sharp, size, uris)


KEEP = ("resolution", "sharpness", "bytes", "source_priority")


def test_keep_policy_applies_criteria_in_order() -> None:
    big = cand("b", w=200)
    sharp = cand("s", sharp=2.0, size=10)
    heavy = cand("h", size=5000)
    assert cl.choose_kept([sharp, big, heavy], KEEP, ()).image_id == "b"
    assert cl.choose_kept([sharp, heavy], KEEP, ()).image_id == "s"
    assert cl.decide(sharp, heavy, KEEP, ())[1] == "sharpness"
    # Reordered criteria: file size first.
    assert cl.choose_kept([sharp, big, heavy], ("bytes", "resolution"), ()).image_id == "h"


def test_sharpness_within_tolerance_is_a_tie_decided_by_file_size() -> None:
    reencoded = cand("r", sharp=1.03, size=300)  # JPEG blocks look a little "sharper"
    original = cand("o", sharp=1.00, size=1200)
    assert cl.choose_kept([reencoded, original], KEEP, (), 0.1).image_id == "o"
    assert cl.decide(original, reencoded, KEEP, (), 0.1) == (-1, "bytes")
    assert cl.choose_kept([reencoded, original], KEEP, (), 0.0).image_id == "r"


def test_source_priority_and_final_tie_break() -> None:
    scraped = cand("a", uris=("https://forum.example/x.jpg",))
    studio = cand("z", uris=("data/raw/other.jpg", "data/studio/x.jpg"))
    patterns = ("data/studio/*", "https://*")
    assert cl.choose_kept([scraped, studio], KEEP, patterns).image_id == "z"
    assert cl.source_rank(("nothing",), patterns) == 2
    twins = [cand("b"), cand("a")]
    assert cl.choose_kept(twins, KEEP, ()).image_id == "a"
    assert cl.decide(twins[1], twins[0], KEEP, ())[1] == "image_id"


def test_link_paths_explain_each_member_by_the_strongest_route() -> None:
    edges = {
        (0, 1): cl.Edge("embedding", 12, 0.98),
        (0, 2): cl.Edge("hash", 3, 0.99),
        (1, 2): cl.Edge("exact", 0, 1.0),
        (2, 3): cl.Edge("hash", 5, 0.97),
    }
    links = cl.link_paths(0, cl.adjacency(edges))
    assert links[2] == (0, edges[(0, 2)])
    assert links[1] == (0, edges[(0, 1)])  # direct edge to the kept image wins over a detour
    assert links[3] == (2, edges[(2, 3)])  # transitive member: via its neighbour
    assert edges[(0, 1)].distance == pytest.approx(0.02)
    assert edges[(1, 2)].distance == 0.0 and edges[(0, 2)].distance == 3.0
