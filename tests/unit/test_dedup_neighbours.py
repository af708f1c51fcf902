"""The embedding neighbour search: exact against brute force, and the same whether it runs
from scratch or updates the last run's result."""

from __future__ import annotations

import numpy as np
import pytest

from curate.dedup import neighbours as nb

SPEC = nb.SearchSpec(width=6, floor=0.2, threshold=0.97)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _collection(n: int, seed: int = 0, dim: int = 24) -> tuple[list[str], np.ndarray]:
    """Clustered vectors (near-copies among them) with random keys."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 15, 1), dim))
    v = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.6, size=(n, dim))
    v[: n // 10] = v[n // 10: 2 * (n // 10)] + rng.normal(scale=0.01, size=(n // 10, dim))
    keys = [f"{rng.integers(1 << 60):016x}" for _ in range(n)]
    return keys, _unit(v)


def _brute(keys: list[str], owners: np.ndarray, v: np.ndarray, primary: np.ndarray,
           spec: nb.SearchSpec) -> tuple[list[list[int]], set[tuple[int, int]]]:
    """Top `width` per row by (similarity, key) and the pairs over the threshold, by the
    canonical similarity of every pair."""
    n = len(keys)
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    sims = nb.canonical(v, ii.ravel(), jj.ravel()).reshape(n, n)
    ok = ~np.isnan(v).any(axis=1)
    lists = []
    for r in range(n):
        if not ok[r]:
            lists.append([])
            continue
        cand = [c for c in range(n) if ok[c] and owners[c] != owners[r]
                and sims[r, c] >= np.float32(spec.floor)]
        cand.sort(key=lambda c: (-sims[r, c], keys[c]))
        lists.append(cand[:spec.width])
    pairs = {(a, b) for a in range(n) for b in range(a + 1, n) if ok[a] and ok[b]
             and primary[a] and primary[b] and sims[a, b] >= np.float32(spec.threshold)}
    return lists, pairs


def _as_caller(found: nb.Neighbours) -> tuple[list[list[int]], set[tuple[int, int]]]:
    rows = found.rows if found.rows is not None else np.arange(len(found.keys))
    n = int(rows.max()) + 1 if len(rows) else 0
    lists: list[list[int]] = [[] for _ in range(n)]
    for r, row in enumerate(rows):
        lists[row] = [int(rows[c]) for c in found.lists[r, :found.spec.width] if c >= 0]
    i, j, _ = found.caller_pairs()
    return lists, set(zip(i.tolist(), j.tolist()))


def test_search_matches_brute_force_across_tile_borders(monkeypatch) -> None:
    keys, v = _collection(90)
    owners = np.arange(90)
    owners[80:] = np.arange(10)  # rows 80.. are second rows of images 0..9
    primary = np.arange(90) < 80
    v[5] = np.nan  # an image without an embedding takes part in nothing
    want = _brute(keys, owners, v, primary, SPEC)
    for rows, cols in ((7, 16), (2048, 4096)):
        monkeypatch.setattr(nb, "_ROWS", rows)
        monkeypatch.setattr(nb, "_COLS", cols)
        got = _as_caller(nb.search(keys, owners, v, primary, SPEC))
        assert got[0][:5] + got[0][6:] == want[0][:5] + want[0][6:] and got[0][5] == []
        assert got[1] == want[1]
    assert len(want[1]) >= 8 and not any(5 in p for p in want[1])
    assert all(not set(owners[lst]) & {owners[r]} for r, lst in enumerate(want[0]) if lst)


def test_updates_give_what_a_search_from_scratch_gives(monkeypatch) -> None:
    """Rows added, removed and changed over several runs: each update equals the search
    from scratch on the same rows, and searches only the new and changed rows (plus the few
    whose lists cannot prove their order any more)."""
    monkeypatch.setattr(nb, "_ROWS", 16)
    monkeypatch.setattr(nb, "_COLS", 32)
    keys, v = _collection(160, seed=1)
    owners, primary = np.arange(160), np.ones(160, dtype=bool)
    live = np.arange(100)
    state = nb.search([keys[r] for r in live], owners[live], v[live], primary[live], SPEC)
    rng = np.random.default_rng(2)
    for step in range(5):
        added = np.arange(100 + 12 * step, 112 + 12 * step)
        gone = rng.choice(live, 3, replace=False)
        live = np.setdiff1d(np.concatenate([live, added]), gone)
        changed = rng.choice(live, 2, replace=False)
        v[changed] = _unit(v[changed] + rng.normal(scale=0.3, size=(2, v.shape[1])))
        args = ([keys[r] for r in live], owners[live], v[live], primary[live], SPEC)
        updated = nb.search(*args, state)
        scratch = nb.search(*args)
        w = SPEC.width
        np.testing.assert_array_equal(updated.lists[:, :w], scratch.lists[:, :w])
        np.testing.assert_array_equal(updated.sims[:, :w], scratch.sims[:, :w])
        np.testing.assert_array_equal(updated.pairs, scratch.pairs)
        np.testing.assert_array_equal(updated.pair_sims, scratch.pair_sims)
        assert scratch.searched == len(live)
        fresh = len(set(added.tolist()) | set(changed.tolist()))
        assert fresh <= updated.searched <= fresh + 10, (updated.searched, fresh)
        state = updated


def test_exact_copies_tie_by_key_on_every_path() -> None:
    """Identical vectors (copies with identical pixels) tie exactly; the key decides, so
    which of them fill a list cannot depend on the order of the rows or of the updates."""
    keys, v = _collection(40, seed=3)
    v[10:30] = v[9]  # 21 identical rows: more than a list holds
    owners, primary = np.arange(40), np.ones(40, dtype=bool)
    want = _brute(keys, owners, v, primary, SPEC)
    order = np.random.default_rng(4).permutation(40)
    shuffled = nb.search([keys[r] for r in order], owners[order], v[order], primary, SPEC)
    got_lists = [[] for _ in range(40)]
    for r, row in enumerate(order):
        got_lists[row] = [int(order[c]) for c in shuffled.lists[r, :SPEC.width] if c >= 0]
    assert got_lists == want[0]
    first = nb.search(keys[:30], owners[:30], v[:30], primary[:30], SPEC)
    assert _as_caller(nb.search(keys, owners, v, primary, SPEC, first))[0] == want[0]


def test_owner_pairs_fold_the_rows_of_one_image_and_keep_k() -> None:
    rng = np.random.default_rng(0)
    v = _unit(rng.normal(size=(6, 8)))
    extra = _unit((v[0] * 0.2 + v[3])[None])  # image 5's second row looks like image 3
    rows = np.vstack([v, extra])
    owners = np.array([0, 1, 2, 3, 4, 5, 5])
    keys = [f"img{k}" for k in range(6)] + ["img5#box"]
    spec = nb.SearchSpec(width=6, floor=-1.0, threshold=1.0)
    found = nb.search(keys, owners, rows, np.arange(7) < 6, spec)
    pairs = {tuple(p) for p in nb.owner_pairs(found, 2).tolist()}
    assert (3, 5) in pairs and all(a < b for a, b in pairs)
    sims = rows @ rows.T
    owner_sims = np.full((6, 6), -np.inf)
    for r in range(7):
        for c in range(7):
            if owners[r] != owners[c]:
                owner_sims[owners[r], owners[c]] = max(owner_sims[owners[r], owners[c]],
                                                       sims[r, c])
    for a in range(6):  # every owner's 2 nearest owners (by its best row) are among them
        for b in np.argsort(-owner_sims[a])[:2]:
            assert (min(a, b), max(a, b)) in pairs
    assert len(pairs) <= 7 * 2
    strict = nb.search(keys, owners, rows, np.arange(7) < 6, nb.SearchSpec(6, 0.99, 1.0))
    assert len(nb.owner_pairs(strict, 2)) == 0


def test_state_round_trips_and_refuses_other_settings(tmp_path) -> None:
    keys, v = _collection(50, seed=5)
    owners, primary = np.arange(50), np.ones(50, dtype=bool)
    found = nb.search(keys, owners, v, primary, SPEC)
    path = tmp_path / "state.npz"
    nb.save(path, found)
    back = nb.load(path, SPEC)
    assert back is not None
    for field in ("keys", "digests", "lists", "sims", "bound", "pairs", "pair_sims"):
        np.testing.assert_array_equal(getattr(back, field), getattr(found, field))
    again = nb.search(keys, owners, v, primary, SPEC, back)
    assert again.searched == 0
    np.testing.assert_array_equal(again.lists[:, :SPEC.width], found.lists[:, :SPEC.width])
    assert nb.load(path, nb.SearchSpec(7, SPEC.floor, SPEC.threshold)) is None
    with np.load(path) as z:  # an intact archive whose lists point past its rows
        bad = {name: z[name] for name in z.files}
    bad["lists"] = bad["lists"] + len(keys)
    np.savez(tmp_path / "bad.npz", **bad)
    assert nb.load(tmp_path / "bad.npz", SPEC) is None
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # cut short (a full disk, say)
    assert nb.load(path, SPEC) is None
    path.write_bytes(b"not a state")
    assert nb.load(path, SPEC) is None
    assert nb.load(tmp_path / "missing.npz", SPEC) is None


def test_pairs_only_and_nothing_at_all() -> None:
    keys, v = _collection(30, seed=6)
    spec = nb.SearchSpec(width=0, floor=0.0, threshold=0.97)
    found = nb.search(keys, np.arange(30), v, np.ones(30, dtype=bool), spec)
    want = _brute(keys, np.arange(30), v, np.ones(30, dtype=bool), spec)[1]
    assert _as_caller(found)[1] == want and len(nb.owner_pairs(found, 3)) == 0
    empty = nb.search([], np.zeros(0, np.int64), np.zeros((0, 8), np.float32),
                      np.zeros(0, bool), SPEC)
    assert len(empty.pairs) == 0 and empty.lists.shape == (0, SPEC.width + nb.MARGIN)
    with pytest.raises(ValueError, match="at most"):
        nb.search(["a"], np.zeros(1), np.zeros((1, nb.MAX_DIM + 1), np.float32),
                  np.ones(1, bool), SPEC)
