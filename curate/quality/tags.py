"""The slice of the tags stage's merged view that quality uses: category, reject, task id.

Quality reads `data/tags/merged.parquet` (one row per tagged image, see curate/tags/merge.py)
when it exists: annotator rejects become a reason, categories define the distributions the
embedding and colour-style scores are measured against, and task ids give the report its
Label Studio links. A category outside params `tags.categories` (such as `disputed`) does not
define a distribution.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

TAG_COLUMNS = ("image_id", "category", "reject", "task_id")


def load_tags(path: Path | None, categories: Iterable[str]) -> pd.DataFrame | None:
    """Per-image category (None when unknown or disputed), reject flag and task id.

    Returns None when there is no tags file: every consumer then works without tags.
    """
    if path is None or not Path(path).exists():
        return None
    raw = pd.read_parquet(path)
    if "image_id" not in raw:
        raise ValueError(f"{path}: no image_id column; is it the tags stage's merged view?")
    known = set(categories)
    out = pd.DataFrame({"image_id": raw["image_id"].astype(str)})
    category = raw["category"] if "category" in raw else pd.Series(None, index=raw.index)
    out["category"] = pd.Series([c if isinstance(c, str) and c in known else None
                                 for c in category], dtype=object)
    reject = raw["reject"] if "reject" in raw else pd.Series(False, index=raw.index)
    out["reject"] = reject.fillna(False).astype(bool).to_numpy()
    task = raw["task_id"] if "task_id" in raw else pd.Series(pd.NA, index=raw.index)
    out["task_id"] = pd.array(pd.to_numeric(task, errors="coerce"), dtype="Int64")
    return out.drop_duplicates("image_id", keep="last").reset_index(drop=True)
