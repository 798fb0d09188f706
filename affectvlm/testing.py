"""Tiny, offline-built models and tokenizers for tests, benchmarks and the no-checkpoint fallback.

Nothing here touches the network: the tokenizer is a character-level CLIP BPE built from an in-memory
vocabulary, and the CLIP configs are small enough to run in milliseconds.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPConfig, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .configuration_affectvlm import AffectVLMConfig
from .processing_affectvlm import AffectVLMProcessor

_SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for bytes (as in GPT-2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


@lru_cache(maxsize=1)
def _char_vocab() -> dict[str, int]:
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + _SPECIAL
    return {token: i for i, token in enumerate(tokens)}


TINY_VOCAB_SIZE = 2 * 256 + len(_SPECIAL)


def tiny_tokenizer() -> CLIPTokenizer:
    """A character-level CLIP tokenizer (514 tokens) built offline; any text tokenises without unknowns."""
    vocab = _char_vocab()
    return CLIPTokenizer(vocab=dict(vocab), merges=[])


def tiny_clip_config(
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 32,
    vocab_size: int = TINY_VOCAB_SIZE,
    max_position_embeddings: int = 77,
) -> CLIPConfig:
    """A CLIP config small enough for unit tests (defaults: hidden 32, 2 layers, image 32, patch 8)."""
    special = _char_vocab()
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "max_position_embeddings": max_position_embeddings,
        "projection_dim": projection_dim,
        "bos_token_id": special["<|startoftext|>"],
        "eos_token_id": special["<|endoftext|>"],
        "pad_token_id": special["<|endoftext|>"],
    }
    vision = {
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "image_size": image_size,
        "patch_size": patch_size,
        "projection_dim": projection_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def vit_b32_clip_config() -> CLIPConfig:
    """CLIP ViT-B/32's architecture (random weights) with the tiny tokenizer's vocabulary."""
    special = _char_vocab()
    return CLIPConfig(
        text_config={
            "vocab_size": TINY_VOCAB_SIZE,
            "bos_token_id": special["<|startoftext|>"],
            "eos_token_id": special["<|endoftext|>"],
            "pad_token_id": special["<|endoftext|>"],
        },
        vision_config={"image_size": 224, "patch_size": 32},
        projection_dim=512,
    )


def tiny_config(**overrides) -> AffectVLMConfig:
    """An AffectVLMConfig over `tiny_clip_config()`; `overrides` are AffectVLMConfig fields."""
    clip_config = overrides.pop("clip_config", None) or tiny_clip_config()
    return AffectVLMConfig(clip_config=clip_config, **overrides)


def tiny_processor(image_size: int = 32, view_names: list[str] | None = None) -> AffectVLMProcessor:
    """A processor that resizes views to `image_size` and tokenises with `tiny_tokenizer()`."""
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return AffectVLMProcessor(image_processor=image_processor, tokenizer=tiny_tokenizer(), view_names=view_names)


__all__ = [
    "TINY_VOCAB_SIZE",
    "tiny_clip_config",
    "tiny_config",
    "tiny_processor",
    "tiny_tokenizer",
    "vit_b32_clip_config",
]
