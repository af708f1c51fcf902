"""Near-duplicate detection: perceptual hashes, exact Hamming search, clusters, keep-best.

One module per concern: `hashing` (per-image hashes, run in workers), `hamming` (all pairs
within a Hamming radius, sub-quadratic and exact), `cosine` (embedding pairs by blockwise
matrix products), `reposts` and `verify` (repost candidates and their geometric
verification), `graph` (edges from those, clusters, the columns each image gets),
`clusters` (union-find and the keep-best policy), `report` (the HTML report), `config` (the
dedup section of params.yaml). `curate.stages.dedup` wires them into the pipeline stage.
"""
