"""The tags stage's parts: labeling config, Label Studio client, selection, normalise, merge.

`curate.stages.tags` wires them into `curate tags push | pull | import`.
"""
