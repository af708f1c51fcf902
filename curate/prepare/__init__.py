"""Alignment, cropping, augmentation and export of GAN datasets."""
