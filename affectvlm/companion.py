"""A second model that reads the same normalised scan drawn another way, its answer mixed into the first's.

A checkpoint may carry, in a subfolder, a companion: a model trained on the same faces drawn as normal maps
instead of grey shading. Models that see different pictures err on different scans, so the predictor scores a
scan or a sequence with both and takes the weighted geometric mean of their label probabilities (log-linear
pooling: `(1 - weight) * log p_main + weight * log p_companion`, normalised). The companion draws its views from the
scan the main model normalised (a scan is normalised once), or from the frames it registered and pooled, so both
read the same face. Each view's reading is pooled the same way (`Pooled`), so the per-view bars agree with the
answer, and so are what an explanation explains (`affectvlm.explain`), a sequence's frames, each read alone, and
the action units (their log-odds, `pool_odds`). Everything else stays the main model's: given images (a user's own
renders are grey), familiarity and the face distance, the views shown.
`companion.json` beside the main model's weights names the subfolder and the weight:

    {"folder": "normal_maps", "weight": 0.5, "about": "..."}
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FILENAME = "companion.json"


@dataclass
class Companion:
    """A loaded companion: its predictor (`AffectVLMPredictor`) and its weight in the mix (0-1)."""

    predictor: object
    weight: float

    def views(self, drawn, sequence: bool) -> torch.Tensor:
        """(V, H, W, 3) uint8 views the companion reads of `drawn`: the main model's normalised scan, or its
        registered, pooled frames for a sequence (dynamic images). Pixel for pixel where the main model's are."""
        recipe, device = self.predictor.recipe, self.predictor.model.device
        if sequence:
            return recipe.dynamic_images(drawn, device=device).cpu()
        return recipe.views_of([drawn], device=device)[0].cpu()

    def class_embeddings(self, names: list[str], labels) -> torch.Tensor:
        """(C, D) the companion's embeddings of `labels` (any form the predictor takes), whose names must be
        `names`, the main model's label order."""
        own_names, class_embeds = self.predictor.class_embeddings(labels)
        if list(own_names) != list(names):
            raise ValueError(f"the companion names its labels {own_names}, not {names}")
        return class_embeds

    def scores(self, names: list[str], labels, views: torch.Tensor):
        """The companion's `AffectVLMScores` over `names` for its (B, V, H, W, 3) uint8 `views`."""
        class_embeds, model = self.class_embeddings(names, labels), self.predictor.model
        pixels = self.predictor.processor(images=views)["pixel_values"].to(model.device)
        return model.score(pixels, class_embeds.to(model.device))

    def frame_probs(self, names: list[str], labels, frames) -> np.ndarray:
        """(F, C) the companion's probabilities of each of a sequence's frames, normalised by the main model,
        read alone as a static scan."""
        views = self.predictor.recipe.views_of(list(frames), device=self.predictor.model.device).cpu()
        return self.scores(names, labels, views).probs.float().cpu().numpy()

    def pooled(self, main, names: list[str], labels, views: torch.Tensor) -> Pooled:
        """The main model's `AffectVLMScores` (batch of one) pooled with the companion's reading of its (V, H, W,
        3) `views` (`views`)."""
        return Pooled.of(main, self.scores(names, labels, views[None]), self.weight)


@dataclass
class Pooled:
    """Two models' readings of one sample pooled with weight `w` on the second. probs: (C,) the pooled answer.
    view_contributions: (V, C) `(1 - w) * main + w * companion`: each view's share of the pooled logits, which
    sum over the views to the pooled answer's logits (up to a constant per sample, which softmax ignores).
    view_probs: (V, C) each view's two readings pooled (zero rows where the main model had no view)."""

    probs: np.ndarray
    view_contributions: np.ndarray
    view_probs: np.ndarray

    @classmethod
    def of(cls, main, other, weight: float) -> Pooled:
        def first(t):
            return t[0].float().cpu().numpy()

        shown = first(main.view_probs).sum(axis=-1, keepdims=True) > 0
        views = np.stack([pool(m, o, weight) for m, o in zip(first(main.view_probs), first(other.view_probs))])
        return cls(
            probs=pool(first(main.probs), first(other.probs), weight),
            view_contributions=(1 - weight) * first(main.view_contributions)
            + weight * first(other.view_contributions),
            view_probs=np.where(shown, views, 0.0).astype(np.float32),
        )

    @classmethod
    def alone(cls, main) -> Pooled:
        """The main model's own reading, as numpy arrays."""
        return cls(*(t[0].float().cpu().numpy() for t in (main.probs, main.view_contributions, main.view_probs)))


def pool(main: np.ndarray, companion: np.ndarray, weight: float) -> np.ndarray:
    """Log-linear pooling: softmax((1 - weight) * log main + weight * log companion)."""
    tiny = np.finfo(np.float32).tiny
    logp = (1 - weight) * np.log(np.maximum(main, tiny)) + weight * np.log(np.maximum(companion, tiny))
    return torch.softmax(torch.as_tensor(logp, dtype=torch.float64), dim=-1).numpy().astype(np.float32)


def pool_odds(main: np.ndarray, companion: np.ndarray, weight: float) -> np.ndarray:
    """Independent yes/no probabilities (action units) pooled as the labels are: sigmoid of the log-odds'
    weighted mean, `(1 - weight) * logit(main) + weight * logit(companion)`."""
    tiny = np.finfo(np.float32).eps
    main, companion = (np.clip(np.asarray(x, dtype=np.float64), tiny, 1 - tiny) for x in (main, companion))
    odds = (1 - weight) * np.log(main / (1 - main)) + weight * np.log(companion / (1 - companion))
    return (1 / (1 + np.exp(-odds))).astype(np.float32)


def read_settings(source: str | os.PathLike) -> dict | None:
    """A checkpoint's `companion.json` (folder or Hub id), checked, or None when it has none."""
    from .prompt_features import locate

    path = locate(source, FILENAME)
    if path is None:
        return None
    settings = json.loads(Path(path).read_text(encoding="utf-8"))
    folder, weight = settings.get("folder"), settings.get("weight")
    if not isinstance(folder, str) or not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise ValueError(f"{FILENAME}: folder must name a subfolder of the checkpoint, got {folder!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ValueError(f"{FILENAME}: weight must be a number in [0, 1], got {weight!r}")
    return settings


def load(source: str | os.PathLike, main_recipe, **kwargs) -> Companion | None:
    """The companion a checkpoint (folder or Hub id) names in its `companion.json`, loaded as an
    `AffectVLMPredictor` with `kwargs` (device, dtype, limits), or None. Its recipe must draw the normalised scan
    as the main model's does in everything but the picture (`ScanRecipe.mode`), or it would read another face."""
    import dataclasses

    from .predictor import AffectVLMPredictor

    settings = read_settings(source)
    if settings is None:
        return None
    if Path(source).is_dir():
        where = Path(source) / settings["folder"]
    else:  # a Hub id: its subfolder, fetched (or taken from the local cache) beside the main model's files
        from huggingface_hub import snapshot_download

        try:
            where = Path(snapshot_download(str(source), allow_patterns=[f"{settings['folder']}/*"])) / settings["folder"]
        except (OSError, ValueError) as err:  # offline and not cached: the main model answers alone
            warnings.warn(f"{source}: its companion ({settings['folder']}/) could not be fetched ({err}); "
                          "the main model answers alone", stacklevel=2)  # fmt: skip
            return None
    predictor = AffectVLMPredictor.from_pretrained(where, companion=False, **kwargs)
    mine = dataclasses.replace(predictor.recipe, mode=main_recipe.mode)
    if mine != main_recipe:
        raise ValueError(f"{FILENAME}: the companion draws scans as {predictor.recipe}, not as {main_recipe}")
    return Companion(predictor, float(settings["weight"]))


__all__ = ["FILENAME", "Companion", "Pooled", "load", "pool", "pool_odds", "read_settings"]
