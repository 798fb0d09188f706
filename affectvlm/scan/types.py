"""The in-memory scan: `Scan` and the error every reader raises, `ScanError`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["InputError", "Scan", "ScanError", "file_tag", "spread_sample"]


class InputError(ValueError):
    """An input that cannot be used (a file, an image, labels, a sequence); the message names the problem and is
    safe to show a user (no server paths)."""


class ScanError(InputError):
    """A scan file or array that cannot be used, with a message naming the problem and the file."""


def file_tag(path) -> str:
    """' (name)' to end a message with: the file's base name, never its folder (messages reach users)."""
    return f" ({os.path.basename(os.fsdecode(path))})" if path else ""


def spread_sample(points: np.ndarray, count: int) -> np.ndarray:
    """As many of `points` as a stride of ``len // count`` would keep (``count`` to ``2 * count`` of them, or all),
    chosen and ordered by a hash of each point's coordinates: the same points in the same order whatever order a file
    lists them in, and no stride to fall in step with a scanner's rows or a mesh's layout. Cost: O(N)."""
    n = len(points)
    step = max(1, n // max(1, count))
    keep = -(-n // step)
    bits = np.ascontiguousarray(np.asarray(points, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 is 0.0
    key = bits[:, 0].astype(np.uint64) | (bits[:, 1].astype(np.uint64) << np.uint64(32))
    key ^= bits[:, 2].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for shift, odd in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64's finaliser
        key ^= key >> np.uint64(shift)
        key *= np.uint64(odd)
    key ^= key >> np.uint64(31)
    chosen = np.argpartition(key, keep - 1)[:keep] if keep < n else np.arange(n)
    return points[chosen[np.argsort(key[chosen], kind="stable")]]


@dataclass(eq=False)
class Scan:
    """One 3D face scan: a triangle mesh or a point cloud.

    Attributes:
        vertices: (N, 3) float32, millimetres as far as the file says (`normalize_scan` detects metres);
            +y up, +z towards the viewer for the datasets this project reads.
        faces: (M, 3) int64 vertex indices, or None for a point cloud.
        colors: (N, 3) uint8 per-vertex RGB, or None.
        uv: (N, 2) float32 per-vertex texture coordinates in [0, 1], origin at the bottom left of
            `texture` (OpenGL/VRML convention). Formats with per-corner coordinates (VRML
            `texCoordIndex`) are converted by splitting a vertex wherever its corners disagree, so
            every vertex has exactly one uv. None when the scan has no texture coordinates.
        texture: (H, W, 3) uint8 RGB image that `uv` indexes, row 0 at the top; or None.
        path: the file the scan was read from, or None.
        normalized: True once `normalize_scan` has put the scan in the renderer's canonical frame; normalising
            it again returns it unchanged.
        face_found: set by `normalize_scan`: whether its face search (`find_face`) found a face, False when it
            found none and kept the file's frame; None when no search was made (`orient="none"`, a sequence's later
            frames) or the scan is not normalised. `affectvlm.scan.recipe.check_face` reads it.
    """

    vertices: np.ndarray
    faces: np.ndarray | None = None
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    path: str | None = None
    normalized: bool = False
    face_found: bool | None = None

    def __post_init__(self) -> None:
        where = file_tag(self.path)
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf: readers drop it
            v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ScanError(f"vertices must have shape (N, 3), got {v.shape}{where}")
        self.vertices = v
        n = len(v)
        if self.faces is not None:
            f = np.asarray(self.faces)
            if f.size == 0:
                f = np.zeros((0, 3), np.int64)
            if f.ndim != 2 or f.shape[1] != 3:
                raise ScanError(f"faces must have shape (M, 3), got {f.shape}{where}")
            if not np.issubdtype(f.dtype, np.integer):
                raise ScanError(f"faces must be integer indices, got {f.dtype}{where}")
            f = np.ascontiguousarray(f, dtype=np.int64)
            if len(f) and (f.min() < 0 or f.max() >= n):
                raise ScanError(f"face indices out of range [0, {n}){where}")
            self.faces = f
        if self.colors is not None:
            c = np.asarray(self.colors)
            if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
                raise ScanError(f"colors must have shape ({n}, 3), got {c.shape}{where}")
            if np.issubdtype(c.dtype, np.floating):  # floats in [0, 1], as VRML and some PLYs store them
                c = np.clip(np.nan_to_num(c) * 255.0 + 0.5, 0, 255)
            self.colors = np.ascontiguousarray(c[:, :3], dtype=np.uint8)
        if self.uv is not None:
            uv = np.ascontiguousarray(self.uv, dtype=np.float32)
            if uv.ndim != 2 or uv.shape != (n, 2):
                raise ScanError(f"uv must have shape ({n}, 2), got {uv.shape}{where}")
            if not np.isfinite(uv).all():  # NaN would index the texture out of bounds
                uv = np.nan_to_num(uv, nan=0.0, posinf=1.0, neginf=0.0)
            self.uv = uv
        if self.texture is not None:
            t = np.asarray(self.texture)
            if t.ndim == 2:
                t = np.repeat(t[:, :, None], 3, axis=2)
            if t.ndim != 3 or t.shape[2] not in (3, 4) or t.shape[0] == 0 or t.shape[1] == 0:
                raise ScanError(f"texture must have shape (H, W, 3), got {t.shape}{where}")
            self.texture = np.ascontiguousarray(t[:, :, :3], dtype=np.uint8)

    @property
    def is_point_cloud(self) -> bool:
        """True when the scan has no triangles (rendered by splatting)."""
        return self.faces is None or len(self.faces) == 0

    @property
    def has_texture(self) -> bool:
        """True when `render_views(mode="texture")` can sample an image (uv + texture) or vertex colours."""
        return (self.uv is not None and self.texture is not None) or self.colors is not None

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return 0 if self.faces is None else len(self.faces)

    def replace(self, **changes) -> Scan:
        """A copy with some fields replaced (arrays are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def subset(self, keep: np.ndarray) -> Scan:
        """The scan restricted to the vertices where `keep` (N,) bool is True.

        Faces that touch a dropped vertex are dropped; the others are re-indexed.
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.all():
            return self
        # np.compress and take: several times faster than boolean and fancy indexing on (N, 3) arrays
        remap = np.cumsum(keep, dtype=np.int64) - 1
        faces = None
        if self.faces is not None:
            f = self.faces
            kept = keep.take(f[:, 0]) & keep.take(f[:, 1]) & keep.take(f[:, 2])
            faces = remap.take(np.compress(kept, f, axis=0))
        return Scan(
            vertices=np.compress(keep, self.vertices, axis=0),
            faces=faces,
            colors=None if self.colors is None else np.compress(keep, self.colors, axis=0),
            uv=None if self.uv is None else np.compress(keep, self.uv, axis=0),
            texture=self.texture,
            path=self.path,
        )

    def __repr__(self) -> str:
        kind = "point cloud" if self.is_point_cloud else f"{self.num_faces} faces"
        extras = [name for name in ("colors", "uv", "texture") if getattr(self, name) is not None]
        extra = f", {'+'.join(extras)}" if extras else ""
        return f"Scan({self.num_vertices} vertices, {kind}{extra}, path={self.path!r})"
