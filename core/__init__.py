"""What every part of the project stands on, and nothing stage-specific: params loading,
atomic writes, image decoding, the content store, per-image caches, manifests, model files,
devices, run locks, the console, and the executors that map work over images (a local process
pool or a Dask cluster). `curate` (the curation stages) and `train` (GAN training) import
from here and never from each other; nothing here imports either."""
