"""Data: SynthFER-3D synthetic scans, readers for the real datasets, subject-independent folds, render cache.

    from affectvlm.data import SynthConfig, SynthFER3D, read_dataset, subject_folds, RenderCacheDataset

Names are imported lazily so that `import affectvlm.data` does not pull in torch or the renderer.
The Surrey Face Model and everything generated from it are for non-commercial use only.
"""

from __future__ import annotations

import importlib

# public name -> submodule that defines it
_LAZY = {
    # the face model
    "SFMError": "sfm",
    "SurreyFaceModel": "sfm",
    "download_sfm": "sfm",
    "find_sfm_dir": "sfm",
    "load_sfm": "sfm",
    # SynthFER-3D
    "EMOTIONS": "synth",
    "PRESETS": "synth",
    "SynthConfig": "synth",
    "SynthFER3D": "synth",
    "write_synth_tree": "synth",
    # readers
    "DATASETS": "datasets",
    "DatasetError": "datasets",
    "Sample": "datasets",
    "cross_dataset": "datasets",
    "read_dataset": "datasets",
    "select_protocol": "datasets",
    # folds
    "Fold": "folds",
    "load_folds": "folds",
    "save_folds": "folds",
    "split_samples": "folds",
    "subject_folds": "folds",
    # render cache
    "RenderCacheDataset": "cache",
    "RenderSettings": "cache",
    "prepare_cache": "cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'affectvlm.data' has no attribute {name!r}")


def __dir__():
    return __all__
