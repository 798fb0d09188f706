"""AffectVLM configuration: a CLIP config plus everything the multiview model and its loss need.

Every number the model uses lives here, so a checkpoint's `config.json` says exactly how it was built.
This file imports only transformers (it is copied next to the weights as Hub remote code).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import CLIPConfig, PreTrainedConfig, ResNetConfig
from transformers.configuration_utils import SubConfigSpec

DEFAULT_LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
DEFAULT_VIEW_NAMES = ["frontal", "left", "right"]

_FUSIONS = ("mean", "attention")
_BACKBONES = ("clip", "resnet")
_TRIPLET_MINING = ("all", "hard")

# The transformers pipeline saved with the model (remote code, `pipeline_affectvlm.py`): config.json's
# `custom_pipelines` is how `pipeline(model=folder, trust_remote_code=True)` finds it. The task is the one the
# model card advertises, so `pipeline("zero-shot-image-classification", model=..., trust_remote_code=True)`
# works too. Only the config names it: nothing is registered in transformers' global task registry.
PIPELINE_TASK = "zero-shot-image-classification"
CUSTOM_PIPELINES = {PIPELINE_TASK: {"impl": "pipeline_affectvlm.AffectVLMPipeline", "pt": ["AutoModel"]}}


class AffectVLMConfig(PreTrainedConfig):
    r"""Configuration of [`AffectVLMModel`].

    Args:
        clip_config (`CLIPConfig` or `dict`, *optional*):
            The CLIP model (text tower, and the vision tower when `vision_backbone="clip"`). Defaults to
            ViT-B/32-sized CLIP.
        vision_backbone (`str`, defaults to `"clip"`):
            `"clip"`: CLIP's ViT embeds the views. `"resnet"`: a transformers `ResNetModel` (`resnet_config`)
            embeds them, followed by a learned linear projection into CLIP's text embedding space.
        resnet_config (`ResNetConfig` or `dict`, *optional*):
            The ResNet, used only when `vision_backbone="resnet"` (default: ResNet-50-sized).
        num_views (`int`, defaults to 3):
            Number of rendered views per sample.
        view_names (`list[str]`, *optional*):
            One name per view, in order. Defaults to `["frontal", "left", "right"]` for three views.
        fusion (`str`, defaults to `"mean"`):
            How view embeddings become one sample embedding: `"mean"` of the L2-normalised view embeddings
            (re-normalised), or `"attention"`: a learned score per view, softmax over the available views.
        fusion_hidden_size (`int`, defaults to 128):
            Width of the attention-fusion scorer.
        label_names (`list[str]`, *optional*):
            Class names, in logit order. Defaults to the six basic emotions; add `"neutral"` if wanted.
        margin_init, margin_min, margin_max (`float`):
            The learnable margin alpha of the contrastive and triplet terms starts at `margin_init` and is kept
            in `(margin_min, margin_max)` by construction: alpha = min + (max - min) * sigmoid(raw).
        learnable_margin (`bool`, defaults to `True`):
            `False` freezes alpha at `margin_init` (the "fixed margin" ablation).
        smooth_hinge (`bool`, defaults to `False`):
            Replace every hinge max(0, x) by the smooth softplus(beta * x) / beta ("gradient-friendly").
        smooth_hinge_beta (`float`, defaults to 10.0):
            Sharpness of the smooth hinge; large beta approaches the hard hinge.
        itc_weight (`float`, defaults to 1.0):
            Weight of the image-text term on the fused embedding (cross-entropy over class text embeddings).
        view_itc_weight (`float`, defaults to 0.5):
            Weight of the same term on each available view's embedding.
        contrastive_weight (`float`, defaults to 1.0):
            Weight of the multiview contrastive term.
        triplet_weight (`float`, defaults to 1.0):
            Weight of the multiview triplet term.
        triplet_mining (`str`, defaults to `"all"`):
            `"all"`: mean over every valid (anchor, positive from another view, negative) triplet;
            `"hard"`: per anchor, the hardest positive and the hardest negative only.
        logit_scale_init (`float`, *optional*):
            Initial log of the logit scale; `None` keeps CLIP's (`clip_config.logit_scale_init_value`).
        logit_scale_max (`float`, defaults to 100.0):
            The exponentiated logit scale is clamped to at most this (CLIP's value).
        custom_pipelines (`dict`, *optional*):
            The transformers pipeline saved with the model; defaults to `CUSTOM_PIPELINES`.
    """

    model_type = "affectvlm"
    sub_configs_defaults = {
        "clip_config": CLIPConfig,
        "resnet_config": SubConfigSpec(config_class=ResNetConfig, optional=True),
    }

    clip_config: CLIPConfig | dict[str, Any] | None = None
    vision_backbone: str = "clip"
    resnet_config: ResNetConfig | dict[str, Any] | None = None
    num_views: int = 3
    view_names: list[str] | None = None
    fusion: str = "mean"
    fusion_hidden_size: int = 128
    label_names: list[str] | None = None
    margin_init: float = 0.2
    margin_min: float = 0.0
    margin_max: float = 0.5
    learnable_margin: bool = True
    smooth_hinge: bool = False
    smooth_hinge_beta: float = 10.0
    itc_weight: float = 1.0
    view_itc_weight: float = 0.5
    contrastive_weight: float = 1.0
    triplet_weight: float = 1.0
    triplet_mining: str = "all"
    logit_scale_init: float | None = None
    logit_scale_max: float = 100.0
    custom_pipelines: dict[str, Any] | None = None

    def __post_init__(self, **kwargs):
        if self.vision_backbone == "resnet" and self.resnet_config is None:
            self.resnet_config = ResNetConfig()
        super().__post_init__(**kwargs)
        if self.view_names is None:
            self.view_names = (
                list(DEFAULT_VIEW_NAMES)
                if self.num_views == len(DEFAULT_VIEW_NAMES)
                else [f"view{i}" for i in range(self.num_views)]
            )
        if self.label_names is None:
            self.label_names = list(DEFAULT_LABELS)
        self.view_names = list(self.view_names)
        self.label_names = list(self.label_names)
        if self.custom_pipelines is None:
            self.custom_pipelines = {
                task: {**entry, "pt": list(entry["pt"])} for task, entry in CUSTOM_PIPELINES.items()
            }
        self._check()

    def _check(self) -> None:
        if self.vision_backbone not in _BACKBONES:
            raise ValueError(f"vision_backbone must be one of {_BACKBONES}, got {self.vision_backbone!r}")
        if self.fusion not in _FUSIONS:
            raise ValueError(f"fusion must be one of {_FUSIONS}, got {self.fusion!r}")
        if self.triplet_mining not in _TRIPLET_MINING:
            raise ValueError(f"triplet_mining must be one of {_TRIPLET_MINING}, got {self.triplet_mining!r}")
        if not isinstance(self.num_views, int) or self.num_views < 1:
            raise ValueError(f"num_views must be a positive integer, got {self.num_views!r}")
        if len(self.view_names) != self.num_views:
            raise ValueError(f"view_names has {len(self.view_names)} names for num_views={self.num_views}")
        if len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view_names must be distinct, got {self.view_names}")
        if not self.label_names or len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"label_names must be a non-empty list of distinct names, got {self.label_names}")
        if not self.margin_min < self.margin_init < self.margin_max:
            raise ValueError(
                "margin bounds must satisfy margin_min < margin_init < margin_max, got "
                f"{self.margin_min} < {self.margin_init} < {self.margin_max}"
            )
        if self.smooth_hinge_beta <= 0:
            raise ValueError(f"smooth_hinge_beta must be positive, got {self.smooth_hinge_beta}")
        for name in ("itc_weight", "view_itc_weight", "contrastive_weight", "triplet_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.logit_scale_max <= 0:
            raise ValueError(f"logit_scale_max must be positive, got {self.logit_scale_max}")
        if self.fusion_hidden_size < 1:
            raise ValueError(f"fusion_hidden_size must be positive, got {self.fusion_hidden_size}")

    @property
    def projection_dim(self) -> int:
        """Size of the shared image-text embedding space."""
        return self.clip_config.projection_dim

    @property
    def label2index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


__all__ = ["CUSTOM_PIPELINES", "DEFAULT_LABELS", "DEFAULT_VIEW_NAMES", "PIPELINE_TASK", "AffectVLMConfig"]

# Saving writes `auto_map` and copies this file, so the Hub can load it as remote code.
AffectVLMConfig.register_for_auto_class()
