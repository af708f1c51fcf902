"""Framing the box and mask crops like the keypoint crops, measured on the images that have
both, so that one dataset frames its subject at one size whatever aligned each image."""

from __future__ import annotations

import dataclasses

import numpy as np

from curate.prepare.align import Framing, NotApplicable, framing_between
from curate.prepare.task import Settings, Task
from curate.prepare.worker import method_crop

#: Fewest images with keypoints and a box (or a mask) before the framing is matched.
MIN_FRAMING_PAIRS = 5
#: Images measured for the framing: their median is stable well before this many, and the
#: measuring (read the mask, fit the crop: ~10 ms an image) is redone on every run.
FRAMING_SAMPLE = 100


def calibrate_framing(tasks: list[Task], settings: Settings) -> Settings:
    """`settings` with box and mask crops reframed to match the keypoint crops.

    A mask's tight box fills the frame (the subject spans ~85% of it), two keypoints mapped to
    fixed targets leave a margin (heel to toe spans 60% by default): mixed in one dataset, the
    subject would change size from image to image, which a GAN spends capacity on. On the
    images that have keypoints and the method's input (a box, a mask), the median framing
    between the two crops is measured and applied to every crop of that method. It is rounded
    to 0.01 so that adding a few images rarely changes it: a change changes the settings hash
    and re-prepares the distribution. Only methods listed after `keypoints` are reframed.
    """
    if "keypoints" not in settings.align:
        return settings
    later = settings.align[settings.align.index("keypoints") + 1:]
    with_keypoints = sorted((t for t in tasks if t.keypoints is not None),
                            key=lambda t: t.image_id)
    framing = []
    for method in (m for m in ("box", "mask") if m in later):
        measured = []
        for task in with_keypoints:
            if len(measured) == FRAMING_SAMPLE:
                break
            try:
                measured.append(framing_between(method_crop(task, method, settings),
                                                method_crop(task, "keypoints", settings)))
            except NotApplicable:
                continue
        if len(measured) >= MIN_FRAMING_PAIRS:
            framing.append((method, Framing(*(
                round(float(np.median([getattr(f, k) for f in measured])), 2) + 0.0  # no -0.0
                for k in ("scale", "dx", "dy")))))
    return dataclasses.replace(settings, framing=tuple(framing))
