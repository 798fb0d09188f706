"""4D sequences: approximate rank pooling (dynamic images, Bilen et al., CVPR 2016) of rendered views.

The reference coefficients for frames t = 1..T are
    alpha_t = 2 (T - t + 1) - (T + 1) (H_T - H_{t-1}),  H_t = sum_{i <= t} 1 / i,  H_0 = 0,
which sum to zero; T = 1 gives the weight 1. (A popular Python port uses (2t - T) / t, which is a
different, non-reference formula.) The dynamic image is sum_t alpha_t frame_t on the raw frames,
min-max rescaled to 0-255 for display or for a network that expects images. A pixel that misses the surface for
a frame or so (a scanner's hole that comes and goes) is pooled as the surface on either side of the gap
(`_ShortGaps`).
"""

from __future__ import annotations

import numpy as np
import torch

from .normalize import normalize_sequence
from .render import render_views
from .types import Scan

__all__ = ["rank_pool_weights", "rank_pool", "to_uint8", "render_sequence"]


def rank_pool_weights(num_frames: int) -> np.ndarray:
    """(T,) float64 approximate rank pooling coefficients alpha_1..alpha_T (reference formula)."""
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames}")
    if num_frames == 1:  # the formula gives 0; a single frame is its own dynamic image
        return np.ones(1)
    t = np.arange(1, int(num_frames) + 1, dtype=np.float64)
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / t)])  # H_0 .. H_T
    return 2.0 * (num_frames - t + 1) - (num_frames + 1) * (harmonic[-1] - harmonic[:-1])


def rank_pool(frames):
    """The raw dynamic image sum_t alpha_t frames[t].

    Args:
        frames: (T, ...) numpy array or torch tensor (any dtype; integers are pooled in float).

    Returns:
        (...) float64 numpy array, or a float32 tensor on the input's device for tensor input.
    """
    if isinstance(frames, torch.Tensor):
        x = frames if frames.is_floating_point() else frames.float()
        w = torch.as_tensor(rank_pool_weights(x.shape[0]), dtype=x.dtype, device=x.device)
        return torch.tensordot(w, x, dims=1)
    x = np.asarray(frames)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError("frames must have a leading time axis with at least one frame")
    return np.tensordot(rank_pool_weights(x.shape[0]), x.astype(np.float64, copy=False), axes=1)


def to_uint8(image, axis=None) -> np.ndarray:
    """Min-max rescale to 0-255 uint8.

    Args:
        image: float array (or tensor).
        axis: axes to take the min and max over (None = the whole array); e.g. (-3, -2, -1) rescales
            each (H, W, C) image of a stack separately. A constant image (up to rounding) maps to 0.
    """
    x = (
        image.detach().cpu().double()
        if isinstance(image, torch.Tensor)
        else np.asarray(image, dtype=np.float64)
    )
    return _rescale(torch.as_tensor(x), axis).numpy()


def _rescale(x: torch.Tensor, axis=None) -> torch.Tensor:
    """`to_uint8` in torch, on the tensor's device: float (any shape) -> uint8."""
    dims = tuple(range(x.dim())) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    # the weights sum to zero only up to rounding: a motionless sequence leaves ~1e-13 noise, which
    # must stay black instead of being stretched to full contrast
    tol = 1e-9 * max(1.0, float(x.abs().max())) if x.numel() else 1.0
    varies = (hi - lo) > tol
    scale = torch.where(
        varies, 255.0 / torch.where(varies, hi - lo, torch.ones_like(hi)), torch.zeros_like(hi)
    )
    return torch.round((x - lo) * scale).clamp_(0, 255).to(torch.uint8)


def render_sequence(
    scans: list[Scan],
    views=None,
    size: int = 224,
    mode: str = "normal",
    *,
    normalize: bool | dict = True,
    chunk: int = 16,
    as_tensor: bool = False,
    **render_kwargs,
):
    """Dynamic images of a 4D sequence, one per view.

    Args:
        scans: the T frames in time order (a single frame is allowed: its dynamic image is the
            rescaled frame).
        views, size, mode, render_kwargs: as in `render_views`.
        normalize: True to put every frame in the first frame's frame (`normalize_sequence`: one
            nose tip and one scale for the whole sequence, so the head's motion is kept); a dict
            of `normalize_scan` arguments does the same with them; False renders the scans as given.
        chunk: frames rendered per batch (bounds memory for long sequences).
        as_tensor: return a torch uint8 tensor on the render device instead of a numpy array.

    Returns:
        (V, H, W, 3) uint8: each view's dynamic image, min-max rescaled separately.
    """
    scans = list(scans)
    if not scans:
        raise ValueError("render_sequence needs at least one frame")
    if normalize:
        scans = normalize_sequence(scans, **(normalize if isinstance(normalize, dict) else {}))
    weights = rank_pool_weights(len(scans)).tolist()
    gaps = _ShortGaps(short_gap(len(scans)))
    for start in range(0, len(scans), chunk):
        frames = render_views(
            scans[start : start + chunk], views, size, mode, as_tensor=True, **render_kwargs
        )
        for frame, w in zip(frames, weights[start : start + chunk]):
            gaps.add(frame.double(), w)
    out = _rescale(gaps.pooled(), axis=(1, 2, 3))
    return out if as_tensor else out.cpu().numpy()


def short_gap(num_frames: int) -> int:
    """The longest run of frames (one in eight of them, at least one) in which a pixel may miss the surface and be
    taken for a scanner's passing hole rather than the face's own motion (an opening mouth lasts longer)."""
    return max(1, int(num_frames) // 8)


class _ShortGaps:
    """Rank pooling, frame by frame, with short-lived holes filled. A pixel that misses the surface (background) in
    at most `longest` frames in a row, and shows it before or after, is pooled as if it had shown the surface there:
    the mean of the values on either side (the one side's value at the sequence's ends). A scanner's holes that come
    and go (a specular eye, a shadowed nostril, a different patch in each frame) would otherwise pool as motion, at
    the full weight of a frame. Holes that stay put, the background, and gaps longer than `longest` (a mouth that
    opens) pool as they are."""

    def __init__(self, longest: int):
        self.longest, self.acc = longest, None

    def add(self, frame: torch.Tensor, weight: float) -> None:
        """Pool one (V, H, W, C) float frame with its rank pooling weight."""
        surface = (frame > 0).any(dim=-1)
        if self.acc is None:
            self.acc, self.last = torch.zeros_like(frame), torch.zeros_like(frame)
            self.seen = torch.zeros_like(surface)
            self.gap = torch.zeros_like(surface, dtype=torch.long)  # frames missed in a row, up to this one
            self.gap_weight = torch.zeros_like(surface, dtype=frame.dtype)  # their weights' sum
        self.acc += weight * frame
        closed = surface & (self.gap > 0) & (self.gap <= self.longest)
        fill = torch.where(self.seen[..., None], 0.5 * (self.last + frame), frame)
        self.acc += torch.where(closed, self.gap_weight, 0.0)[..., None] * fill
        self.last = torch.where(surface[..., None], frame, self.last)
        self.seen |= surface
        self.gap = torch.where(surface, 0, self.gap + 1)
        self.gap_weight = torch.where(surface, 0.0, self.gap_weight + weight)

    def pooled(self) -> torch.Tensor:
        """(V, H, W, C) the dynamic image so far, a gap at the end filled with the last value seen."""
        trailing = self.seen & (self.gap > 0) & (self.gap <= self.longest)
        return self.acc + torch.where(trailing, self.gap_weight, 0.0)[..., None] * self.last
