"""`ScanRecipe`: the one owner of scan -> model input.

A scan flows load -> normalise (once) -> render -> processor, and a 4D sequence load -> pick frames over the expression's
span (the onset and a held apex: `pooled_frames`) -> normalise (one transform for the whole sequence) -> render ->
rank pool. A mesh far denser than the pixels it is drawn on is
clustered to a quarter of a pixel before it is drawn (`ScanRecipe.fit_to_pixels`). The render cache that makes the
training data, the predictor, the app and the CLI all go through a recipe, so a scan at inference is turned into
views exactly as the training scans were. A model's recipe is saved with its processor (`render_settings`).

    recipe = ScanRecipe.from_settings(processor.render_settings)
    views = recipe.views([load_scan("face.obj")])                  # (1, V, H, W, 3) uint8 tensor
    dynamic = recipe.dynamic_images([load_scan(p) for p in paths])  # (V, H, W, 3) uint8 tensor
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .clean import cluster_vertices
from .normalize import front_view_is_face, normalize_scan, normalize_sequence
from .register import still_parts, surface_gap
from .render import DEFAULT_EXTENT, DEFAULT_VIEWS, render_views
from .sequence import render_sequence
from .types import InputError, Scan

__all__ = ["SPAN_CANDIDATES", "ScanRecipe", "FaceCheck", "check_face", "pick_frames"]

# A normalised mesh with more triangles than this per pixel of one view is clustered before it is drawn, to cubes of
# this fraction of a pixel: a scanner's face of 2.8 million triangles drawn at 96 px is 300 triangles a pixel, and
# cost 1.7 GB and 8 s to check and draw. Meshes that dense never reach a training cache (at most 100k triangles).
_MAX_FACES_PER_PIXEL = 32
_CLUSTER_PIXELS = 0.25


def pick_frames(num_frames: int, keep: int | None) -> np.ndarray:
    """Indices of `keep` frames evenly spaced over `num_frames` (all of them when `keep` is None or larger)."""
    if keep is None or num_frames <= keep:
        return np.arange(num_frames)
    return np.round(np.linspace(0, num_frames - 1, keep)).astype(int)


def _freeze(x):
    return tuple(_freeze(v) for v in x) if isinstance(x, list | tuple) else x


@dataclass(frozen=True)
class ScanRecipe:
    """How a scan becomes the views a model sees; saved with a model's processor as `render_settings`.

    Attributes:
        views: (yaw, pitch) pairs in degrees, or None for the pipeline's frontal, left and right views.
        size: rendered image side in pixels.
        mode: render mode (``normal``, ``depth``, ``normal_map``, ``shade_normal``, ``texture``).
        crop_radius: `normalize_scan`'s crop about the nose tip, mm (None: no crop).
        align: PCA-align each scan before rendering.
        frames: 4D: frames evenly picked from a sequence for its dynamic image.
        orient: which way the face looks: "auto" (found from the face) or a facing its user gives, the file axis it
            looks along ("-z", or "-y,+z" with the axis up: `affectvlm.scan.normalize.facing_turn`). A scan's
            own, set per request (`AffectVLMPredictor.__call__`'s `facing`), never saved with a model.
    """

    views: tuple | None = None
    size: int = 224
    mode: str = "normal"
    crop_radius: float | None = 90.0
    align: bool = False
    frames: int = 12
    orient: str = "auto"

    def __post_init__(self) -> None:
        if self.size < 8 or self.frames < 1:
            raise ValueError(f"size >= 8 and frames >= 1 required, got {self}")
        if self.views is not None:
            object.__setattr__(self, "views", _freeze(self.views))

    @classmethod
    def from_settings(cls, settings: Mapping | None, **defaults) -> ScanRecipe:
        """A recipe from saved `render_settings` (unknown keys ignored), `defaults` filling what they lack."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in dict(settings or {}).items() if k in names and v is not None}
        return cls(**{**defaults, **given})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ScanRecipe)}

    @property
    def needs_texture(self) -> bool:
        """Whether the views are drawn from the scan's texture image: read it only then (`load_scan`'s
        `load_texture`), so that a large or broken texture beside a mesh costs nothing when only its shape is drawn."""
        return self.mode == "texture"

    def _render_kwargs(self) -> dict:
        views = None if self.views is None else [list(v) if isinstance(v, tuple) else v for v in self.views]
        return {"views": views, "size": self.size, "mode": self.mode}

    def normalize(self, scan: Scan) -> Scan:
        """The scan in the renderer's canonical frame; a scan that is already normalised comes back unchanged."""
        return normalize_scan(scan, crop_radius=self.crop_radius, align=self.align, orient=self.orient)

    def fit_to_pixels(self, scan: Scan) -> Scan:
        """A normalised mesh of more than `_MAX_FACES_PER_PIXEL` triangles per pixel of a view, clustered to cubes of
        `_CLUSTER_PIXELS` of a pixel's side (it draws the same: every pixel still averages several vertices); any
        other scan as it is."""
        if scan.is_point_cloud or scan.num_faces <= _MAX_FACES_PER_PIXEL * self.size**2:
            return scan
        cell = _CLUSTER_PIXELS * 2 * DEFAULT_EXTENT / self.size
        return cluster_vertices(scan, cell).replace(normalized=scan.normalized)

    def check_cost(self, scan: Scan) -> None:
        """Refuse a normalised mesh whose triangles would cover more pixels than a face scan's many times over
        (rasterising costs time per covered pixel: 200k image-sized triangles would take minutes)."""
        if scan.is_point_cloud:
            return
        corners = scan.vertices[scan.faces][:, :, :2]  # (F, 3, 2), in the renderer's normalised units
        box = corners.max(axis=1) - corners.min(axis=1)
        pixels = float(np.prod(box, axis=1, dtype=np.float64).sum()) * (self.size / (2 * DEFAULT_EXTENT)) ** 2
        if pixels > MAX_COVERAGE * self.size**2:
            raise InputError(
                f"not a face scan: its {scan.num_faces} triangles would cover the image {pixels / self.size**2:.0f} "
                f"times over (a face scan covers it about once)"
            )

    def views_of(self, scans: Sequence[Scan], device=None, **render_kwargs) -> torch.Tensor:
        """(B, V, H, W, 3) uint8 views of B scans, each normalised once (`render_kwargs`: `render_views`'s
        extent, point_radius, ...)."""
        scans = [self.fit_to_pixels(self.normalize(s)) for s in scans]
        for scan in scans:
            self.check_cost(scan)
        return render_views(scans, **self._render_kwargs(), device=device, as_tensor=True, **render_kwargs)

    def normalize_frames(self, frames: Sequence[Scan]) -> list[Scan]:
        """A sequence's frames normalised together: the first frame's transform, each later frame's head motion
        taken out (`normalize_sequence`); frames already normalised are kept as they are."""
        return normalize_sequence(list(frames), crop_radius=self.crop_radius, align=self.align, orient=self.orient)

    def frames_apart(self, frames: Sequence[Scan]) -> float:
        """The largest `surface_gap` (mm, about) of a sequence's later frames from its first, on the parts of the
        face that expressions move least, after `normalize_frames`. A normalised face measures about the crop
        radius (81-90 mm of the 90 on the examples), so normalised units times it read as millimetres."""
        frames = self.normalize_frames(frames)
        mm = float(self.crop_radius or 1.0)
        reference = still_parts(frames[0].vertices.astype(np.float64) * mm)
        gaps = [surface_gap(f.vertices.astype(np.float64) * mm, reference) for f in frames[1:]]
        return max((g for g in gaps if g == g), default=0.0)

    def dynamic_images(self, frames: Sequence[Scan], device=None, **render_kwargs) -> torch.Tensor:
        """(V, H, W, 3) uint8 dynamic images of a sequence (frames in time order; `frames` of them are picked)."""
        frames = self.normalize_frames([frames[i] for i in pick_frames(len(frames), self.frames)])
        frames = [self.fit_to_pixels(frame) for frame in frames]
        for frame in frames:
            self.check_cost(frame)
        return render_sequence(
            frames, **self._render_kwargs(), normalize=False, device=device, as_tensor=True, **render_kwargs
        )

    def pooled_frames(self, count: int, read, reverse: bool = False, device=None) -> list[int]:
        """Which of a sequence's `count` frames to pool, in pooling order (the neutral end first; `reverse` for a
        capture that runs from the apex back to neutral): `frames` of them spread over the expression's span
        (`expression_span`, found among `SPAN_CANDIDATES` frames spread over the sequence). `read(i)` gives frame
        i as a Scan (memoise it: the frames looked at and those pooled overlap)."""
        order = [int(i) for i in pick_frames(count, SPAN_CANDIDATES)][:: -1 if reverse else 1]
        first, last = self.expression_span([read(i) for i in order], device=device)
        step = -1 if reverse else 1
        span = np.arange(order[first], order[last] + step, step)
        return [int(i) for i in span[pick_frames(len(span), self.frames)]]

    def expression_span(self, frames: Sequence[Scan], device=None) -> tuple[int, int]:
        """(first, last), inclusive: the frames of a sequence (time order, its neutral end first) that hold its
        expression. Each frame is registered to the first (`normalize_sequence`) and drawn from the front, and its
        view compared with the first frame's. The span runs from the last frame that differs by `SPAN_STILL` or less
        of the largest difference, to the first that differs by `SPAN_APEX` or more (the apex), and on while the
        difference stays above `SPAN_HOLD` of it, for at most `SPAN_HOLD_RATIO` times the onset. A neutral stretch
        before or after the expression, a second expression, and most of the offset are left out."""
        if len(frames) < 3:
            return 0, len(frames) - 1
        frames = [self.fit_to_pixels(frame) for frame in self.normalize_frames(frames)]
        for frame in frames:
            self.check_cost(frame)
        front = self._render_kwargs()
        front["views"] = (front["views"] or [list(DEFAULT_VIEWS[0])])[:1]
        views = render_views(frames, **front, device=device, as_tensor=True)[:, 0].float()  # (K, H, W, C)
        change = (views - views[0]).abs().mean(dim=(1, 2, 3)).cpu().numpy()
        if not change.max() > 0:
            return 0, len(frames) - 1
        change = change / change.max()
        apex = int(np.argmax(change >= SPAN_APEX))
        first = int(np.flatnonzero(change[: apex + 1] <= SPAN_STILL).max())
        held = apex + int(np.argmin(np.append(change[apex:] >= SPAN_HOLD, False)))  # one past the apex held
        return first, min(held - 1, apex + int(np.ceil(SPAN_HOLD_RATIO * (apex - first))))


# A sequence is pooled over its expression's span (`ScanRecipe.expression_span`), found among this many frames spread
# over it. Pooled whole, a capture that ran on 16 frames after the face relaxed (the training sequences go neutral,
# onset, apex, offset, neutral in 8 frames) was read right 4 times in 36, one with a neutral lead-in twice as long
# as the expression 33, and 35 without either; over the span, 36, 35 and 36.
SPAN_CANDIDATES = 16
SPAN_STILL = 0.05
SPAN_APEX = 0.95
SPAN_HOLD = 0.8
SPAN_HOLD_RATIO = 2.5


# Frames of one face: after registration, a later frame's nose, forehead and sides lie within this (mm, median)
# of the first frame's surface. Synthetic sequences of 24 identities, clean and with scanner realism, measure at
# most 0.5, the 120 held-out realistic sequences of seed 1 at most 1.2 (median 0.37); frames of two people 8-60.
ONE_FACE_MM = 3.0
DIFFERENT_FACES_NOTE = (
    "the frames do not look like one face (their noses and foreheads differ after the head's motion is taken out): "
    "a 4D sequence is one person's frames in time order, and the scores are not reliable; to score separate "
    "scans, give them one at a time (the command line: --csv)"
)


# A face mesh's triangles cover the image about once (their bounding boxes about twice); refuse beyond this.
MAX_COVERAGE = 200


# --- is it a face? ----------------------------------------------------------------------------------------------

# A face keeps thousands of vertices within the crop about its nose tip; a cube or a toy keeps a handful.
MIN_POINTS = 50
# The frontal view of a normalised face covers ~40-70 % of the image; a dot or a sliver covers almost nothing.
MIN_COVERAGE = 0.05
# The nose stands out of the face: the surface 11-18 mm (0.12-0.2 normalised radii) around the tip lies on
# average at least this far (in normalised radii) behind it. Held-out faces of both face models (1,500 scans of
# seeds 21 and 41, clean and realistic) measure 0.047 and over at the 1st percentile, a flat-nosed ICT identity
# smiling 0.034-0.045 (at 0.05 it got the note on 8 of its 25 clean scans); shapes that pass the other tests and are
# no face (turned cubes, cylinders, capsules, 60 random blobs, trimesh's test models) at most 0.025.
MIN_NOSE_PROMINENCE = 0.03
# ... and the face surrounds it: surface in (nearly) every direction around the tip, near it and further out.
MIN_SURROUNDED = 0.75
NOT_A_FACE_NOTE = (
    "this does not look like a face seen from the front (no nose stands out of the surface): "
    "the scores are not reliable"
)
NO_FACE_FOUND_NOTE = (
    "no face was found in this scan from any direction (no eye sockets, nose and mouth where a face has them), so "
    "it was drawn as the file holds it: the scores are not reliable; if it is a face, give the axis of the file it "
    "looks along (facing)"
)
# A face's surface curves everywhere: the six most common directions its triangles face (to about 3 degrees) hold
# 1-5 % of its area (held-out faces of both face models, clean, realistic and at 6,000 triangles; the examples 2 %).
# A box's corner, which can stand out and be surrounded like a nose, holds 41-100 % in them (30 turned cubes).
MAX_FLAT_SHARE = 0.25
_FLAT_SAMPLE = 100_000  # triangles looked at, at most
FLAT_NOTE = (
    "this is made of flat facets (a box, a machined part), not a face's curved surface: the scores are not reliable"
)


@dataclass
class FaceCheck:
    """What the recipe can tell about whether a normalised scan is a face: `notes` for a person to read."""

    points: int
    coverage: float
    nose_prominence: float
    surrounded: float
    flat: float = 0.0  # `flat_share`
    face: bool = True  # the normaliser found a face, or its front view passes the search's test (`front_view_is_face`)

    @property
    def notes(self) -> list[str]:
        if self.nose_prominence < MIN_NOSE_PROMINENCE or self.surrounded < MIN_SURROUNDED:
            return [NOT_A_FACE_NOTE]
        if self.flat > MAX_FLAT_SHARE:
            return [FLAT_NOTE]
        if not self.face:
            return [NO_FACE_FOUND_NOTE]
        return []


def _nearest_by_direction(v: np.ndarray, inner: float, outer: float, bins: int) -> np.ndarray:
    """(bins,) depth of the nearest surface point in each direction around the nose tip (the origin), at a
    lateral distance in [inner, outer] normalised radii; -inf where no surface lies in that direction."""
    lateral = np.hypot(v[:, 0], v[:, 1])
    ring = np.flatnonzero((lateral >= inner) & (lateral <= outer))
    angle = np.arctan2(v[ring, 1], v[ring, 0])
    which = np.minimum(((angle + np.pi) / (2 * np.pi) * bins).astype(int), bins - 1)
    nearest = np.full(bins, -np.inf)
    np.maximum.at(nearest, which, v[ring, 2])
    return nearest


def nose_prominence(scan: Scan, bins: int = 16) -> float:
    """How far the visible surface 0.12-0.2 normalised radii around the nose tip lies behind it: the median over
    directions of the nearest surface point's depth (the back of a closed shape is hidden behind its front)."""
    nearest = _nearest_by_direction(scan.vertices, 0.12, 0.2, bins)
    return float(-np.median(nearest[np.isfinite(nearest)])) if np.isfinite(nearest).any() else 0.0


def surrounded(scan: Scan, bins: int = 16) -> float:
    """The fraction of directions around the nose tip with surface both near it and half a radius out: a face
    surrounds its nose; the rim of a face scan seen from behind (its highest point) has surface on one side."""
    near = _nearest_by_direction(scan.vertices, 0.12, 0.2, bins)
    far = _nearest_by_direction(scan.vertices, 0.4, 0.6, bins)
    return float(np.mean(np.isfinite(near) & np.isfinite(far)))


def flat_share(scan: Scan, directions: int = 6) -> float:
    """The share of a mesh's area whose triangles face one of its `directions` most common ways, each way a cell
    about 3 degrees wide (0 for a point cloud): a face's curved surface spreads its area over many, a box's over
    a few."""
    if scan.faces is None or len(scan.faces) == 0:
        return 0.0
    faces = scan.faces[:: -(-len(scan.faces) // _FLAT_SAMPLE)]  # every k-th triangle of a huge mesh: bounded time
    corners = scan.vertices[faces].astype(np.float64)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(normal, axis=1)
    keep = area > 0
    if not keep.any():
        return 0.0
    cell = np.round(normal[keep] / area[keep, None] * 20.0).astype(np.int64) + 20  # each in 0..40
    per_cell = np.bincount((cell[:, 0] * 41 + cell[:, 1]) * 41 + cell[:, 2], weights=area[keep], minlength=41**3)
    return float(np.sort(per_cell)[-directions:].sum() / area[keep].sum())


def check_face(scan: Scan, views: torch.Tensor) -> FaceCheck:
    """Check a normalised scan and its rendered (V, H, W, 3) views; raise InputError for what cannot be a face.

    Too few points or an (almost) empty frontal render are errors; a surface without a nose, one made of flat
    facets (`flat_share`), or one in which the normaliser found no face and whose front view shows none either
    (`front_view_is_face`: a teapot, a knot, a face drawn from above), gets a note.
    """
    if scan.num_vertices < MIN_POINTS:
        raise InputError(
            f"not a face: only {scan.num_vertices} {'vertex lies' if scan.num_vertices == 1 else 'vertices lie'} "
            "within the face crop around the nose tip (a face scan has thousands)"
        )
    coverage = float((views[0] > 0).any(-1).float().mean())
    if coverage < MIN_COVERAGE:
        raise InputError(f"not a face: the frontal view is {coverage:.1%} covered (almost nothing to see)")
    face = scan.face_found is not False or front_view_is_face(scan.vertices)
    return FaceCheck(scan.num_vertices, coverage, nose_prominence(scan), surrounded(scan), flat_share(scan), face)
