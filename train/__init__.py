"""GAN training on curated datasets."""
