"""Image quality: raw measurements, per-issue checks, and embedding outlier scores.

The pattern is cleanvision's: a raw *property* is measured once per image and cached by
(image id, metric version); a *check* (one small class per kind of issue, registered in a
factory) turns properties into a value, a 0..1 severity score and a flag, using a threshold
from params.yaml that is absolute or a percentile of the set. Changing a threshold therefore
re-scores from the cache without decoding a single image.
"""
