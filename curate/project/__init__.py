"""A curation project's own files: params.yaml and dvc.yaml, written from templates.

`curate init` writes both for a user's sources; `curate pipeline` writes dvc.yaml again after
params.yaml changed (its sources and tags snapshot are DVC dependencies, which dvc.yaml cannot
take from params.yaml by interpolation); `curate split --name` and `curate tags pull --use`
edit params.yaml in place, comments kept. This repository's own params.yaml and dvc.yaml are
the demo's rendering of the same templates (a test keeps them so).
"""
