"""Spread annotators' categories to untagged images through the embedding space.

k-nearest neighbours by cosine similarity on L2-normalised embeddings: simple, no training, and
its confidence (the weighted share of the winning class among the k neighbours) is well
calibrated enough to route doubtful images to ``unassigned`` and to annotators. Each neighbour
weighs exp(cosine / 0.07), the weighted k-NN of self-supervised embedding evaluation (Wu et al.
2018, Caron et al. 2021): pooled CNN features are non-negative, so every cosine is positive and
a linear weight would let a far neighbour count nearly as much as a near one; here one 0.1
less similar counts 4x less. Similarities are computed in blocks, so memory is
O(block x n_tagged), never n x n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 4096
TEMPERATURE = 0.07  # of the exp(cosine / T) vote weights


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray  # int class index per query row
    confidence: np.ndarray  # in [0, 1]


def knn_predict(train: np.ndarray, train_labels: np.ndarray, query: np.ndarray, n_classes: int,
                k: int = 10, exclude_self: bool = False) -> Prediction:
    """Weighted k-NN vote (exp(cosine / `TEMPERATURE`)). ``exclude_self`` drops the best
    match (leave-one-out when ``query`` is ``train``). The query may be float16 (the cache's
    vectors): it is converted a block at a time, so a million queries never exist as float32
    at once."""
    train = np.asarray(train, np.float32)
    k_eff = min(k, len(train) - int(exclude_self))
    if k_eff < 1:
        raise ValueError("need at least one tagged image (two for leave-one-out)")
    labels = np.empty(len(query), np.int64)
    confidence = np.empty(len(query), np.float32)
    for start in range(0, len(query), BLOCK):
        sims = np.asarray(query[start:start + BLOCK], np.float32) @ train.T
        take = k_eff + int(exclude_self)
        idx = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top = np.take_along_axis(sims, idx, axis=1)
        order = np.argsort(-top, axis=1)
        idx, top = np.take_along_axis(idx, order, 1), np.take_along_axis(top, order, 1)
        if exclude_self:
            idx, top = idx[:, 1:], top[:, 1:]
        weights = np.exp((top - top[:, :1]) / TEMPERATURE)  # relative to the nearest: no overflow
        votes = np.zeros((len(idx), n_classes), np.float32)
        np.add.at(votes, (np.arange(len(idx))[:, None], train_labels[idx]), weights)
        labels[start:start + len(idx)] = votes.argmax(axis=1)
        confidence[start:start + len(idx)] = votes.max(axis=1) / votes.sum(axis=1)
    return Prediction(labels, confidence)


def cross_validated_accuracy(emb: np.ndarray, labels: np.ndarray, n_classes: int, k: int = 10,
                             folds: int = 5, seed: int = 0) -> float:
    """Accuracy of the propagation on the tagged images themselves, by k-fold cross-validation."""
    n = len(labels)
    if n < 2 * folds:
        folds = max(2, n // 2)
    if n < 4:
        return float("nan")
    order = np.random.default_rng(seed).permutation(n)
    correct = 0
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        pred = knn_predict(emb[train], labels[train], emb[test], n_classes, k)
        correct += int((pred.labels == labels[test]).sum())
    return correct / n


def kmeans(emb: np.ndarray, n_clusters: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Spherical k-means (cosine) with k-means++ seeding: groups to propose when nobody tagged."""
    rng = np.random.default_rng(seed)
    x = np.asarray(emb, np.float32)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n_clusters):
        d = 1.0 - np.max(x @ np.stack(centres).T, axis=1)
        p = np.clip(d, 0, None) ** 2
        pick = rng.choice(len(x), p=p / p.sum()) if p.sum() > 0 else rng.integers(len(x))
        centres.append(x[pick])
    c = np.stack(centres)
    assign = np.zeros(len(x), np.int64)
    for _ in range(iterations):
        new = np.concatenate([np.argmax(x[s:s + BLOCK] @ c.T, axis=1)
                              for s in range(0, len(x), BLOCK)])
        if _ and np.array_equal(new, assign):
            break
        assign = new
        for j in range(n_clusters):
            members = x[assign == j]
            if len(members):
                v = members.sum(axis=0)
                c[j] = v / (np.linalg.norm(v) + 1e-12)
    return assign
