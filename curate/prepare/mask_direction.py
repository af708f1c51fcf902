"""Which end of a mask's axis is up, chosen per distribution from its tagged images.

`align.mask_crop` settles the axis's direction by the subject's shape: the end that leaves the
frame is the bottom, else the wider end is up. That holds for feet (toes wider than heels)
and for most people, but a cape or a wide stance makes a drawn figure's feet end the wider
one, and the crop comes out upside down. A collection shot or drawn upright has a simpler
rule: the end nearer the image's top is up.

The images with keypoints know the answer (their two points fix the direction), so on those
that also have a mask, each rule is scored by how often its direction agrees with the
keypoints' (within 90 degrees); `upright` is taken only when it agrees more often than the
shape rule. Too few such images: the shape rule stands.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from curate.prepare.align import NotApplicable, angle_error, keypoint_crop, mask_file_axis
from curate.prepare.task import Settings, Task

#: Fewest images with keypoints and a mask before the rule is chosen from them.
MIN_IMAGES = 5
#: Images scored: the count settles well before this; the scoring (read the mask) reruns every
#: time.
SAMPLE = 200


def calibrate_mask_direction(tasks: list[Task], settings: Settings) -> Settings:
    """`settings` with `mask_upright` set when the upright rule fits the tagged images better."""
    if "mask" not in settings.align:
        return settings
    offset = settings.keypoint_angle.offset_deg if settings.keypoint_angle else 0.0
    if abs(offset) > 45.0:
        return settings  # the mask runs across the keypoints: they say nothing of its ends
    agree = {False: 0, True: 0}
    scored = 0
    for task in sorted((t for t in tasks if t.keypoints is not None and t.mask is not None),
                       key=lambda t: t.image_id):
        if scored == SAMPLE:
            break
        try:
            truth = keypoint_crop(np.array(task.keypoints),
                                  np.array(settings.keypoint_targets)).angle_deg + offset
            by_shape = mask_file_axis(task.mask)[0]
        except NotApplicable:
            continue
        scored += 1
        # One axis serves both rules: the upright one is the same axis turned toward the top.
        agree[False] += angle_error(by_shape.angle_deg, truth) < 90.0
        agree[True] += angle_error(by_shape.toward_top().angle_deg, truth) < 90.0
    upright = scored >= MIN_IMAGES and agree[True] > agree[False]
    return dataclasses.replace(settings, mask_upright=upright)
