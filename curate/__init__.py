"""Image-dataset curation for GAN training."""
