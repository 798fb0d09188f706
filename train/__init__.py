"""Training and evaluation of AffectVLM (run as scripts: train/train.py, train/cross_validate.py)."""
