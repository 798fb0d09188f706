"""Mixed-view augmentation: flip, rotation, crop/scale and view dropout, drawn independently per view.

Issue 5, "Mixed-view augmentation". The views of one sample are the same scan rendered from several angles
(default order `frontal, left, right`); giving each view its own rotation and crop, instead of one transform
per sample, is what makes the augmentation "mixed-view".

    augment = MixedViewAugment(MixedViewAugmentConfig(seed=0))
    out = augment(pixel_values, view_mask)          # (B, V, 3, H, W) float or uint8, (B, V) bool
    out.pixel_values, out.view_mask                 # same shapes and dtypes

Flipping is the one transform that cannot be drawn per view: a mirrored left view looks like a right view.
`flip_mode` chooses how to stay consistent:
    "swap" (default, option a): a flipped sample has every view mirrored and the views of each mirror pair
        (`mirror_pairs`, default left <-> right) swapped, i.e. it is the scan of the mirrored face.
    "frontal" (option b): only views outside every mirror pair (the frontal view) are flipped, each
        independently; left and right views are never flipped.
    "none": no flipping.

Default ranges (`MixedViewAugmentConfig`): flip with p = 0.5 per sample; rotation with p = 0.5 per view,
angle uniform in [-10, 10] degrees; random resized crop with p = 0.5 per view, area fraction uniform in
[0.8, 1.0], aspect ratio log-uniform in [0.9, 1.1], position uniform where the crop fits; view dropout off.
The random numbers are drawn on the CPU from a `torch.Generator`, so a seed gives the same augmentation
on CPU and GPU; the pixels are resampled on the input's device with one `F.grid_sample` call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_affectvlm import DEFAULT_VIEW_NAMES

_FLIP_MODES = ("swap", "frontal", "none")
_PADDING_MODES = ("zeros", "border", "reflection")
_INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


@dataclass
class MixedViewAugmentConfig:
    """Every number of the augmentation.

    enabled: False makes the module the identity (so does `module.eval()`).
    view_names: names of the V views, in the order of `pixel_values` (B, V, ...).
    mirror_pairs: pairs of views that are each other's mirror image; views in no pair (frontal) are
        their own mirror image.
    flip_mode: "swap" | "frontal" | "none", see the module docstring.
    flip_p: probability of a flip, per sample ("swap") or per flippable view ("frontal").
    rotation_p: probability that a view is rotated; max_rotation_deg: angle uniform in [-max, max].
    crop_p: probability that a view is cropped and rescaled to its size (a random resized crop).
    crop_scale: (min, max) area of the crop as a fraction of the view; above 1 zooms out, with padding.
    crop_ratio: (min, max) aspect ratio (width / height) of the crop relative to the view, log-uniform.
    view_dropout_p: probability that an available view is dropped (pixels zeroed, view_mask False); at least
        one available view of each sample is always kept.
    padding_mode: what fills pixels sampled outside the view: "zeros" | "border" | "reflection".
    interpolation: "bilinear" | "nearest" | "bicubic".
    normal_channels: for views that draw the surface normal (`affectvlm.scan.render.NORMAL_CHANNELS` of the
        render mode), the channels of its x and y: a flip negates x (v -> 1 - v where the view shows a surface)
        and a rotation turns (x, y) with the pixels, so that an augmented view is a view of the mirrored or
        turned face. None (grey shading): pixels move, values stay.
    grey_p: with `normal_channels` (1, 2), whose first channel is a grey shade (render mode "shade_normal"):
        the probability that a view is shown as that shade alone, in all three channels, as a grey render
        (a user's own three images) would be, so that the model reads those too.
    seed: seed of the module's own generator (give each data-parallel rank its own, e.g. seed + rank).
    """

    enabled: bool = True
    view_names: tuple[str, ...] = tuple(DEFAULT_VIEW_NAMES)
    mirror_pairs: tuple[tuple[str, str], ...] = (("left", "right"),)
    flip_mode: str = "swap"
    flip_p: float = 0.5
    rotation_p: float = 0.5
    max_rotation_deg: float = 10.0
    crop_p: float = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    view_dropout_p: float = 0.0
    padding_mode: str = "zeros"
    interpolation: str = "bilinear"
    normal_channels: tuple[int, int] | None = None
    grey_p: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.view_names = tuple(self.view_names)
        if not self.view_names or len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view_names must be non-empty and unique; got {self.view_names}")
        self.mirror_pairs = tuple(tuple(pair) for pair in self.mirror_pairs)
        paired = [name for pair in self.mirror_pairs for name in pair]
        if any(len(pair) != 2 for pair in self.mirror_pairs) or len(set(paired)) != len(paired):
            raise ValueError(
                f"mirror_pairs must be disjoint pairs of two distinct views; got {self.mirror_pairs}"
            )
        if not set(paired) <= set(self.view_names):
            raise ValueError(
                f"mirror_pairs {self.mirror_pairs} name views outside view_names {self.view_names}"
            )
        if self.flip_mode not in _FLIP_MODES:
            raise ValueError(f"flip_mode must be one of {_FLIP_MODES}; got {self.flip_mode!r}")
        if self.grey_p and sorted(self.normal_channels or ()) != [1, 2]:
            raise ValueError("grey_p needs views with a grey shade in channel 0 and the normal in 1, 2")
        for name in ("flip_p", "rotation_p", "crop_p", "view_dropout_p", "grey_p"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise ValueError(f"max_rotation_deg must be in [0, 180]; got {self.max_rotation_deg}")
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        self.crop_ratio = tuple(float(v) for v in self.crop_ratio)
        if len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 4.0:
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 4; got {self.crop_scale}")
        if len(self.crop_ratio) != 2 or not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (min, max) with 0 < min <= max; got {self.crop_ratio}")
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}; got {self.padding_mode!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}; got {self.interpolation!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int; got {self.seed!r}")
        if self.normal_channels is not None:
            self.normal_channels = tuple(self.normal_channels)
            if sorted(self.normal_channels) not in ([0, 1], [0, 2], [1, 2]):
                raise ValueError(f"normal_channels must be two channels of 0-2; got {self.normal_channels}")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> MixedViewAugmentConfig:
        """Build from a plain dict; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown MixedViewAugmentConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that `from_dict` turns back into an equal config."""
        out = asdict(self)
        out["view_names"] = list(self.view_names)
        out["mirror_pairs"] = [list(pair) for pair in self.mirror_pairs]
        out["crop_scale"] = list(self.crop_scale)
        out["crop_ratio"] = list(self.crop_ratio)
        out["normal_channels"] = None if self.normal_channels is None else list(self.normal_channels)
        return out


@dataclass
class MixedViewParams:
    """The random draw of one batch; every tensor is on the CPU.

    source_view: (B, V) long, the input view each output slot takes (a swap exchanges left and right).
    flip: (B, V) bool, mirror the view horizontally.
    angle: (B, V) float, rotation in degrees (0 where not rotated).
    crop_size: (B, V, 2) float, crop (width, height) as fractions of the view (1 where not cropped).
    crop_center: (B, V, 2) float, crop centre (x, y) in [-1, 1] coordinates (0 where not cropped).
    drop: (B, V) bool, views dropped by view dropout.
    grey: (B, V) bool, views shown as their grey shade alone (None: none; `grey_p` 0 draws nothing).
    """

    source_view: torch.Tensor
    flip: torch.Tensor
    angle: torch.Tensor
    crop_size: torch.Tensor
    crop_center: torch.Tensor
    drop: torch.Tensor
    grey: torch.Tensor | None = None

    @property
    def resample(self) -> torch.Tensor:
        """(B, V) bool: views whose pixels go through grid_sample (rotated or cropped)."""
        return (self.angle != 0) | (self.crop_size != 1).any(-1) | (self.crop_center != 0).any(-1)

    def theta(self, height: int, width: int) -> torch.Tensor:
        """(B, V, 2, 3) affine matrices for `F.affine_grid` (output coords -> input coords, in [-1, 1])."""
        rad = torch.deg2rad(self.angle.double())
        cos, sin = torch.cos(rad), torch.sin(rad)
        sw, sh = self.crop_size.double().unbind(-1)
        # Rotate in pixel units, not in [-1, 1] units, so that a non-square view is not sheared.
        row_x = torch.stack([sw * cos, -sw * sin * height / width, self.crop_center[..., 0].double()], -1)
        row_y = torch.stack([sh * sin * width / height, sh * cos, self.crop_center[..., 1].double()], -1)
        return torch.stack([row_x, row_y], -2).float()


class MixedViewAugmentOutput(NamedTuple):
    """pixel_values: (B, V, 3, H, W), same dtype and device as the input; view_mask: (B, V) bool."""

    pixel_values: torch.Tensor
    view_mask: torch.Tensor


class MixedViewAugment(nn.Module):
    """Batched, seeded multiview augmentation; a parameter-free `nn.Module` (identity in `eval()` mode).

    forward(pixel_values (B, V, 3, H, W), view_mask (B, V) | None, generator | None) -> MixedViewAugmentOutput.
    Without `generator` the module's own, seeded from `config.seed`, is used; its state is saved with
    the module's `state_dict()` (extra state) so a resumed run continues the same random stream.
    """

    def __init__(self, config: MixedViewAugmentConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else MixedViewAugmentConfig()
        cfg = self.config
        self.generator = torch.Generator().manual_seed(cfg.seed)
        index = {name: i for i, name in enumerate(cfg.view_names)}
        mirror = list(range(len(cfg.view_names)))
        for a, b in cfg.mirror_pairs:
            mirror[index[a]], mirror[index[b]] = index[b], index[a]
        self._mirror = torch.tensor(mirror)  # (V,) the view that is the mirror image of each view
        self._self_mirrored = self._mirror == torch.arange(len(mirror))  # (V,) flippable in "frontal" mode

    @property
    def is_identity(self) -> bool:
        cfg = self.config
        off = cfg.flip_mode == "none" or cfg.flip_p == 0
        return not (self.training and cfg.enabled) or (
            off and cfg.rotation_p == 0 and cfg.crop_p == 0 and cfg.view_dropout_p == 0 and cfg.grey_p == 0
        )

    def draw_params(
        self,
        batch_size: int,
        view_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MixedViewParams:
        """Draw the transforms of a batch of `batch_size` samples; view_mask (B, V) bool marks the available
        views (dropout keeps at least one of them; a GPU mask is copied to the CPU, a small sync). Always
        draws the same amount of random numbers, so the stream does not depend on the probabilities."""
        cfg = self.config
        B, V = batch_size, len(cfg.view_names)
        gen = generator if generator is not None else self.generator
        u = torch.rand((10, B, V), generator=gen, dtype=torch.float64)
        mask = (
            torch.ones(B, V, dtype=torch.bool)
            if view_mask is None
            else view_mask.detach().to("cpu", torch.bool)
        )

        views = torch.arange(V).expand(B, V)
        if cfg.flip_mode == "swap":
            flip = (u[0, :, :1] < cfg.flip_p).expand(B, V)  # one coin per sample
            source_view = torch.where(flip, self._mirror.expand(B, V), views)
        elif cfg.flip_mode == "frontal":
            flip = (u[0] < cfg.flip_p) & self._self_mirrored
            source_view = views
        else:
            flip = torch.zeros(B, V, dtype=torch.bool)
            source_view = views
        mask = mask.gather(1, source_view)  # availability follows the views into their new slots

        rotate = u[1] < cfg.rotation_p
        angle = torch.where(rotate, (2 * u[2] - 1) * cfg.max_rotation_deg, 0.0)

        crop = u[3] < cfg.crop_p
        lo, hi = cfg.crop_scale
        scale = lo + (hi - lo) * u[4]
        log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * u[5])
        size = torch.stack([torch.sqrt(scale * ratio), torch.sqrt(scale / ratio)], -1)  # (B, V, 2) w, h
        if hi <= 1.0:  # a crop that is meant to stay inside the view: no side longer than the view
            size = size.clamp(max=1.0)
        # Centre anywhere the crop still covers (or, zoomed out, still contains) the view.
        center = (2 * u[6:8].permute(1, 2, 0) - 1) * (1 - size).abs()
        size = torch.where(crop[..., None], size, 1.0)
        center = torch.where(crop[..., None], center, 0.0)

        drop = (u[8] < cfg.view_dropout_p) & mask
        emptied = mask.any(1) & ~(mask & ~drop).any(1)  # (B,) samples that would lose every view
        if emptied.any():
            keep = torch.where(mask, u[9], -1.0).argmax(1)  # a random available view
            rescue = emptied[:, None] & (torch.arange(V) == keep[:, None])
            drop = drop & ~rescue
        # drawn apart, and only when asked for: the stream of every run without it stays as it was
        grey = torch.rand((B, V), generator=gen) < cfg.grey_p if cfg.grey_p > 0 else None
        return MixedViewParams(source_view, flip, angle.float(), size.float(), center.float(), drop, grey)

    def apply(
        self, pixel_values: torch.Tensor, params: MixedViewParams, view_mask: torch.Tensor | None = None
    ) -> MixedViewAugmentOutput:
        """Apply drawn parameters: (B, V, C, H, W) -> (B, V, C, H, W), same dtype and device."""
        B, V, C, H, W = pixel_values.shape
        device = pixel_values.device
        x = pixel_values
        mask = (
            torch.ones(B, V, dtype=torch.bool, device=device)
            if view_mask is None
            else view_mask.to(device, torch.bool)
        )
        views = torch.arange(V).expand(B, V)
        if not torch.equal(params.source_view, views):
            idx = params.source_view.to(device)
            rows = torch.arange(B, device=device)[:, None]
            x, mask = x[rows, idx], mask[rows, idx]  # (B, V, C, H, W) with the mirror pairs swapped
        if params.flip.any():
            # torch.flip, not a negated affine_grid axis: an exact mirror, so uint8 and float stay bit-exact.
            flip = params.flip.to(device)[..., None, None, None]
            x = torch.where(flip, self._mirror_normals(x.flip(-1)), x)

        picked = params.resample.flatten().nonzero().flatten()  # CPU indices: no device sync
        if picked.numel():
            flat = x.reshape(B * V, C, H, W)
            chosen = flat[picked.to(device)]
            # grid_sample needs float; half types are computed in float32 (not all are supported on CPU).
            work = chosen if chosen.dtype in (torch.float32, torch.float64) else chosen.float()
            theta = params.theta(H, W).reshape(B * V, 2, 3)[picked].to(device, work.dtype)
            grid = F.affine_grid(theta, [len(picked), C, H, W], align_corners=False)
            out = F.grid_sample(
                work,
                grid,
                mode=self.config.interpolation,
                padding_mode=self.config.padding_mode,
                align_corners=False,
            )
            top = 1.0 if x.dtype.is_floating_point else float(torch.iinfo(x.dtype).max)
            out = self._turn_normals(out, params.angle.flatten()[picked].to(device), top)
            if not x.dtype.is_floating_point:
                info = torch.iinfo(x.dtype)
                out = out.round().clamp(info.min, info.max)
            flat = flat.index_copy(0, picked.to(device), out.to(x.dtype))
            x = flat.reshape(B, V, C, H, W)

        if params.grey is not None and params.grey.any():
            grey = params.grey.to(device)[..., None, None, None]
            x = torch.where(grey, x[:, :, :1].expand_as(x), x)
        if params.drop.any():
            drop = params.drop.to(device)
            x = x.masked_fill(drop[..., None, None, None], 0)
            mask = mask & ~drop
        return MixedViewAugmentOutput(x, mask)

    def _mirror_normals(self, x: torch.Tensor) -> torch.Tensor:
        """Mirrored views (B, V, C, H, W) of the normal: its x negated where a surface is drawn."""
        if self.config.normal_channels is None:
            return x
        c = self.config.normal_channels[0]
        top = 1.0 if x.dtype.is_floating_point else torch.iinfo(x.dtype).max
        out = x.clone()
        out[:, :, c] = torch.where(x.amax(2) > 0, top - x[:, :, c], x[:, :, c])
        return out

    def _turn_normals(self, x: torch.Tensor, angle: torch.Tensor, top: float) -> torch.Tensor:
        """Resampled float views (N, C, H, W), values up to `top`, turned by `angle` degrees (N,): their
        normals' (x, y) turned with them."""
        if self.config.normal_channels is None:
            return x
        cx, cy = self.config.normal_channels
        rad = torch.deg2rad(angle.to(x.dtype))[:, None, None]
        nx, ny = x[:, cx] * (2 / top) - 1, x[:, cy] * (2 / top) - 1
        tx, ty = torch.cos(rad) * nx - torch.sin(rad) * ny, torch.sin(rad) * nx + torch.cos(rad) * ny
        face = x.amax(1) > 0
        out = x.clone()
        out[:, cx] = torch.where(face, (tx + 1) * (top / 2), x[:, cx])
        out[:, cy] = torch.where(face, (ty + 1) * (top / 2), x[:, cy])
        return out

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MixedViewAugmentOutput:
        """pixel_values: (B, V, C, H, W) float or integer; view_mask: (B, V) bool (None: all available).

        Returns the augmented views and the view mask after swaps and dropout. The input is returned
        unchanged (the very tensor) when the augmentation is disabled, in eval mode, or every probability
        is 0.
        """
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must have shape (B, V, C, H, W); got {tuple(pixel_values.shape)}")
        B, V = pixel_values.shape[:2]
        if V != len(self.config.view_names):
            raise ValueError(
                f"got {V} views but config.view_names has {len(self.config.view_names)}: {self.config.view_names}"
            )
        if view_mask is not None and tuple(view_mask.shape) != (B, V):
            raise ValueError(f"view_mask must have shape {(B, V)}; got {tuple(view_mask.shape)}")
        if self.is_identity:
            mask = (
                torch.ones(B, V, dtype=torch.bool, device=pixel_values.device)
                if view_mask is None
                else view_mask.bool()
            )
            return MixedViewAugmentOutput(pixel_values, mask)
        params = self.draw_params(B, view_mask, generator)
        return self.apply(pixel_values, params, view_mask)

    # The generator state travels in state_dict() (key "_extra_state") for exact resumption.
    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


__all__ = ["MixedViewAugment", "MixedViewAugmentConfig", "MixedViewAugmentOutput", "MixedViewParams"]
