"""AffectVLM: a multiview CLIP for 3D and 4D facial expression recognition.

Public names are imported lazily (no trimesh, no gradio until a part of the package is used). Importing
the package does import transformers, to register the AffectVLM classes with the Auto classes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    # model (issue 2)
    "AffectVLMConfig": "configuration_affectvlm",
    "AffectVLMModel": "modeling_affectvlm",
    "AffectVLMOutput": "modeling_affectvlm",
    "AffectVLMScores": "modeling_affectvlm",
    "AffectVLMProcessor": "processing_affectvlm",
    "DEFAULT_LABELS": "configuration_affectvlm",
    # high-level prediction (issue 6)
    "AffectVLMPredictor": "predictor",
    "Prediction": "predictor",
    "InputError": "predictor",
    "predict": "predictor",
    # scan pipeline (issue 3)
    "Scan": "scan",
    "ScanError": "scan",
    "load_scan": "scan",
    "normalize_scan": "scan",
    "render_views": "scan",
    "rank_pool": "scan",
    "rank_pool_weights": "scan",
    "render_sequence": "scan",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'affectvlm' has no attribute {name!r}")


def __dir__():
    return __all__


def _register_auto_classes() -> None:
    """Let `AutoConfig/AutoModel/AutoProcessor.from_pretrained(folder)` work without remote code."""
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from .configuration_affectvlm import AffectVLMConfig
    from .modeling_affectvlm import AffectVLMModel
    from .processing_affectvlm import AffectVLMProcessor

    AutoConfig.register(AffectVLMConfig.model_type, AffectVLMConfig, exist_ok=True)
    AutoModel.register(AffectVLMConfig, AffectVLMModel, exist_ok=True)
    AutoProcessor.register(AffectVLMConfig, AffectVLMProcessor, exist_ok=True)


# Importing the package is what makes `AutoModel.from_pretrained(folder)` work without remote code;
# it costs the transformers import (a few seconds), which every real use of the package pays anyway.
_register_auto_classes()


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .configuration_affectvlm import DEFAULT_LABELS, AffectVLMConfig  # noqa: F401
    from .modeling_affectvlm import AffectVLMModel, AffectVLMOutput, AffectVLMScores  # noqa: F401
    from .predictor import AffectVLMPredictor, InputError, Prediction, predict  # noqa: F401
    from .processing_affectvlm import AffectVLMProcessor  # noqa: F401
    from .scan import (  # noqa: F401
        Scan,
        ScanError,
        load_scan,
        normalize_scan,
        rank_pool,
        rank_pool_weights,
        render_sequence,
        render_views,
    )
