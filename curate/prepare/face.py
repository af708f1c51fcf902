"""``face`` alignment: eye landmarks from MTCNN (facenet-pytorch, weights bundled in the wheel).

facenet-pytorch pins an old torch, so the set-up installs it with ``--no-deps`` (see Makefile);
its MTCNN needs only torch, torchvision and Pillow, which the project has. The two eyes are mapped
to fixed output positions (FFHQ-like framing) by the same two-point similarity as ``keypoints``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from core import imageio
from core.device import Device, torch_device
from curate.prepare.align import Crop, NotApplicable, keypoint_crop

if TYPE_CHECKING:
    from curate.prepare.task import Settings, Task

MIN_CONFIDENCE = 0.9
DETECT_SIDE = 640  # faces are found on a reduced copy; landmarks are scaled back


@lru_cache(maxsize=1)
def _detector(requested: Device):  # one per worker process, reused for all its images
    try:
        from facenet_pytorch import MTCNN
    except ImportError as exc:
        raise RuntimeError("face alignment needs facenet-pytorch: run `make setup` (it installs "
                           "facenet-pytorch==2.6.0 with --no-deps)") from exc
    return MTCNN(device=torch_device(requested, "prepare face detection"), keep_all=False,
                 post_process=False)


def eye_landmarks(task: Task, device: Device = "cpu") -> np.ndarray:
    """(left eye, right eye) in pixels of the upright original image, or NotApplicable."""
    img = imageio.decode(task.image, min_side=DETECT_SIDE)
    factor = min(1.0, DETECT_SIDE / min(img.size))
    small = img.resize((max(1, round(img.width * factor)), max(1, round(img.height * factor))))
    boxes, probs, marks = _detector(device).detect(small, landmarks=True)
    if boxes is None or probs[0] is None or probs[0] < MIN_CONFIDENCE:
        raise NotApplicable("no confident face")
    eyes = np.asarray(marks[0][:2], dtype=np.float64)
    eyes[:, 0] *= task.width / small.width
    eyes[:, 1] *= task.height / small.height
    return eyes


def face_crop(task: Task, settings: Settings) -> Crop:
    crop = keypoint_crop(eye_landmarks(task, settings.device),
                         np.array(settings.face_targets))
    return Crop(crop.cx, crop.cy, crop.side, crop.angle_deg, "face")
