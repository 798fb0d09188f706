"""AffectVLM configuration: a CLIP config plus everything the multiview model and its loss need.

Every number the model uses lives here, so a checkpoint's `config.json` says exactly how it was built.
This file imports only transformers (it is copied next to the weights as Hub remote code).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import AutoConfig, CLIPConfig, PreTrainedConfig, ResNetConfig
from transformers.configuration_utils import SubConfigSpec

DEFAULT_LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
DEFAULT_VIEW_NAMES = ["frontal", "left", "right"]

_FUSIONS = ("mean", "attention")
_BACKBONES = ("clip", "resnet")
_TRIPLET_MINING = ("all", "hard")
_TEXT_BACKBONES = ("clip", "pretrained")
_TEXT_POOLINGS = ("mean", "cls")
_TEXT_WEIGHTS = ("included", "external")

# The transformers pipeline saved with the model (remote code, `pipeline_affectvlm.py`): config.json's
# `custom_pipelines` is how `pipeline(model=folder, trust_remote_code=True)` finds it. The task is the one the
# model card advertises, so `pipeline("zero-shot-image-classification", model=..., trust_remote_code=True)`
# works too. Only the config names it: nothing is registered in transformers' global task registry.
PIPELINE_TASK = "zero-shot-image-classification"
CUSTOM_PIPELINES = {PIPELINE_TASK: {"impl": "pipeline_affectvlm.AffectVLMPipeline", "pt": ["AutoModel"]}}


def _checked_mirror_negate(spec: Any) -> dict[str, Any]:
    try:
        channel, mean, std = int(spec["channel"]), [float(v) for v in spec["mean"]], [float(v) for v in spec["std"]]
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"mirror_negate must be {{channel, mean, std}}; got {spec!r}") from exc
    if channel not in (0, 1, 2) or len(mean) != 3 or len(std) != 3 or not all(math.isfinite(v) and v > 0 for v in std):
        raise ValueError(f"mirror_negate needs a channel of 0-2 and three means and stds > 0; got {spec!r}")
    return {"channel": channel, "mean": mean, "std": std}


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
        text_backbone (`str`, defaults to `"clip"`):
            `"clip"`: CLIP's text transformer embeds prompts (the paper setting). `"pretrained"`: any
            transformers text encoder (`text_config`, e.g. a BERT sentence encoder) with `text_pooling` over
            its last hidden states and a learned linear projection into the shared space, as
            `VisionTextDualEncoder` does; CLIP's own text tower is dropped.
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            The pretrained text encoder's config (any `AutoConfig` model type), when `text_backbone="pretrained"`.
        text_model_name_or_path (`str`, *optional*):
            Where the pretrained text encoder's weights come from: a Hub id, a folder, or a Hub id that an
            installed Python package ships offline (`modeling_affectvlm.OFFLINE_TEXT_MODELS`).
        text_pooling (`str`, defaults to `"mean"`):
            `"mean"`: the attention-masked mean of the last hidden states (sentence-transformers' pooling);
            `"cls"`: the first token's state.
        text_trainable_layers (`int`, defaults to 0):
            How many of the text encoder's top layers train: 0 freezes it (only the projection learns), -1
            trains all of it.
        text_projection (`str`, defaults to `"learned"`):
            How pooled text features enter the shared space: `"learned"`, a trained linear projection;
            `"identity"`, none (the shared space is the text encoder's own, `projection_dim` must equal its
            width): with a frozen encoder the text side is locked and only the views learn to meet it, so words
            never trained on keep the encoder's own neighbourhoods (LiT-style, "locked-text tuning").
        text_weights (`str`, defaults to `"external"`):
            `"external"`: checkpoints leave out the text encoder's frozen weights, which are loaded from
            `text_model_name_or_path` (layers that trained are saved); `"included"`: every weight is saved.
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
        temperature (`float`, defaults to 1.0):
            Divides the class logits of `AffectVLMModel.score` (inference only): a temperature fitted on
            validation subjects after training calibrates the probabilities without changing any answer.
        familiarity_floor (`float`, *optional*):
            The cosine similarity between a scan's fused embedding and the nearest of the model's own labels
            (`label_names`) below which the predictor notes that the scan looks like none of the faces and
            expressions the model learnt from: a low percentile of validation subjects' scans, fitted at the end
            of training (`train/train.py`) or again after (`train/familiarity.py`). `None`: no such note. A
            checkpoint that carries a face distance (`face_distance.safetensors`) is noted by that instead.
        mirror_average (`bool`, defaults to `False`):
            At inference (the model in eval mode), embed every view and its horizontal mirror image and use the
            normalised mean of the two as the view's embedding: a mirrored face shows the same expression, so
            this averages out the encoder's left/right quirks (test-time flip averaging; training already draws
            mirrored samples). It doubles the vision tower's work; training is unchanged.
        mirror_negate (`dict`, *optional*):
            For views that draw the surface normal: `{"channel": c, "mean": [3 floats], "std": [3 floats]}`, the
            pixel channel of the normal's x (`affectvlm.scan.render.NORMAL_CHANNELS`) and the processor's mean
            and std. The mirror image then has that x negated where a surface is drawn, so that it is the view
            of the mirrored face; a grey view (all three channels alike, e.g. a user's own render) is only
            flipped. `None` (grey shading): the mirror image is the flipped pixels.
        au_logit_bias (`dict[str, float]`, *optional*):
            For models trained with the action-unit term: AU number -> the bias of its logit,
            `logit_scale * cos(sample, AU description) + bias` (see `AffectVLMModel.action_unit_probs`).
        text_anchors (`dict[str, list[list[str]]]`, *optional*):
            For `text_anchor_weight`: each trained class (label or action unit) -> groups of prompts that mean it,
            its scoring prompts first (they give its embedding), then one group per word of its lexicon.
        text_anchor_weight (`float`, defaults to 0.0):
            How far `AffectVLMModel.encode_prompts` draws a class embedding towards the trained classes its
            prompts mean (0: the text projection alone; 1: the mixture of trained classes alone).
        text_anchor_temperature (`float`, defaults to 0.03):
            Softmax temperature over the cosine similarities, in the text encoder's own space, between a class's
            prompts and each entry of `text_anchors`.
        custom_pipelines (`dict`, *optional*):
            The transformers pipeline saved with the model; defaults to `CUSTOM_PIPELINES`.
    """

    model_type = "affectvlm"
    sub_configs_defaults = {
        "clip_config": CLIPConfig,
        "resnet_config": SubConfigSpec(config_class=ResNetConfig, optional=True),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True),
    }

    clip_config: CLIPConfig | dict[str, Any] | None = None
    vision_backbone: str = "clip"
    resnet_config: ResNetConfig | dict[str, Any] | None = None
    text_backbone: str = "clip"
    text_config: PreTrainedConfig | dict[str, Any] | None = None
    text_model_name_or_path: str | None = None
    text_pooling: str = "mean"
    text_trainable_layers: int = 0
    text_projection: str = "learned"
    text_weights: str = "external"
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
    temperature: float = 1.0
    familiarity_floor: float | None = None
    mirror_average: bool = False
    mirror_negate: dict[str, Any] | None = None
    au_logit_bias: dict[str, float] | None = None
    text_anchors: dict[str, list[list[str]]] | None = None
    text_anchor_weight: float = 0.0
    text_anchor_temperature: float = 0.03
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
        if self.text_backbone not in _TEXT_BACKBONES:
            raise ValueError(f"text_backbone must be one of {_TEXT_BACKBONES}, got {self.text_backbone!r}")
        if self.text_pooling not in _TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {_TEXT_POOLINGS}, got {self.text_pooling!r}")
        if self.text_projection not in ("learned", "identity"):
            raise ValueError(f"text_projection must be 'learned' or 'identity', got {self.text_projection!r}")
        if (
            self.text_backbone == "pretrained"
            and self.text_projection == "identity"
            and self.text_config.hidden_size != self.clip_config.projection_dim
        ):
            raise ValueError(
                f"text_projection='identity' needs projection_dim ({self.clip_config.projection_dim}) equal to "
                f"the text encoder's width ({self.text_config.hidden_size})"
            )
        if self.text_weights not in _TEXT_WEIGHTS:
            raise ValueError(f"text_weights must be one of {_TEXT_WEIGHTS}, got {self.text_weights!r}")
        if self.text_backbone == "pretrained" and self.text_config is None:
            raise ValueError('text_backbone="pretrained" needs text_config (the text encoder\'s config)')
        if self.uses_external_text_weights and not self.text_model_name_or_path:
            raise ValueError('text_weights="external" needs text_model_name_or_path, where the weights come from')
        if not isinstance(self.text_trainable_layers, int) or self.text_trainable_layers < -1:
            raise ValueError(
                f"text_trainable_layers must be -1 (all), 0 (frozen) or more, got {self.text_trainable_layers!r}"
            )
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
        if not (isinstance(self.temperature, int | float) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        floor = self.familiarity_floor
        if floor is not None and (isinstance(floor, bool) or not (isinstance(floor, int | float) and -1 <= floor <= 1)):
            raise ValueError(f"familiarity_floor must be a cosine similarity in [-1, 1] or null, got {floor!r}")
        if not isinstance(self.mirror_average, bool):
            raise ValueError(f"mirror_average must be true or false, got {self.mirror_average!r}")
        if self.mirror_negate is not None:
            self.mirror_negate = _checked_mirror_negate(self.mirror_negate)
        self._check_text_anchors()
        if self.logit_scale_max <= 0:
            raise ValueError(f"logit_scale_max must be positive, got {self.logit_scale_max}")
        if self.fusion_hidden_size < 1:
            raise ValueError(f"fusion_hidden_size must be positive, got {self.fusion_hidden_size}")

    def _check_text_anchors(self) -> None:
        w, t = self.text_anchor_weight, self.text_anchor_temperature
        if not (isinstance(w, int | float) and 0 <= w <= 1):
            raise ValueError(f"text_anchor_weight must be a number in [0, 1], got {w!r}")
        if not (isinstance(t, int | float) and math.isfinite(t) and t > 0):
            raise ValueError(f"text_anchor_temperature must be a finite number > 0, got {t!r}")
        anchors = self.text_anchors
        if anchors is None:
            return

        def prompts(group) -> bool:
            strings = isinstance(group, list | tuple) and all(isinstance(p, str) and p.strip() for p in group)
            return strings and bool(group)

        if not isinstance(anchors, dict) or not all(
            isinstance(v, list | tuple) and v and all(prompts(g) for g in v) for v in anchors.values()
        ):
            raise ValueError("text_anchors must map each trained class to non-empty lists (groups) of prompts")
        self.text_anchors = {str(k): [list(g) for g in v] for k, v in anchors.items()}

    @property
    def projection_dim(self) -> int:
        """Size of the shared image-text embedding space."""
        return self.clip_config.projection_dim

    @property
    def uses_external_text_weights(self) -> bool:
        """Whether checkpoints leave out frozen text-encoder weights, loaded from `text_model_name_or_path`."""
        return (
            self.text_backbone == "pretrained"
            and self.text_weights == "external"
            and self.text_trainable_layers != -1
        )

    @property
    def label2index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}


__all__ = ["CUSTOM_PIPELINES", "DEFAULT_LABELS", "DEFAULT_VIEW_NAMES", "PIPELINE_TASK", "AffectVLMConfig"]

# Saving writes `auto_map` and copies this file, so the Hub can load it as remote code.
AffectVLMConfig.register_for_auto_class()
