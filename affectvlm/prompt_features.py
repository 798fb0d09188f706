"""A checkpoint's prompt features: what its frozen text encoder makes of the prompts it serves with by default.

Scoring a scan against the default labels, reading its action units and checking the labels mean running the text
encoder over a few hundred prompts (the labels' prompts, 25 action units' descriptions, the label check's words,
the anchors of never-trained words): seconds to tens of seconds on a CPU, at every start of the CLI or the app.
Those pooled features depend only on the text encoder and the prompts' tokens, so a checkpoint carries them in
`prompt_features.safetensors`, and `AffectVLMPredictor.from_pretrained` takes them instead of encoding again.
They are an answer computed earlier, never a different one: two of them are encoded again when they load and must
agree (`AffectVLMModel.seed_text_memo`); a missing, damaged or foreign file is passed over (a warning) and the
encoder runs as it always did.

    python -c "from affectvlm.prompt_features import write; write('checkpoints/affectvlm-cpu')"
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FILENAME = "prompt_features.safetensors"
# A file larger than this is not a checkpoint's prompt features (a few hundred prompts take about 1 MB).
MAX_BYTES = 64 * 2**20


def save(model, folder: str | os.PathLike) -> int:
    """Write every prompt `model`'s frozen text encoder has pooled so far into `folder`; returns how many."""
    keys, features = model.text_memo()
    if not keys:
        return 0
    tensors = {
        "input_ids": torch.tensor([t for k in keys for t in k], dtype=torch.int32),
        "lengths": torch.tensor([len(k) for k in keys], dtype=torch.int32),
        "features": features.contiguous(),
    }
    meta = {"text_model": str(model.config.text_model_name_or_path)}
    save_file(tensors, str(Path(folder) / FILENAME), metadata=meta)
    return len(keys)


def write(checkpoint: str | os.PathLike) -> int:
    """Encode what a predictor of `checkpoint` (a folder) serves with by default, in fp32, and save it there."""
    from .predictor import AffectVLMPredictor

    predictor = AffectVLMPredictor.from_pretrained(checkpoint, dtype=torch.float32, prompt_features=False)
    predictor.warm_up()
    if predictor.model.config.text_anchor_weight > 0 and predictor.model.config.text_anchors:
        predictor.model._anchor_bank(predictor.processor.tokenizer)  # what a never-trained word is read through
    return save(predictor.model, checkpoint)


def _read(path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The token ids (flat), lengths and features in the file at `path`; ValueError when it is not such a file."""
    if os.path.getsize(path) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 2**20} MB")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as err:  # an OSError's text would name the server's folders
        raise ValueError(f"unreadable ({err.strerror if isinstance(err, OSError) else err})") from None
    ids, lengths, features = (tensors.get(k) for k in ("input_ids", "lengths", "features"))
    if ids is None or lengths is None or features is None or features.dim() != 2 or lengths.dim() != 1:
        raise ValueError("not a prompt-features file")
    if len(lengths) != len(features) or (lengths < 1).any() or int(lengths.sum()) != ids.numel():
        raise ValueError("its token ids and features do not match")
    if not torch.isfinite(features).all():
        raise ValueError("non-finite features")
    return ids.to(torch.int64).flatten(), lengths, features.float()


def locate(source: str | os.PathLike, filename: str = FILENAME) -> str | None:
    """A file saved beside a checkpoint's weights (default: its prompt features) in a checkpoint folder or Hub id
    (a cached copy offline), or None."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / filename
        return str(path) if path.is_file() else None
    from transformers.utils import cached_file

    try:
        return cached_file(
            str(source),
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except (OSError, ValueError):
        return None


def load(model, source: str | os.PathLike) -> int:
    """Seed `model`'s text memo from the prompt features saved with `source`; returns how many were taken (0:
    a model without a frozen text encoder, no file, or a file passed over with a warning saying why)."""
    if model.text_model is None or model.config.text_trainable_layers != 0:
        return 0
    path = locate(source)
    if path is None:
        return 0
    try:
        ids, lengths, features = _read(path)
        if ids.numel() and (ids.min() < 0 or ids.max() >= model.config.text_config.vocab_size):
            raise ValueError("token ids beyond the text encoder's vocabulary")
    except (ValueError, OSError) as err:
        why = err.strerror if isinstance(err, OSError) else err  # an OSError's text would name the folder
        warnings.warn(f"{FILENAME} passed over: {why}; each prompt is encoded when asked", stacklevel=2)
        return 0
    keys = [tuple(row.tolist()) for row in ids.split(lengths.tolist())]
    if not model.seed_text_memo(keys, features):
        warnings.warn(f"{FILENAME} passed over: not this text encoder's features", stacklevel=2)
        return 0
    return len(keys)


__all__ = ["FILENAME", "load", "save", "write"]
