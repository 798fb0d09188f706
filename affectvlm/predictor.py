"""High-level prediction: views, a 3D scan or a 4D sequence in; scores for any labels out.

    predictor = AffectVLMPredictor.from_pretrained()          # the demo checkpoint shipped with the repo
    result = predictor(scan="face.obj")                        # or images=[front, left, right], sequence=...
    print(result.table())
    predictor(images=[front, left, right], labels=["happy", "a person in pain"])

Labels default to the model's own; any list of labels (or a dict label -> prompts) can be given, and the
class text embeddings are computed once per label set and cached.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .modeling_affectvlm import AffectVLMModel
from .processing_affectvlm import AffectVLMProcessor

# Where the demo checkpoint lives in a checkout (and in the Space folder built from it).
DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "affectvlm-synth-cpu"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class InputError(ValueError):
    """An input the predictor cannot use; the message names the problem (and is safe to show a user)."""


@dataclass(frozen=True)
class InputLimits:
    """Caps on what one request may contain, checked before anything large is read or allocated."""

    max_file_bytes: int = 100 * 1024**2
    max_vertices: int = 2_000_000
    max_faces: int = 4_000_000
    max_frames: int = 300
    max_zip_bytes: int = 1024**3  # uncompressed total
    max_zip_entries: int = 2_000
    max_image_pixels: int = 4096 * 4096


@dataclass
class Prediction:
    """Scores for one sample.

    labels: the C label names. probs: (C,) probabilities. view_names: the V view names.
    view_contributions: (V, C) each view's additive share of the class logits.
    view_probs: (V, C) probabilities from each view alone (zero rows for missing views).
    view_mask: (V,) which views were available. views: (V, H, W, 3) uint8 views the model saw (rendered views
    or dynamic images for scans and sequences; the given images otherwise; black where missing).
    """

    labels: list[str]
    probs: np.ndarray
    view_names: list[str]
    view_contributions: np.ndarray
    view_probs: np.ndarray
    view_mask: np.ndarray
    views: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probs))]

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

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "scores": self.scores(),
            "view_contributions": self.contributions(),
            "views_available": [v for v, ok in zip(self.view_names, self.view_mask) if ok],
            "notes": list(self.notes),
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
                f"{self.view_contributions[v, c]:>10.3f}" for v in range(len(self.view_names)) if self.view_mask[v]
            )
            rows.append(f"{label:<{width}}{prob:>8.3f}{cells}")
        return "\n".join(rows)


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def random_demo_model(seed: int = 0) -> tuple[AffectVLMModel, AffectVLMProcessor]:
    """A small random model with the offline tokenizer, for when no trained checkpoint is available."""
    from .testing import tiny_clip_config, tiny_config, tiny_processor

    torch.manual_seed(seed)
    clip = tiny_clip_config(hidden_size=64, num_layers=2, num_heads=4, image_size=64, patch_size=16, projection_dim=64)
    model = AffectVLMModel(tiny_config(clip_config=clip)).eval()
    return model, tiny_processor(image_size=64)


class AffectVLMPredictor:
    """Scores views, scans or sequences against labels with an AffectVLM model.

    Build with `from_pretrained(path_or_hub_id)`; with no argument the demo checkpoint shipped in
    `checkpoints/affectvlm-synth-cpu` is used, or, if it is missing, a small random model (then
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

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | os.PathLike | None = None, *, device: str | None = None, **kwargs
    ) -> AffectVLMPredictor:
        """Load a saved AffectVLM model and processor (a folder or a Hub id); None: the shipped demo model."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if path_or_hub_id is None and not (DEMO_CHECKPOINT / "config.json").is_file():
            warnings.warn(
                f"no demo checkpoint in {DEMO_CHECKPOINT}: using a small RANDOM model; its scores mean nothing",
                stacklevel=2,
            )
            model, processor = random_demo_model()
            return cls(model.to(device), processor, source="random (untrained)", is_random=True, **kwargs)
        source = str(path_or_hub_id or DEMO_CHECKPOINT)
        model = AffectVLMModel.from_pretrained(source).to(device)
        processor = AffectVLMProcessor.from_pretrained(source)
        return cls(model, processor, source=source, **kwargs)

    # -- labels ---------------------------------------------------------------------------------------------

    @property
    def default_labels(self) -> list[str]:
        return list(self.model.config.label_names)

    def _prompts(self, labels) -> dict[str, list[str]]:
        from .prompts import inference_prompts

        if labels is None:
            labels = self.default_labels
        if isinstance(labels, str):
            labels = [s for s in re.split(r"[,\n]", labels)]
        if isinstance(labels, Mapping):
            prompts = {}
            for label, value in labels.items():
                items = [value] if isinstance(value, str) else list(value or [])
                items = [p.strip() for p in items if isinstance(p, str) and p.strip()]
                prompts[str(label).strip()] = items or inference_prompts([str(label).strip()])[str(label).strip()]
        else:
            names = [str(x).strip() for x in labels if str(x).strip()]
            prompts = inference_prompts(names) if names else {}
        if "" in prompts:
            del prompts[""]
        if len(prompts) < 2:
            raise InputError("give at least two distinct, non-empty labels to score against")
        return prompts

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

    # -- inputs -> views ------------------------------------------------------------------------------------

    def _render_kwargs(self) -> tuple[dict, dict, int | None]:
        """(normalize_scan kwargs, render_views kwargs, frames per dynamic image) from the processor's
        `render_settings` (the render cache's settings the model was trained on: views, size, mode,
        crop_radius, align, frames), defaulting to the scan pipeline's own defaults."""
        settings = dict(self.processor.render_settings or {})
        normalize = {k: settings[k] for k in ("crop_radius", "align") if k in settings}
        render = {k: settings[k] for k in ("views", "size", "mode") if k in settings and settings[k] is not None}
        render.setdefault("size", max(self.processor.image_size))
        return normalize, render, settings.get("frames", 16)

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

    def load_scan(self, scan, normalize: bool = True):
        """A path or a Scan -> a Scan, normalised unless `normalize=False` (reader errors become InputError)."""
        from .scan import Scan, ScanError, load_scan, normalize_scan

        normalize_kwargs, _, _ = self._render_kwargs()
        try:
            if not isinstance(scan, Scan):
                path = Path(scan)
                self._check_file(path)
                scan = load_scan(
                    path,
                    max_vertices=self.limits.max_vertices,
                    max_faces=self.limits.max_faces,
                    max_file_bytes=self.limits.max_file_bytes,
                )
            return normalize_scan(scan, **normalize_kwargs) if normalize else scan
        except ScanError as err:
            raise InputError(str(err)) from err

    def render_scan(self, scan) -> np.ndarray:
        """A path or a Scan -> (V, H, W, 3) uint8 views, rendered as the model's training data was."""
        from .scan import render_views

        _, render, _ = self._render_kwargs()
        return render_views([self.load_scan(scan)], **render)[0]

    def _sequence_paths(self, sequence, workdir: Path) -> list:
        """Frames from a folder, a zip file or a list of paths/Scans, in natural order."""
        from .scan import SUPPORTED_EXTENSIONS

        exts = tuple(SUPPORTED_EXTENSIONS)
        if isinstance(sequence, str | os.PathLike):
            path = Path(sequence)
            if path.is_dir():
                frames = sorted(
                    (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in exts),
                    key=lambda p: _natural_key(p.name),
                )
            elif path.suffix.lower() == ".zip":
                self._check_file(path)
                frames = self._unzip_frames(path, workdir, exts)
            else:
                raise InputError(f"{path.name}: a sequence is a folder, a .zip file or a list of frame files")
        elif isinstance(sequence, Sequence):
            frames = list(sequence)
        else:
            raise InputError("a sequence is a folder, a .zip file or a list of frame files")
        if not frames:
            raise InputError(f"no 3D frames found (expected files ending in {', '.join(exts)})")
        if len(frames) > self.limits.max_frames:
            raise InputError(f"{len(frames)} frames is more than the limit of {self.limits.max_frames}")
        return frames

    def _unzip_frames(self, path: Path, workdir: Path, exts: tuple[str, ...]) -> list[Path]:
        """Extract the frames (and their textures) of a zip safely: names flattened, sizes capped first."""
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise InputError(f"{path.name}: not a valid zip file") from err
        with archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > self.limits.max_zip_entries:
                raise InputError(f"{path.name}: {len(infos)} files is more than the limit of {self.limits.max_zip_entries}")
            total = sum(i.file_size for i in infos)
            if total > self.limits.max_zip_bytes:
                raise InputError(f"{path.name}: {total / 1024**2:.0f} MB uncompressed is more than the limit")
            keep = [
                i for i in infos
                if Path(i.filename).suffix.lower() in exts + IMAGE_EXTENSIONS + (".mtl",)
                and not Path(i.filename).name.startswith(".")
                and "__MACOSX" not in i.filename
            ]
            names = [Path(i.filename).name for i in keep]
            if len(set(names)) != len(names):
                raise InputError(f"{path.name}: two files share a name in different folders; put one sequence per zip")
            frames = []
            for info, name in zip(keep, names):
                # Only the base name is used: no path from the archive reaches the file system.
                target = workdir / name
                with archive.open(info) as src, open(target, "wb") as dst:
                    dst.write(src.read(info.file_size + 1)[: info.file_size])
                if target.suffix.lower() in exts:
                    frames.append(target)
        frames.sort(key=lambda p: _natural_key(p.name))
        return frames

    def render_sequence(self, sequence) -> np.ndarray:
        """A folder, zip, or list of frames -> (V, H, W, 3) uint8 dynamic images (approximate rank pooling)."""
        from .scan import render_sequence

        normalize, render, num_frames = self._render_kwargs()
        with tempfile.TemporaryDirectory(prefix="affectvlm-seq-") as tmp:
            frames = self._sequence_paths(sequence, Path(tmp))
            if num_frames and len(frames) > num_frames:
                # Evenly spaced frames, as the render cache did for the training data.
                frames = [frames[i] for i in np.round(np.linspace(0, len(frames) - 1, num_frames)).astype(int)]
            scans = [self.load_scan(frame, normalize=False) for frame in frames]
        try:
            # One nose tip and scale for the whole sequence, so the head motion is kept for rank pooling.
            return render_sequence(scans, normalize=normalize or True, **render)
        except ValueError as err:  # ScanError included
            raise InputError(str(err)) from err

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
                    return im.convert("RGB")
            except (UnidentifiedImageError, OSError) as err:
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

    def __call__(self, images=None, scan=None, sequence=None, labels=None) -> Prediction:
        """Score one sample given as `images` (list front/left/right or dict view -> image, None for missing;
        paths, PIL images or arrays), a `scan` (path or Scan) or a `sequence` (folder, zip or list of frames)."""
        given = [x is not None for x in (images, scan, sequence)]
        if sum(given) != 1:
            raise InputError("give exactly one of images=, scan= or sequence=")
        names, class_embeds = self.class_embeddings(labels)
        notes = ["RANDOM untrained model: the scores mean nothing"] if self.is_random else []
        view_names = list(self.processor.view_names)
        if images is not None:
            if isinstance(images, Mapping):
                unknown = [k for k in images if k not in view_names]
                if unknown:
                    raise InputError(f"unknown view name(s) {unknown}; expected {view_names}")
                images = [images.get(v) for v in view_names]
            images = [self._load_image(im, v) for im, v in zip(list(images), view_names)]
            if len(images) != len(view_names):
                raise InputError(f"give {len(view_names)} views ({', '.join(view_names)}); use None for a missing one")
            missing = [v for v, im in zip(view_names, images) if im is None]
            if missing:
                notes.append(f"missing view(s): {', '.join(missing)}; scored on the others")
            try:
                inputs = self.processor(images=[images])
            except ValueError as err:
                raise InputError(str(err)) from err
            views = self._thumbnails(images)
        else:
            views = self.render_scan(scan) if scan is not None else self.render_sequence(sequence)
            inputs = self.processor(images=views[None])
        device = self.model.device
        scores = self.model.score(
            inputs["pixel_values"].to(device), class_embeds.to(device), view_mask=inputs["view_mask"].to(device)
        )
        return Prediction(
            labels=names,
            probs=scores.probs[0].float().cpu().numpy(),
            view_names=view_names,
            view_contributions=scores.view_contributions[0].float().cpu().numpy(),
            view_probs=scores.view_probs[0].float().cpu().numpy(),
            view_mask=inputs["view_mask"][0].cpu().numpy(),
            views=views,
            notes=notes,
        )


def predict(images=None, scan=None, sequence=None, labels=None, model: str | None = None) -> Prediction:
    """One-call prediction with a predictor loaded once per model and reused."""
    key = str(model)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = AffectVLMPredictor.from_pretrained(model)
    return _PREDICTORS[key](images=images, scan=scan, sequence=sequence, labels=labels)


_PREDICTORS: dict[str, AffectVLMPredictor] = {}

__all__ = ["DEMO_CHECKPOINT", "AffectVLMPredictor", "InputError", "InputLimits", "Prediction", "predict"]
