"""High-level prediction: views, a 3D scan or a 4D sequence in; scores for any labels out.

    predictor = AffectVLMPredictor.from_pretrained()          # the demo checkpoint shipped with the repo
    result = predictor(scan="face.obj")                        # or images=[front, left, right], sequence=...
    print(result.table())
    predictor(images=[front, left, right], labels=["happy", "a person in pain"])

Labels default to the model's own; any list of labels (or a dict label -> prompts) can be given, and the
class text embeddings are computed once per label set and cached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .companion import Pooled, pool
from .companion import load as load_companion
from .face_distance import load as load_face_distance
from .modeling_affectvlm import AffectVLMModel
from .precision import resolve_device, resolve_dtype
from .processing_affectvlm import AffectVLMProcessor
from .prompt_features import load as load_prompt_features
from .scan.archive import IMAGE_EXTENSIONS, ZipLimits
from .scan.io import SUPPORTED_EXTENSIONS
from .scan.types import InputError, Scan

# Where the shipped checkpoints live in a checkout (and in the Space folder built from it); a name below
# selects one: `AffectVLMPredictor.from_pretrained("affectvlm-ict")`.
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_MODEL = "affectvlm-cpu"
DEMO_CHECKPOINT = CHECKPOINTS / DEFAULT_MODEL
# A top score under this many times the uniform one (1 / number of labels) gets a low-confidence note.
LOW_CONFIDENCE = 1.5
# A scan whose embedding lies further from the validation faces of every expression than the checkpoint's
# `affectvlm.face_distance` ceiling (`Prediction.face_distance`), or, for a checkpoint without that fit, less
# similar to every label it was trained on than `config.familiarity_floor` (`Prediction.familiarity`), gets this
# note: shapes that pass the scan door's face tests (a box held corner first, a cylinder's cloud, an office scene)
# lie there, and so do the held-out faces the model reads worst.
UNFAMILIAR_NOTE = (
    "low confidence: this looks like none of the faces and expressions the model learnt from ({measure}): it may "
    "not be a face, and the scores are not reliable"
)


@dataclass(frozen=True)
class InputLimits:
    """Caps on what one request may contain, checked before anything large is read or allocated."""

    max_file_bytes: int = 100 * 1024**2
    max_vertices: int = 2_000_000
    max_faces: int = 4_000_000
    max_frames: int = 300
    max_zip_bytes: int = 1024**3  # uncompressed total
    max_zip_entries: int = 2_000
    max_zip_ratio: float = 200.0
    max_image_pixels: int = 4096 * 4096
    max_labels: int = 64
    max_label_chars: int = 200  # per label and per prompt
    max_prompts_per_label: int = 32
    # characters of all prompts together, defaults included: the text encoder's work (64 labels of up to about 35
    # characters with their 8 default prompts each; 64 x 32 prompts of 199 characters once took 100-200 s)
    max_prompt_chars: int = 32_000

    def zip_limits(self) -> ZipLimits:
        return ZipLimits(self.max_zip_entries, self.max_file_bytes, self.max_zip_bytes, self.max_zip_ratio)


@dataclass
class Prediction:
    """Scores for one sample.

    labels: the C label names. probs: (C,) probabilities (for a scan or a sequence read by a checkpoint with a
    companion, `affectvlm.companion`, the two models' pooled answer, and so are `view_contributions`, `view_probs`,
    `frame_probs`, `action_units` and what `relevance` explains; every other field is the main model's own).
    view_names: the V view names. view_contributions: (V, C) each view's additive share of the class logits.
    view_probs: (V, C) probabilities from each view alone (zero rows for missing views).
    view_mask: (V,) which views were available. views: (V, H, W, 3) uint8 views the model saw (rendered views
    or dynamic images for scans and sequences; the given images otherwise; black where missing).
    notes: what a person should know about the answer (missing views, not a face, low confidence).
    scan: for a scan, the normalised Scan the views were rendered from (the app's 3D preview).
    action_units: "AU12 lip corner puller" -> probability that the action unit is active, for models trained
    to read action units (None otherwise), in AU order.
    relevance: with `explain=True`, where on the face the top label came from (`affectvlm.explain.Explanation`:
    per-pixel maps, overlays on the views and, for scans, per-vertex relevance with `.write_glb(path)`).
    frame_probs: for a sequence, (F, C) probabilities of each frame the recipe picked, scored on its own as a
    static scan; frames: their (F, H, W, 3) uint8 frontal views (the frame strip); frame_numbers: their (F,)
    places in the sequence as given, counted from 1 (frame files in natural order).
    familiarity: for a scan or a sequence, the cosine similarity between its embedding (a sequence's: its most
    familiar pooled frame's, as a scan) and the nearest of the model's own labels (`AffectVLMPredictor.familiarity`).
    face_distance: for a scan or a sequence (its nearest pooled frame), with a checkpoint that carries the fit, the
    Mahalanobis distance of its embedding from the validation faces of the nearest expression
    (`affectvlm.face_distance`): beyond the fit's ceiling, a note says it may not be a face.
    """

    labels: list[str]
    probs: np.ndarray
    view_names: list[str]
    view_contributions: np.ndarray
    view_probs: np.ndarray
    view_mask: np.ndarray
    views: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    scan: Scan | None = None
    action_units: dict[str, float] | None = None
    relevance: object | None = None
    frame_probs: np.ndarray | None = None
    frames: np.ndarray | None = None
    frame_numbers: np.ndarray | None = None
    familiarity: float | None = None
    face_distance: float | None = None

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

    @property
    def may_not_be_a_face(self) -> bool:
        """Whether a note says the input may not be a face: the scan door's face tests (no nose, no face from any
        direction, flat facets) or the model's own (`UNFAMILIAR_NOTE`). The app puts this above the answer."""
        from .scan.recipe import FLAT_NOTE, NO_FACE_FOUND_NOTE, NOT_A_FACE_NOTE

        unfamiliar = UNFAMILIAR_NOTE.split("(")[0]
        return any(n in (FLAT_NOTE, NO_FACE_FOUND_NOTE, NOT_A_FACE_NOTE) or n.startswith(unfamiliar) for n in self.notes)

    def scores(self) -> dict[str, float]:
        """label -> probability, highest first."""
        order = np.argsort(-self.probs, kind="stable")
        return {self.labels[i]: float(self.probs[i]) for i in order}

    def contributions(self) -> dict[str, dict[str, float]]:
        """view name -> label -> contribution to the logit (available views only)."""
        return {
            view: {label: float(self.view_contributions[v, c]) for c, label in enumerate(self.labels)}
            for v, view in enumerate(self.view_names)
            if self.view_mask[v]
        }

    def frame_answers(self) -> list[dict] | None:
        """For a sequence, each pooled frame scored on its own: {"frame": its place in the sequence (from 1),
        "label": the top label, "scores": label -> probability}, in the order captured; None for a scan or views."""
        if self.frame_probs is None:
            return None
        return [
            {"frame": int(n), "label": self.labels[int(p.argmax())],
             "scores": {label: float(q) for label, q in zip(self.labels, p)}}
            for n, p in zip(self.frame_numbers, self.frame_probs)
        ]  # fmt: skip

    def to_dict(self) -> dict:
        frames = self.frame_answers()
        return {
            "label": self.label,
            "scores": self.scores(),
            "view_contributions": self.contributions(),
            "views_available": [v for v, ok in zip(self.view_names, self.view_mask) if ok],
            "notes": list(self.notes),
            **({"action_units": dict(self.action_units)} if self.action_units is not None else {}),
            **({"frames": frames} if frames is not None else {}),
            **({"familiarity": self.familiarity} if self.familiarity is not None else {}),
            **({"face_distance": self.face_distance} if self.face_distance is not None else {}),
        }

    def table(self) -> str:
        """A plain-text table: one row per label, probability then each view's contribution."""
        views = [v for v, ok in zip(self.view_names, self.view_mask) if ok]
        width = max(len(label) for label in self.labels) + 2
        head = f"{'label':<{width}}{'prob':>8}" + "".join(f"{v:>10}" for v in views)
        rows = [head, "-" * len(head)]
        for label, prob in self.scores().items():
            c = self.labels.index(label)
            cells = "".join(
                f"{self.view_contributions[v, c]:>10.3f}"
                for v in range(len(self.view_names))
                if self.view_mask[v]
            )
            rows.append(f"{label:<{width}}{prob:>8.3f}{cells}")
        return "\n".join(rows)


# Words with no bearing on a face's expression: where the model places them marks "not understood".
# The label check puts a label in this sentence and compares it with the model's own labels put in it: a bare
# word against a sentence read idioms and neutral words badly under a sentence encoder (docs/RESULTS.md).
CHECK_TEMPLATE = "a face showing {}."
UNRELATED_WORDS = ("table", "bicycle", "spreadsheet", "volcano", "the tax code", "a blue car", "seven", "gravel",
                   "banana", "keyboard", "democracy", "a parking lot")  # fmt: skip


@dataclass
class LabelCheck:
    """What the served model makes of one label: the nearest trained emotion or AU description (by the
    model's text embeddings), the cosine similarity, whether it counts as understood, unknown words."""

    label: str
    nearest: str
    similarity: float
    understood: bool
    unknown_words: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        if self.unknown_words:
            return f"{self.label!r}: the tokenizer does not know {', '.join(self.unknown_words)}"
        verdict = "reads as" if self.understood else "is far from anything the model was trained on; nearest"
        return f"{self.label!r} {verdict} {self.nearest!r} (similarity {self.similarity:.2f})"


def random_demo_model(seed: int = 0) -> tuple[AffectVLMModel, AffectVLMProcessor]:
    """A small random model with the offline tokenizer, for when no trained checkpoint is available."""
    from .testing import tiny_clip_config, tiny_config, tiny_processor

    torch.manual_seed(seed)
    clip = tiny_clip_config(
        hidden_size=64, num_layers=2, num_heads=4, image_size=64, patch_size=16, projection_dim=64
    )
    model = AffectVLMModel(tiny_config(clip_config=clip)).eval()
    return model, tiny_processor(image_size=64)


# A sequence whose last frame reads neutral by this much more than its first runs from the expression back to
# neutral (a capture that starts at the apex): it is pooled in reverse. Chosen on 60 held-out sequences (seed 1):
# their second halves 0.017 -> 0.833 right, whole sequences and first halves unchanged (docs/RESULTS.md).
FADING_MARGIN = 0.3
FADING_NOTE = (
    "the frames run from an expression back to neutral; they were read in reverse, as a sequence that starts at "
    "neutral (BU-4DFE's order)"
)
# A rendered view is a face on black: 40-65 % of the examples' pixels are background (the face covers the rest).
# Images with next to no black anywhere (a photo, noise, a flat colour) are not what the model reads.
MIN_BACKGROUND = 0.05
_BLACK = 8  # a pixel whose brightest channel is below this is background, JPEG's ringing included
# ... and its face is shaded: its pixels' values spread by 50-60 levels in the examples; a flat shape (a white box
# on black, stripes) by none.
MIN_SHADING = 8.0


def _not_a_render(rgb: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 view is unlike a rendered face: next to no background, or a surface with no
    shading (one flat colour on black)."""
    lit = rgb.max(axis=-1) >= _BLACK
    if not lit.any() or 1.0 - lit.mean() < MIN_BACKGROUND:
        return True
    return float(rgb[lit].astype(np.float32).std(axis=0).max()) < MIN_SHADING


NOT_A_RENDER_NOTE = (
    "these images do not look like the views the model reads (a face rendered on a black background, "
    "as `render_views` draws them): the scores are not reliable"
)
# Views much smaller than the model's own are read blurred: the anger example's views at 32 px read fear 0.85, at
# 48 px anger 0.55, at 64 px anger 0.97.
LOW_RESOLUTION = 2 / 3  # of the model's view size
LOW_RESOLUTION_NOTE = (
    "the {views} view(s) are only {pixels} pixels across, under the {size} px the model reads: their detail is "
    "lost and the scores are less reliable"
)
# A grey render has the same value in each channel; a normal map is coloured. Given views drawn the other way from
# the model's training views are read as another face: said, not refused (`_drawn_otherwise`).
_GREY_SPREAD = 12  # the channels of a grey pixel differ by less than this (JPEG's colour noise included)
_GREY_SHARE = 0.95  # ... in this share of the face's pixels
DRAWN_OTHERWISE_NOTE = (
    "these views are {given}, but this model reads {reads}: render the scan with `python -m affectvlm render "
    "--mode {mode}`, or give the scan itself; the scores are not reliable"
)


# 'label: prompt; prompt': a label without commas, a colon, then nothing or words (a letter first), so that
# "anger at 10:30", "smile :)" and "http://..." stay labels as written
_PROMPT_LINE = re.compile(r"\s*([^,:]+?)\s*:(?:\s*([^\W\d_].*?))?\s*")


def parse_labels(text: str, limits: InputLimits | None = None) -> list[str] | dict[str, list[str]]:
    """Labels typed by a person: one per comma or line (`happy, sad`); a line `label: prompt; prompt` gives its
    label its own prompts (commas allowed in them), and may sit among lines of plain labels (a dict then, plain
    labels with no prompts of their own).

    Text longer than the caps allow is refused before it is split (a 1 MB label must not cost memory).
    """
    limits = limits or InputLimits()
    budget = limits.max_labels * (limits.max_label_chars + 2) * (limits.max_prompts_per_label + 1)
    if len(text) > budget:
        raise InputError(f"the labels are {len(text)} characters long; at most {budget} are read")
    lines = [line for line in text.splitlines() if line.strip()]
    matches = [_PROMPT_LINE.fullmatch(line) for line in lines]
    if not any(matches):
        return [x.strip() for x in re.split(r"[,\n]", text) if x.strip()]
    prompts: dict[str, list[str]] = {}
    for line, match in zip(lines, matches):
        if match:
            prompts[match[1]] = [p.strip() for p in (match[2] or "").split(";") if p.strip()]
        else:
            prompts.update({x.strip(): [] for x in line.split(",") if x.strip()})
    return prompts


# -- what `from_pretrained` loads, and where (its helpers) --------------------------------------------------------

# a Hugging Face Hub id: owner/name
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _model_source(name: str | os.PathLike | None) -> Path | str | None:
    """Where `from_pretrained` loads `name` from: a shipped checkpoint's or a saved model's folder, a Hub id
    (owner/name, tried on the Hub), or None for the shipped default; `InputError` for a name that is none."""
    if name is None:
        return None
    if not isinstance(name, str | os.PathLike):
        raise InputError(f"a model is named by a folder, a shipped model's name or a Hub id; got a {type(name).__name__}")
    text, shipped = os.fspath(name), ", ".join(shipped_models()) or "none"
    what = f"a saved model folder, a shipped model ({shipped}) or a Hub id owner/name"
    if not text.strip():
        raise InputError(f"no model named: give {what}")
    if isinstance(name, str) and text in shipped_models():
        return CHECKPOINTS / text
    path = Path(text).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        raise InputError(f"{text!r} is a folder without a saved model (no config.json)")
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{text!r} is a file; give {what}")
    if isinstance(name, os.PathLike) or text.startswith((".", "~")) or not _HUB_ID.fullmatch(text):
        where = "folder" if isinstance(name, os.PathLike) or "/" in text or os.sep in text else "folder or shipped model"
        raise InputError(f"no such {where} {text!r}; shipped: {shipped} (or a Hub id owner/name)")
    return text


def _hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers one request within `timeout` seconds (through huggingface_hub's own
    session, so its proxy settings hold); True in offline mode (HF_HUB_OFFLINE), where huggingface_hub answers
    from the cache at once."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        return True
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # the HTTP client's transport errors: no name resolution, refused, timed out
        return False
    return True


@contextlib.contextmanager
def _no_loading_bars(local: bool):
    """transformers draws a "Loading weights" bar for each model it loads (the view model, its text tower, and the
    companion's): four bars before every answer of the CLI for a local model that loads in a blink. They are left
    out for a local folder; a Hub id's downloads keep theirs (that is long work)."""
    from transformers.utils import logging as hf_logging

    if not local or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def _load_failure(name, source: Path | str, unreachable: bool = False) -> str:
    """The one-line reason `from_pretrained` gives when loading `source` (what `name` resolved to) failed."""
    if isinstance(source, str):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or unreachable:
            how = "offline (HF_HUB_OFFLINE)" if constants.HF_HUB_OFFLINE else "out of reach (no network?)"
            why = f"the Hub is {how} and the model is not in the local cache"
        else:
            why = "no such model there, or not an AffectVLM model"
        return f"could not load {source!r} from the Hugging Face Hub: {why}"
    what = "the shipped default model" if name is None else repr(os.fspath(name))
    return f"could not load a model from {what}: not a saved AffectVLM model, or damaged"


class AffectVLMPredictor:
    """Scores views, scans or sequences against labels with an AffectVLM model.

    Build with `from_pretrained(path_or_hub_id)`; with no argument the demo checkpoint shipped in
    `checkpoints/affectvlm-cpu` is used, or, if it is missing, a small random model (then
    `is_random` is True and every prediction carries a note saying so).
    """

    def __init__(
        self,
        model: AffectVLMModel,
        processor: AffectVLMProcessor,
        *,
        source: str = "",
        is_random: bool = False,
        limits: InputLimits | None = None,
        cache_size: int = 32,
    ):
        self.model = model.eval()
        self.processor = processor
        self.source = source
        self.is_random = is_random
        self.limits = limits or InputLimits()
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_size = cache_size
        self.face_distance = None  # an `affectvlm.face_distance.FaceDistance`; from_pretrained: the checkpoint's
        self.companion = None  # an `affectvlm.companion.Companion`; from_pretrained: the checkpoint's, if it names one

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        prompt_features: bool = True,
        companion: bool = True,
        **kwargs,
    ) -> AffectVLMPredictor:
        """Load a saved AffectVLM model and processor: a folder, the name of a shipped checkpoint
        (`shipped_models()`, e.g. "affectvlm-ict") or a Hub id; None: the shipped default model.

        `dtype` defaults to bf16 where the hardware multiplies it natively (CPUs with AMX or AVX512-BF16, recent GPUs), else
        fp32 (`affectvlm.precision.serving_dtype`); a dtype may be named ("bfloat16", "float32"). `device`: cpu,
        cuda (default when available) or mps. A name that is no folder, shipped model or Hub id, a device this
        machine lacks, or a model that cannot be loaded raises `InputError` saying so in one line.
        `prompt_features`: take the text encoder's features of the default prompts saved with the checkpoint
        (`affectvlm.prompt_features`) instead of encoding them again. `companion`: load the second model a
        checkpoint may name in its `companion.json` (`affectvlm.companion`: normal maps of the same scan, its
        answer mixed into a scan's or a sequence's); False: the main model alone."""
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        source = _model_source(path_or_hub_id)
        if source is None and not (DEMO_CHECKPOINT / "config.json").is_file():
            warnings.warn(
                f"no demo checkpoint in {DEMO_CHECKPOINT}: using a small RANDOM model; its scores mean nothing",
                stacklevel=2,
            )
            model, processor = random_demo_model()
            return cls(model.to(device), processor, source="random (untrained)", is_random=True, **kwargs)
        source = source or DEMO_CHECKPOINT
        # a Hub id while the Hub cannot be reached: the local cache or nothing, at once (huggingface_hub would
        # retry a dead connection for half a minute before failing)
        cached_only = isinstance(source, str) and not _hub_reachable()
        with _no_loading_bars(Path(source).is_dir()):
            try:
                model = AffectVLMModel.from_pretrained(str(source), local_files_only=cached_only)
                processor = AffectVLMProcessor.from_pretrained(str(source), local_files_only=cached_only)
            except (OSError, ValueError, KeyError) as err:  # not found, offline, not an AffectVLM folder
                raise InputError(_load_failure(path_or_hub_id, source, cached_only)) from err
            model = model.to(device=device, dtype=dtype)
            if prompt_features:
                load_prompt_features(model, source)
            predictor = cls(model, processor, source=str(source), **kwargs)
            predictor.face_distance = load_face_distance(source, model.config.projection_dim)
            if companion:
                predictor.companion = load_companion(source, predictor.recipe, device=device, dtype=dtype, **kwargs)
        return predictor

    @property
    def card(self) -> dict:
        """The model card's metadata (`license`, `license_name`, `summary`, ...) of a local checkpoint; {} for
        Hub ids and random models. The app shows the model's name and licence from it."""
        from huggingface_hub.repocard import metadata_load

        path = Path(self.source) / "README.md"
        return (metadata_load(path) or {}) if path.is_file() else {}

    # -- labels ---------------------------------------------------------------------------------------------

    @property
    def default_labels(self) -> list[str]:
        return list(self.model.config.label_names)

    def _prompts(self, labels) -> dict[str, list[str]]:
        """Labels (a list, a dict label -> prompts, or text for `parse_labels`) -> label -> prompts, capped."""
        from .prompts import inference_prompts

        if labels is None or (isinstance(labels, str) and not labels.strip()):  # as the app's empty box
            labels = self.default_labels
        if isinstance(labels, str):
            labels = parse_labels(labels, self.limits)
        if not isinstance(labels, Mapping):
            labels = {str(x).strip(): [] for x in list(labels)[: self.limits.max_labels + 1] if x is not None}
        prompts, seen = {}, set()
        for label, value in list(labels.items())[: self.limits.max_labels + 1]:
            label = str(label).strip()
            if label.casefold() in seen:  # "happiness, Happiness": one label, not two splitting its score
                continue
            seen.add(label.casefold())
            items = [value] if isinstance(value, str) else list(value or [])
            prompts[label] = [p.strip() for p in items if isinstance(p, str) and p.strip()]
        prompts.pop("", None)
        self._check_label_caps(prompts)
        if len(prompts) < 2:
            raise InputError("give at least two distinct, non-empty labels to score against")
        missing = [label for label, items in prompts.items() if not items]
        defaults = inference_prompts(missing) if missing else {}
        prompts = {label: items or defaults[label] for label, items in prompts.items()}
        total = sum(len(text) for items in prompts.values() for text in items)
        if total > self.limits.max_prompt_chars:
            raise InputError(
                f"{len(prompts)} labels make {total} characters of prompts to read, more than the limit of "
                f"{self.limits.max_prompt_chars}: score fewer or shorter labels at a time"
            )
        return prompts

    def _check_label_caps(self, prompts: dict[str, list[str]]) -> None:
        caps = self.limits
        if len(prompts) > caps.max_labels:
            raise InputError(f"more than {caps.max_labels} labels: score at most {caps.max_labels} at a time")
        for label, items in prompts.items():
            if len(items) > caps.max_prompts_per_label:
                raise InputError(f"label {label[:40]!r}: more than {caps.max_prompts_per_label} prompts")
            for text in (label, *items):
                if len(text) > caps.max_label_chars:
                    raise InputError(
                        f"a label or prompt is {len(text)} characters long (at most {caps.max_label_chars})"
                    )

    def class_embeddings(self, labels=None) -> tuple[list[str], torch.Tensor]:
        """(label names, (C, D) class embeddings), cached per label set."""
        prompts = self._prompts(labels)
        key = tuple((label, tuple(p)) for label, p in prompts.items())
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = self.model.encode_prompts(prompts, tokenizer=self.processor.tokenizer)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(prompts), self._cache[key]

    def check_labels(self, labels=None) -> list[LabelCheck]:
        """What the model makes of each label before scoring: its nearest trained emotion or AU description
        (in the text encoder's own space, `_text_space`: "a face showing <label>." against "a face showing
        <emotion>." and "a face with <AU description>.") and how close, words its tokenizer does not know, and
        whether the label is far from everything the model was trained against (then its score means little)."""
        if isinstance(labels, str):
            labels = parse_labels(labels, self.limits) if labels.strip() else None
        prompts = self._prompts(labels)
        own = labels if isinstance(labels, Mapping) else {}  # labels given with prompts of their own
        embeds = self._text_space(
            {label: items if own.get(label) else [CHECK_TEMPLATE.format(label)] for label, items in prompts.items()}
        )
        reference_names, reference = self._trained_reference()
        similarity = (embeds.float() @ reference.float().T).cpu().numpy()
        floor = self._understood_floor(reference)
        unk = getattr(self.processor.tokenizer, "unk_token", None)
        out = []
        for i, label in enumerate(prompts):
            j = int(similarity[i].argmax())
            # a word any piece of which the tokenizer does not know (CJK words become [UNK] [UNK] under mpnet)
            unknown = [w for w in label.split() if unk and unk in self.processor.tokenizer.tokenize(w)]
            close = float(similarity[i, j]) >= floor and not unknown
            out.append(LabelCheck(label, reference_names[j], float(similarity[i, j]), close, unknown))
        return out

    def _trained_reference(self) -> tuple[list[str], torch.Tensor]:
        """The model's own labels and, for models that read them, its AU descriptions, in the text space."""
        from .data.aus import au_description
        from .prompts import au_label

        reference = {label: [CHECK_TEMPLATE.format(label)] for label in self.default_labels}
        for n in self.model.config.au_logit_bias or {}:
            reference[au_label(int(n))] = [f"a face with {au_description(int(n))}."]
        return list(reference), self._text_space(reference)

    def _text_space(self, prompts: dict[str, list[str]]) -> torch.Tensor:
        """(C, D) embeddings of labels' prompts in the text encoder's own space (a pretrained encoder's pooled
        features, where words keep their meaning; the shared space for CLIP's text tower), cached."""
        key = ("__text_space__", *((label, tuple(p)) for label, p in prompts.items()))
        if key not in self._cache:
            self._cache[key] = self.model.encode_prompts(prompts, self.processor.tokenizer, projected=False)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[key]

    def _understood_floor(self, reference: torch.Tensor) -> float:
        """The similarity from which a label counts as understood: half-way between words the model should
        place (never-trained emotion words, `vocabulary.VALIDATION_VOCABULARY`; the held-out words stay a test)
        and words with no bearing on a face's expression (`UNRELATED_WORDS`), by their medians of
        nearest-reference similarity, each word put in `CHECK_TEMPLATE` as labels are."""
        if getattr(self, "_floor", None) is None:
            from .vocabulary import VALIDATION_VOCABULARY

            def nearest(words):
                e = self._text_space({w: [CHECK_TEMPLATE.format(w)] for w in words})
                return float((e.float() @ reference.float().T).max(-1).values.median())

            validation = [w for words in VALIDATION_VOCABULARY.values() for w in words]
            self._floor = 0.5 * (nearest(validation) + nearest(UNRELATED_WORDS))
        return self._floor

    # -- inputs -> views ------------------------------------------------------------------------------------

    @property
    def recipe(self):
        """The model's `ScanRecipe` (saved with its processor): how its training scans became views."""
        from .scan.recipe import ScanRecipe

        return ScanRecipe.from_settings(self.processor.render_settings, size=max(self.processor.image_size))

    def recipe_facing(self, facing: str):
        """The model's recipe with the scan's facing (`ScanRecipe.orient`): "auto", or the file axis the face looks
        along ("-z", "-y,+z"); anything else is an InputError naming the choices."""
        from .scan.normalize import facing_turn

        try:
            facing_turn(facing)
        except ValueError as err:
            raise InputError(str(err).replace("orient", "facing")) from None
        return self.recipe if facing == "auto" else dataclasses.replace(self.recipe, orient=facing)

    def _check_file(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"{path.name}: no such file")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{path.name}: the file is empty")
        if size > self.limits.max_file_bytes:
            raise InputError(
                f"{path.name}: {size / 1024**2:.1f} MB is larger than the {self.limits.max_file_bytes / 1024**2:.0f} MB limit"
            )

    def load_scan(self, scan):
        """A path (or a Scan, returned as it is) -> the Scan as read, under the predictor's caps; its texture image
        is read only for a model that draws it (`ScanRecipe.needs_texture`)."""
        from .scan import Scan, load_scan

        if isinstance(scan, Scan):
            return scan
        path = Path(scan)
        self._check_file(path)
        return load_scan(
            path,
            max_vertices=self.limits.max_vertices,
            max_faces=self.limits.max_faces,
            max_file_bytes=self.limits.max_file_bytes,
            load_texture=self.recipe.needs_texture,
        )

    def prepare_scan(self, scan, facing: str = "auto"):
        """A path or a Scan -> (the normalised Scan, (V, H, W, 3) uint8 views tensor, notes), by the recipe;
        `facing`: which way the face looks (`ScanRecipe.orient`)."""
        from .scan.recipe import check_face

        recipe = self.recipe_facing(facing)
        normalized = recipe.normalize(self.load_scan(scan))
        views = recipe.views_of([normalized], device=self.model.device)[0].cpu()
        return normalized, views, check_face(normalized, views).notes

    def render_scan(self, scan, facing: str = "auto") -> np.ndarray:
        """A path or a Scan -> (V, H, W, 3) uint8 views, rendered as the model's training data was."""
        return self.prepare_scan(scan, facing)[1].numpy()

    def _sequence_paths(self, sequence, workdir: Path) -> list:
        """Frames from a folder, a zip file or a list of paths/Scans, in time order."""
        from .scan.archive import collect_frames, extract_frames, refuse_archives

        if isinstance(sequence, str | os.PathLike):
            path = Path(sequence)
            if path.is_dir():
                frames = collect_frames(path)
            elif path.suffix.lower() == ".zip":
                self._check_file(path)
                frames = extract_frames(path, workdir, self.limits.zip_limits())
            else:
                raise InputError(f"{path.name}: a sequence is a folder, a .zip file or a list of frame files")
        elif isinstance(sequence, Sequence) and not isinstance(sequence, str):
            frames = list(sequence)
            refuse_archives(frames)
        else:
            raise InputError("a sequence is a folder, a .zip file or a list of frame files")
        if not frames:
            raise InputError(
                f"no 3D frames found (expected files ending in {', '.join(SUPPORTED_EXTENSIONS)})"
            )
        if len(frames) == 1:  # no motion to pool: the dynamic image would be the one frame's shading
            raise InputError(
                "a 4D sequence is 2 frames or more, and this one holds a single frame: give a single scan as a scan "
                "(scan=, the app's 3D scan tab, the command line with the scan file itself)"
            )
        if len(frames) > self.limits.max_frames:
            raise InputError(f"{len(frames)} frames is more than the limit of {self.limits.max_frames}")
        return frames

    def prepare_sequence(self, sequence, facing: str = "auto"):
        """A folder, zip, or list of frames -> ((V, H, W, 3) uint8 dynamic images tensor, notes, the frames pooled,
        their places in the sequence counted from 1, the pooled frames normalised together in pooling order, as the
        dynamic images draw them), by the recipe: frames spread over the expression's span
        (`ScanRecipe.pooled_frames`), pooled from the sequence's neutral end; the apex frame gets the scan door's face
        check. Only the frames looked at are read. `facing`: which way the face looks (`ScanRecipe.orient`)."""
        from .scan.recipe import DIFFERENT_FACES_NOTE, ONE_FACE_MM, check_face

        recipe, device = self.recipe_facing(facing), self.model.device
        with tempfile.TemporaryDirectory(prefix="affectvlm-seq-") as tmp:
            frames = self._sequence_paths(sequence, Path(tmp))
            read = functools.cache(lambda i: self.load_scan(frames[i]))
            fades = self._fades(recipe.views_of([read(0), read(len(frames) - 1)], device=device).cpu())
            picked = recipe.pooled_frames(len(frames), read, reverse=fades, device=device)
            scans = [read(i) for i in picked]
        apex = recipe.normalize(scans[-1])
        notes = [FADING_NOTE] if fades else []
        notes += check_face(apex, recipe.views_of([apex], device=device)[0].cpu()).notes  # a moving cube: no face
        registered = recipe.normalize_frames(scans)
        notes += [DIFFERENT_FACES_NOTE] if recipe.frames_apart(registered) > ONE_FACE_MM else []
        dynamic = recipe.dynamic_images(registered, device=device).cpu()
        if not bool((dynamic > 0).any()):
            raise InputError(
                "the frames do not move: every dynamic image is blank (a 4D sequence needs motion)"
            )
        if fades:  # the frames in the order they were captured
            scans, picked = scans[::-1], picked[::-1]
        return dynamic, notes, scans, np.asarray(picked) + 1, registered

    def _fades(self, views: torch.Tensor) -> bool:
        """Whether a sequence runs from an expression back to neutral, given the (2, V, H, W, 3) views of its first
        and last frames: the last, read on its own, is neutral by `FADING_MARGIN` more than the first. Its dynamic
        image is then the negative of the expression's, which the model reads as another one (the second halves of
        held-out sequences: 0.017 right), so it is pooled in reverse. False for models without a neutral label."""
        if "neutral" not in self.default_labels:
            return False
        names, class_embeds = self.class_embeddings(None)
        pixels = self.processor(images=views)["pixel_values"].to(self.model.device)
        neutral = self.model.score(pixels, class_embeds.to(self.model.device)).probs[
            :, names.index("neutral")
        ]
        return float(neutral[1] - neutral[0]) > FADING_MARGIN

    def render_sequence(self, sequence, facing: str = "auto") -> np.ndarray:
        """A folder, zip, or list of frames -> (V, H, W, 3) uint8 dynamic images (approximate rank pooling)."""
        return self.prepare_sequence(sequence, facing)[0].numpy()

    def frame_scores(
        self, frames, class_embeds: torch.Tensor, facing: str = "auto", names=None, labels=None
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Each frame of a sequence scored on its own as a static scan: ((F, C) probabilities, (F, H, W, 3) uint8
        frontal views), for the per-frame plot and the frame strip beside the dynamic images, and their (F, D)
        fused embeddings (the sequence is judged by its most familiar frame: `_judged`). Each frame is normalised
        once, with the sequence's `facing`; given the label `names` and `labels` as scored, a companion reads it
        too and the probabilities are pooled, as the frame's answer through the scan door would be."""
        recipe = self.recipe_facing(facing)
        normalized = [recipe.normalize(frame) for frame in frames]
        views = recipe.views_of(normalized, device=self.model.device).cpu()  # (F, V, H, W, 3)
        pixels = self.processor(images=views)["pixel_values"].to(self.model.device)
        scores = self.model.score(pixels, class_embeds.to(self.model.device))
        probs = scores.probs.float().cpu().numpy()
        if self.companion is not None and names is not None:
            other = self.companion.frame_probs(names, labels, normalized)
            probs = np.stack([pool(main, own, self.companion.weight) for main, own in zip(probs, other)])
        return probs, views[:, 0].numpy(), scores.embeds

    def familiarity(self, embeds: torch.Tensor) -> np.ndarray:
        """(N, D) fused embeddings -> (N,) cosine similarity to the nearest of the model's own labels (whatever
        labels a sample is scored against): how much a scan looks like the faces the model learnt from."""
        _, trained = self.class_embeddings(None)
        return (embeds.float() @ trained.to(embeds.device).float().T).max(dim=-1).values.cpu().numpy()

    def _judged(self, embeds: torch.Tensor | None) -> tuple[float | None, float | None]:
        """(N, D) embeddings of a scan (N = 1) or of a sequence's pooled frames -> (`familiarity`, `face_distance`)
        of the most familiar: the largest similarity and the smallest distance (None without the fit)."""
        if embeds is None:
            return None, None
        distance = None if self.face_distance is None else float(self.face_distance(embeds).min())
        return float(self.familiarity(embeds).max()), distance

    def _unfamiliar(self, similarity: float | None, distance: float | None) -> list[str]:
        """`UNFAMILIAR_NOTE` where a scan's or sequence's `face_distance` is over the fit's ceiling or, for a
        checkpoint without the fit, its `familiarity` under the model's floor."""
        if self.face_distance is not None:
            ceiling = self.face_distance.ceiling
            if distance is None or distance <= ceiling:
                return []
            measure = f"distance {distance:.1f} from its validation faces, over {ceiling:.1f}"
        else:
            floor = self.model.config.familiarity_floor
            if similarity is None or floor is None or similarity >= floor:
                return []
            measure = f"similarity {similarity:.2f} to its nearest trained label, under {floor:.2f}"
        return [UNFAMILIAR_NOTE.format(measure=measure)]

    def _load_image(self, image, view: str):
        if image is None:
            return None
        if isinstance(image, str | os.PathLike):
            from PIL import Image, UnidentifiedImageError

            path = Path(image)
            self._check_file(path)
            try:
                with Image.open(path) as im:
                    if im.width * im.height > self.limits.max_image_pixels:
                        raise InputError(f"{view} view: {im.width}x{im.height} pixels is more than the limit")
                    im.load()
                    return self.processor._to_rgb_array(im, f"{view} view")  # upright, 8-bit, over black
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
                raise InputError(f"{view} view: {path.name} is not an image file that can be read") from err
        return image

    def _thumbnails(self, images: list) -> np.ndarray:
        """(V, H, W, 3) uint8 copies of the given views at the model's size, black where missing."""
        from PIL import Image

        height, width = self.processor.image_size
        out = np.zeros((len(images), height, width, 3), np.uint8)
        for v, image in enumerate(images):
            if image is not None:
                rgb = self.processor._to_rgb_array(image, self.processor.view_names[v])
                out[v] = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC))
        return out

    # -- predict --------------------------------------------------------------------------------------------

    def _image_views(self, images) -> tuple[list, list[str]]:
        """Given views (list or dict, paths, PIL images or arrays) -> (V (H, W, 3) uint8 arrays or None, notes)."""
        view_names = list(self.processor.view_names)
        if isinstance(images, Mapping):
            unknown = [k for k in images if k not in view_names]
            if unknown:
                raise InputError(f"unknown view name(s) {unknown}; expected {view_names}")
            images = [images.get(v) for v in view_names]
        images = list(images)
        if len(images) != len(view_names):
            raise InputError(
                f"give {len(view_names)} views ({', '.join(view_names)}); use None for a missing one"
            )
        images = [self._load_image(im, v) for im, v in zip(images, view_names)]
        if all(im is None for im in images):
            raise InputError("every view is missing: give at least one image")
        pixels = {
            v: self.processor._to_rgb_array(im, f"{v} view")
            for v, im in zip(view_names, images)
            if im is not None
        }
        for v, rgb in pixels.items():
            if np.ptp(rgb.reshape(-1, 3), axis=0).max() == 0:
                raise InputError(f"{v} view: the image is blank (one colour everywhere)")
        missing = [v for v, im in zip(view_names, images) if im is None]
        notes = [f"missing view(s): {', '.join(missing)}; scored on the others"] if missing else []
        if all(_not_a_render(rgb) for rgb in pixels.values()):
            notes.append(NOT_A_RENDER_NOTE)
        notes.extend(self._drawn_otherwise(list(pixels.values())))
        notes.extend(self._low_resolution(pixels))
        return [pixels.get(v) for v in view_names], notes  # read once: the processor takes the arrays as they are

    def _low_resolution(self, pixels: dict[str, np.ndarray]) -> list[str]:
        """[a note] when a given view's shorter side is under `LOW_RESOLUTION` of the model's view size."""
        size = min(self.processor.image_size)
        small = {v: min(rgb.shape[:2]) for v, rgb in pixels.items() if min(rgb.shape[:2]) < LOW_RESOLUTION * size}
        if not small:
            return []
        return [LOW_RESOLUTION_NOTE.format(views=", ".join(small), pixels=min(small.values()), size=size)]

    def _drawn_otherwise(self, pixels: list[np.ndarray]) -> list[str]:
        """[a note] when every given view is grey and the model reads normal maps, or every one is coloured and the
        model reads grey shading (its render mode, `processor.render_settings`); [] otherwise."""
        mode = (self.processor.render_settings or {}).get("mode")
        if mode not in ("normal", "normal_map"):
            return []
        grey = []
        for rgb in pixels:
            face = rgb[rgb.max(axis=-1) >= _BLACK].astype(np.int16)
            spread = face.max(axis=-1) - face.min(axis=-1) if len(face) else np.zeros(1)
            grey.append(bool((spread < _GREY_SPREAD).mean() >= _GREY_SHARE))
        if mode == "normal_map" and all(grey):
            return [DRAWN_OTHERWISE_NOTE.format(given="grey shading", reads="normal maps (colour)", mode=mode)]
        if mode == "normal" and not any(grey):
            return [DRAWN_OTHERWISE_NOTE.format(given="in colour", reads="grey shading", mode=mode)]
        return []

    def _inputs(self, images, scan, sequence, facing) -> tuple[dict, np.ndarray, object, list[str], list | None, object]:
        """(processor inputs, the (V, H, W, 3) views shown, the normalised scan or None, notes, a sequence's
        (frames pooled, their numbers) or None, what the views were drawn from: the normalised scan, a sequence's
        registered frames, or None for given images)."""
        if images is not None:
            images, notes = self._image_views(images)
            return self.processor(images=[images]), self._thumbnails(images), None, notes, None, None
        if scan is not None:
            normalized, views, notes = self.prepare_scan(scan, facing)
            return self.processor(images=views[None]), views.numpy(), normalized, notes, None, normalized
        views, notes, frames, numbers, registered = self.prepare_sequence(sequence, facing)
        return self.processor(images=views[None]), views.numpy(), None, notes, [frames, numbers], registered

    def __call__(
        self,
        images=None,
        scan=None,
        sequence=None,
        labels=None,
        explain: bool | str = False,
        explain_hide: str = "view",
        facing: str = "auto",
    ) -> Prediction:
        """Score one sample given as `images` (list front/left/right or dict view -> image, None for missing;
        paths, PIL images or arrays), a `scan` (path or Scan) or a `sequence` (folder, zip or list of frames).
        `explain`: True (the top label) or a label: also compute `relevance`, where that label came from, hiding
        one view's window at a time or, for a scan, the part of the face under it in every view (`explain_hide`:
        "view" or "surface", `affectvlm.explain.HIDE`). `facing`: for a scan or a sequence, which way the face
        looks: "auto" (found from the face), or the file axis it looks along, for a scan drawn from the wrong side
        (a statue's bust: see the normalised `Prediction.scan`): "+z", "-z", "+x", "-x", "+y", "-y", or with the
        axis up too, "-y,+z" (`affectvlm.scan.normalize.facing_turn`).

        Every input that cannot be used raises `InputError` (a ValueError) naming the problem."""
        if sum(x is not None for x in (images, scan, sequence)) != 1:
            raise InputError("give exactly one of images=, scan= or sequence=")
        if images is not None and facing != "auto":
            raise InputError("facing says which way a scan's face looks: images are already drawn from the front")
        names, class_embeds = self.class_embeddings(labels)
        try:
            inputs, views, normalized, notes, pooled, drawn = self._inputs(images, scan, sequence, facing)
        except InputError:
            raise
        except ValueError as err:  # the processor's checks on given images
            raise InputError(str(err)) from None
        device = self.model.device
        scores = self.model.score(
            inputs["pixel_values"].to(device),
            class_embeds.to(device),
            view_mask=inputs["view_mask"].to(device),
        )
        other_views = other = None  # a scan or a sequence: the companion's reading too
        if self.companion is not None and drawn is not None:
            other_views = self.companion.views(drawn, sequence is not None)
            other = self.companion.scores(names, labels, other_views[None])
            read = Pooled.of(scores, other, self.companion.weight)
        else:
            read = Pooled.alone(scores)
        probs = read.probs
        action_units = self.action_units(scores.embeds, None if other is None else other.embeds)
        if self.is_random:
            notes.insert(0, "RANDOM untrained model: the scores mean nothing")
        if probs.max() < LOW_CONFIDENCE / len(probs):
            notes.append(f"low confidence: no label stands out (the top score is {probs.max():.2f})")
        if labels is not None:  # labels the model cannot place: their scores mean little (check_labels)
            notes.extend(c.note for c in self.check_labels(labels) if not c.understood)
        frame_probs, frame_views, frame_embeds = (
            self.frame_scores(pooled[0], class_embeds, facing, names, labels) if pooled else (None, None, None)
        )
        familiar, distance = self._judged(scores.embeds if scan is not None else frame_embeds)
        notes.extend(self._unfamiliar(familiar, distance))
        relevance = None
        if explain:
            from .explain import explain_prepared

            relevance = explain_prepared(
                self, torch.as_tensor(views), names, class_embeds, scan=normalized,
                label=explain if isinstance(explain, str) else names[int(probs.argmax())],
                view_mask=inputs["view_mask"][0], hide=explain_hide, labels=labels, companion_views=other_views,
            )  # fmt: skip
        return Prediction(
            labels=names,
            probs=probs,
            view_names=list(self.processor.view_names),
            view_contributions=read.view_contributions,
            view_probs=read.view_probs,
            view_mask=inputs["view_mask"][0].cpu().numpy(),
            views=views,
            notes=notes,
            scan=normalized,
            action_units=action_units[0] if action_units else None,
            relevance=relevance,
            frame_probs=frame_probs,
            frames=frame_views,
            frame_numbers=pooled[1] if pooled else None,
            familiarity=familiar,
            face_distance=distance,
        )

    def action_units(
        self, embeds: torch.Tensor, companion_embeds: torch.Tensor | None = None
    ) -> list[dict[str, float]] | None:
        """(B, D) fused embeddings -> per sample, AU name -> probability active (None: the model does not
        read action units). With the companion's (B, D) embeddings of the same samples, each AU's log-odds are
        pooled with the companion's (`affectvlm.companion.pool_odds`), where it reads the same AUs."""
        from .companion import pool_odds
        from .prompts import au_label

        described = self._au_embeddings()
        if described is None:
            return None
        numbers, au_embeds = described
        probs = self.model.action_unit_probs(embeds, au_embeds).cpu().numpy()
        other = None if companion_embeds is None or self.companion is None else self.companion.predictor
        if other is not None and (theirs := other._au_embeddings()) is not None and theirs[0] == numbers:
            own = other.model.action_unit_probs(companion_embeds.to(other.model.device), theirs[1]).cpu().numpy()
            probs = pool_odds(probs, own, self.companion.weight)
        names = [au_label(n) for n in numbers]
        return [{name: float(p) for name, p in zip(names, row)} for row in probs]

    def _au_embeddings(self) -> tuple[list[int], torch.Tensor] | None:
        """The AUs the model reads and their descriptions' embeddings (cached); None for a model without them."""
        from .prompts import au_prompts

        bias = self.model.config.au_logit_bias
        if not bias:
            return None
        numbers = [int(n) for n in bias]
        key = ("__action_units__", tuple(numbers))
        if key not in self._cache:
            self._cache[key] = self.model.encode_prompts(au_prompts(numbers), tokenizer=self.processor.tokenizer)
        return numbers, self._cache[key]

    def warm_up(self) -> None:
        """Encode now what every request is scored against (the default labels' prompts, the AU descriptions, the
        label check's references and its never-trained and unrelated words), so that the first request does not
        wait for the text encoder (seconds for a large one on a CPU)."""
        self.class_embeddings()
        self._au_embeddings()
        self.check_labels()
        if self.companion is not None:  # it scores every scan against the same labels
            self.companion.predictor.class_embeddings()


def shipped_models() -> list[str]:
    """Names of the checkpoints shipped in `checkpoints/` (the default first)."""
    names = sorted(p.parent.name for p in CHECKPOINTS.glob("*/config.json"))
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)


def predict(images=None, scan=None, sequence=None, labels=None, model: str | None = None) -> Prediction:
    """One-call prediction with a predictor loaded once per model and reused."""
    key = str(model)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = AffectVLMPredictor.from_pretrained(model)
    return _PREDICTORS[key](images=images, scan=scan, sequence=sequence, labels=labels)


_PREDICTORS: dict[str, AffectVLMPredictor] = {}

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_MODEL",
    "DEMO_CHECKPOINT",
    "IMAGE_EXTENSIONS",
    "AffectVLMPredictor",
    "InputError",
    "InputLimits",
    "LabelCheck",
    "Prediction",
    "parse_labels",
    "predict",
    "shipped_models",
]
