"""Dataset code that serves one model family rather than every model: MovieLens for gdmix_lr
(modelzoo/datasets/movielens.py). The shared readers stay in modelzoo/datafiles.py and modelzoo/features.py."""
