"""AffectVLMProcessor: turns the views of each sample (and prompts) into model inputs.

Images go through CLIP's PIL/numpy image processor (no torchvision needed); prompts through CLIP's tokenizer.
This file is copied next to the weights as Hub remote code: it imports only torch, numpy (a transformers
dependency) and transformers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, ProcessorMixin

from .configuration_affectvlm import DEFAULT_VIEW_NAMES


def _is_image(x) -> bool:
    """One image: a PIL image, an (H, W), (H, W, 3|4) array or a (3, H, W) tensor."""
    if hasattr(x, "getbands") and hasattr(x, "size"):  # PIL.Image without importing PIL here
        return True
    if isinstance(x, np.ndarray | torch.Tensor):
        return x.ndim == 2 or (x.ndim == 3 and (x.shape[-1] in (1, 3, 4) or x.shape[0] in (1, 3)))
    return False


# EXIF orientation -> what puts the pixels upright (PIL's `ImageOps.exif_transpose`, on the array)
_EXIF_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _pil_pixels(image, where: str) -> np.ndarray:
    """A PIL image's pixels for `_to_rgb_array`: 16- and 32-bit modes as they are (scaled there), images with
    transparency as RGBA, anything else as RGB."""
    try:
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            return np.asarray(image)
        if "A" in image.getbands() or "transparency" in image.info:
            return np.asarray(image.convert("RGBA"))
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as err:
        raise ValueError(f"{where}: image mode {image.mode!r} cannot be read as RGB") from err


def _upright(array: np.ndarray, image) -> np.ndarray:
    """`array` (the image's pixels) turned as the image's EXIF orientation says a viewer shows it."""
    try:
        orientation = int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a corrupt EXIF block: show the pixels as stored
        orientation = 1
    turn = _EXIF_UPRIGHT.get(orientation)
    return np.ascontiguousarray(turn(array)) if turn else array


class AffectVLMProcessor(ProcessorMixin):
    r"""Processor for [`AffectVLMModel`]: a CLIP image processor and a CLIP tokenizer.

    `processor(images=..., text=...)` returns a `BatchFeature` with `pixel_values` (B, V, 3, H, W), `view_mask`
    (B, V) and, for text, `input_ids` / `attention_mask`.

    `images` may be:
    - one sample: a list of V images (in `view_names` order; `None` for a missing view) or a dict
      view name -> image;
    - a batch: a list of such samples;
    - an array or tensor (B, V, H, W, 3) of uint8 views (what `affectvlm.render_views` returns); this takes
      a fast tensor path (resize + normalise in torch).
    An image is a PIL image or an (H, W[, C]) array; grey and RGBA images are converted to RGB.

    Args:
        image_processor: a `CLIPImageProcessorPil`.
        tokenizer: a CLIP tokenizer.
        view_names: the view order of the model (default frontal, left, right).
        render_settings: how scans were turned into views for the training data: the render cache's settings
            (`affectvlm.data.cache.RenderSettings.to_dict()`: views, size, mode, crop_radius, align, frames).
            Saved with the processor so a scan given at inference is rendered the way the training data was.
            `None`: the scan pipeline's defaults.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        view_names: list[str] | None = None,
        render_settings: dict | None = None,
        **kwargs,
    ):
        self.view_names = list(view_names) if view_names else list(DEFAULT_VIEW_NAMES)
        self.render_settings = dict(render_settings) if render_settings else None
        super().__init__(image_processor, tokenizer, **kwargs)

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_clip(
        cls, clip_name_or_path: str, view_names: list[str] | None = None, render_settings: dict | None = None
    ) -> AffectVLMProcessor:
        """Build from a CLIP checkpoint's image-processor settings and tokenizer (Hub id or folder)."""
        from transformers import AutoTokenizer
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        image_processor = CLIPImageProcessorPil.from_pretrained(clip_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(clip_name_or_path)
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            view_names=view_names,
            render_settings=render_settings,
        )

    # -- images -------------------------------------------------------------------------------------------

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the processed views."""
        ip = self.image_processor
        if getattr(ip, "do_center_crop", False) and ip.crop_size:
            return int(ip.crop_size["height"]), int(ip.crop_size["width"])
        size = ip.size or {}
        if "height" in size:
            return int(size["height"]), int(size["width"])
        edge = int(size.get("shortest_edge", 224))
        return edge, edge

    def _samples(self, images) -> list[list]:
        """Normalise the accepted `images` forms to a list of samples, each a list of V images or None."""
        one_sample = isinstance(images, Mapping) or (
            isinstance(images, Sequence)
            and not isinstance(images, str)
            and len(images) > 0
            and all(x is None or _is_image(x) or isinstance(x, str) for x in images)
        )
        if one_sample:
            images = [images]
        if not isinstance(images, Sequence) or isinstance(images, str) or len(images) == 0:
            raise ValueError("images must be a non-empty list of samples (each a list or dict of views)")
        samples = []
        for i, sample in enumerate(images):
            if isinstance(sample, Mapping):
                unknown = [k for k in sample if k not in self.view_names]
                if unknown:
                    raise ValueError(f"sample {i}: unknown view name(s) {unknown}; expected {self.view_names}")
                sample = [sample.get(name) for name in self.view_names]
            elif not isinstance(sample, Sequence) or isinstance(sample, str):
                raise ValueError(f"sample {i}: expected a list or dict of views, got {type(sample).__name__}")
            sample = list(sample)
            if len(sample) != len(self.view_names):
                raise ValueError(
                    f"sample {i}: got {len(sample)} views, expected {len(self.view_names)} ({', '.join(self.view_names)})"
                )
            for name, image in zip(self.view_names, sample):
                if image is not None and not _is_image(image):
                    raise ValueError(f"sample {i}, view {name!r}: not an image ({type(image).__name__})")
            if all(image is None for image in sample):
                raise ValueError(f"sample {i}: every view is missing")
            samples.append(sample)
        return samples

    @staticmethod
    def _to_rgb_array(image, where: str) -> np.ndarray:
        """Any accepted image -> (H, W, 3) uint8 as the model's views are drawn, with a clear error for empty or
        odd images: a PIL image turned upright by its EXIF orientation; 16-bit images (PIL modes I;16, I, F, or
        uint16 arrays) scaled to 8 bits, not saturated; transparency laid over black, the background of every
        rendered view (an RGBA or grey-alpha image, or a (H, W, 4) / (H, W, 2) array)."""
        if hasattr(image, "getbands"):
            if image.size[0] == 0 or image.size[1] == 0:
                raise ValueError(f"{where}: empty image ({image.size[0]}x{image.size[1]})")
            return _upright(AffectVLMProcessor._to_rgb_array(_pil_pixels(image, where), where), image)
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[-1] not in (1, 2, 3, 4):
            array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
        if array.ndim == 2:
            array = array[..., None]
        if array.size == 0:
            raise ValueError(f"{where}: empty image (shape {array.shape})")
        if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
            raise ValueError(f"{where}: an image is (H, W), (H, W, C) or (C, H, W) with 1-4 channels")
        if array.dtype != np.uint8:
            if array.dtype.kind not in "biuf":
                raise ValueError(f"{where}: image values must be numbers, got {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError(f"{where}: image has NaN or Inf values")
            top = float(array.max())
            # floats in [0, 1]; 16-bit images (uint16, or PIL's 32-bit modes holding 16-bit values) to 8 bits
            scale = (
                255.0
                if top <= 1.0
                else 255.0 / 65535.0
                if 255 < top <= 65535 or array.dtype == np.uint16
                else 1.0
            )
            array = np.clip(array.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
        if array.shape[-1] in (2, 4):  # over black: the background of a rendered view
            alpha = array[..., -1:].astype(np.float32) / 255.0
            array = (array[..., :-1].astype(np.float32) * alpha).round().astype(np.uint8)
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
        return np.ascontiguousarray(array[..., :3])

    def normalize_views(self, views: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Fast tensor path: uint8 views (B, V, H, W, 3) or (B, V, 3, H, W) -> float (B, V, 3, h, w).

        Resizes (bicubic, antialiased) to the processor's size when needed and normalises with its mean and
        std; runs on whatever device the tensor is on, so a training loop can call it on the GPU.
        """
        views = torch.as_tensor(views)
        if views.dim() != 5:
            raise ValueError(f"views must be (B, V, H, W, 3) or (B, V, 3, H, W); got {tuple(views.shape)}")
        if views.shape[-1] == 3 and views.shape[2] != 3:
            views = views.permute(0, 1, 4, 2, 3)
        batch, nviews = views.shape[:2]
        x = views.reshape(batch * nviews, *views.shape[2:]).float()  # (B*V, 3, H, W)
        if views.dtype == torch.uint8:
            x = x / 255.0
        height, width = self.image_size
        if x.shape[-2:] != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
        mean = torch.tensor(self.image_processor.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_processor.image_std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).reshape(batch, nviews, 3, height, width)

    def process_images(self, images) -> dict[str, torch.Tensor]:
        if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 5:
            pixel_values = self.normalize_views(images)
            return {"pixel_values": pixel_values, "view_mask": torch.ones(pixel_values.shape[:2], dtype=torch.bool)}
        samples = self._samples(images)
        flat, slots = [], []
        for i, sample in enumerate(samples):
            for v, image in enumerate(sample):
                if image is not None:
                    flat.append(self._to_rgb_array(image, f"sample {i}, view {self.view_names[v]!r}"))
                    slots.append((i, v))
        processed = self.image_processor(flat, return_tensors="pt")["pixel_values"]  # (N, 3, H, W)
        pixel_values = processed.new_zeros(len(samples), len(self.view_names), *processed.shape[1:])
        view_mask = torch.zeros(len(samples), len(self.view_names), dtype=torch.bool)
        index = torch.tensor(slots)
        pixel_values[index[:, 0], index[:, 1]] = processed
        view_mask[index[:, 0], index[:, 1]] = True
        return {"pixel_values": pixel_values, "view_mask": view_mask}

    # -- both ---------------------------------------------------------------------------------------------

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = 77,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        if images is None and text is None:
            raise ValueError("give images, text, or both")
        data: dict = {}
        if images is not None:
            data.update(self.process_images(images))
        if text is not None:
            if isinstance(text, str):
                text = [text]
            if not text or not all(isinstance(t, str) for t in text):
                raise ValueError("text must be a string or a non-empty list of strings")
            tokens = self.tokenizer(
                list(text),
                padding=padding,
                truncation=truncation,
                max_length=max_length,
                return_tensors=return_tensors,
                **kwargs,
            )
            data.update(tokens)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["AffectVLMProcessor"]

AffectVLMProcessor.register_for_auto_class("AutoProcessor")
