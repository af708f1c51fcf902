"""The demo's ground truth as the benchmarks read it: base images, and IoU with true masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from curate.demo.generate import mask_name


def base_images(demo: Path) -> pd.DataFrame:
    """Ground-truth rows of the demo's base images (no planted copies), indexed by sha256."""
    truth = pd.read_parquet(demo / "ground_truth.parquet")
    return truth[truth["kind"].eq("base")].drop_duplicates("sha256").set_index("sha256")


def true_mask_iou(mask_path: Path, demo: Path, file: str) -> float | None:
    """IoU of a mask with the true foreground mask of demo `file` (both thresholded at 128);
    None when the demo has no true mask for it or the sizes differ."""
    true_path = demo / "truth" / "masks" / mask_name(file)
    if not true_path.exists():
        return None
    a = np.asarray(Image.open(mask_path).convert("L")) >= 128
    b = np.asarray(Image.open(true_path).convert("L")) >= 128
    return float((a & b).sum() / max(1, (a | b).sum())) if a.shape == b.shape else None
