"""Separating sub-distributions: tags first, embeddings for the untagged."""
