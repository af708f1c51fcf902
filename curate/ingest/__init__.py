"""Ingest's methods: where images come from and what happens to each input.

`local` (folders and archives, with their bomb limits), `urls` (URL lists), `scrape` (polite,
SSRF-safe HTTP fetching) and `pinned` (DNS pinning for it) read the sources; `worker` hashes,
validates and stores one input and `scrape_worker` fetches URL batches, both in worker
processes; `config` is the ingest section of params.yaml. `curate.stages.ingest` wires them
into the stage.
"""
