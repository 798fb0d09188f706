"""`normalize_scan`: put every face in the same frame before rendering.

The frame: the nose tip at the origin, +y up, +z towards the viewer, and lengths divided by the
scan's robust radius (the 99th percentile of the vertices' distance to the nose tip after cropping),
so that a 90 mm crop of a large face and of a small one both fill the unit sphere and the renderer's
fixed window alike. The units (mm, cm, m, or none) are read from the scan's size and converted to millimetres
first. Normalising is done once: a scan `normalize_scan` returned (`Scan.normalized`) comes back unchanged.
"""

from __future__ import annotations

import os

import numpy as np

from .io import drop_nonfinite
from .types import Scan, ScanError

__all__ = ["normalize_scan", "normalize_sequence", "find_nose_tip", "detect_units_scale"]

# A face or head scan measures 60-600 mm across its largest side. The file's units are the factor (mm, cm, m)
# that puts the scan in that range; the range spans exactly a factor of ten, so at most one of mm and cm fits.
# A scan that fits none (a normalised or unitless model, a toy) is scaled to a typical face's size instead.
_FACE_EXTENT_MM = (60.0, 600.0)
_UNITLESS_EXTENT_MM = 200.0
_UNIT_SCALES = (("mm", 1.0), ("cm", 10.0), ("m", 1000.0))
_FIT_PERCENTILE = 99.0


def _extent(vertices: np.ndarray) -> float:
    """The bounding box's largest side, in float64 (1e30 coordinates must not overflow)."""
    # per column: numpy's reductions along axis 0 of an (N, 3) array are ~20x slower
    return max(float(np.float64(vertices[:, i].max()) - np.float64(vertices[:, i].min())) for i in range(3))


def detect_units_scale(vertices: np.ndarray) -> float:
    """The factor to millimetres: 1 (mm), 10 (cm) or 1000 (m) when one of them puts the scan 60-600 mm across,
    else the factor that makes it 200 mm across (a unitless model of any size).

    Raises:
        ScanError: when every vertex is at the same place (no size to measure).
    """
    extent = _extent(vertices) if len(vertices) else 0.0
    if not extent > 0.0 or not np.isfinite(extent):
        raise ScanError("the scan has no extent: all its vertices are at one point")
    lo, hi = _FACE_EXTENT_MM
    for _, scale in _UNIT_SCALES:
        if lo <= extent * scale < hi:
            return scale
    return _UNITLESS_EXTENT_MM / extent


def find_nose_tip(
    vertices: np.ndarray,
    *,
    candidates: int = 32,
    radius: float = 8.0,
    sample: int = 2048,
    min_fraction: float = 0.25,
) -> np.ndarray:
    """The nose tip: the highest-z vertex that is not an isolated spike.

    Scanner spikes (hair, specular outliers) stick out above the face but have few neighbours. The
    `candidates` highest vertices are ranked by how many of a fixed subsample of `sample` vertices
    lie within `radius` (mm) of them; candidates with fewer than `min_fraction` of the best count
    are outliers, and the highest of the rest wins. Cost: O(N) plus candidates x sample distances.

    Args:
        vertices: (N, 3) float, millimetres, +z towards the viewer.

    Returns:
        (3,) float32 position of the nose tip.
    """
    n = len(vertices)
    k = min(candidates, n)
    top = np.argpartition(vertices[:, 2], n - k)[n - k :]
    top = top[np.argsort(-vertices[top, 2])]
    ref = vertices[:: max(1, n // sample)].astype(np.float32)  # a deterministic subsample
    cand = vertices[top].astype(np.float32)
    # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one small matmul instead of a (k, S, 3) temporary
    d2 = (cand * cand).sum(1)[:, None] + (ref * ref).sum(1)[None, :] - 2.0 * (cand @ ref.T)  # (k, S)
    support = (d2 <= radius * radius).sum(axis=1)
    ok = support >= max(2, min_fraction * support.max())
    return vertices[top[np.argmax(ok)]].astype(np.float32)


def _pca_rotation(points: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) taking the face's principal axes to x (width), y (height), z (depth).

    The axis of least variance is the face normal; signs are chosen to stay close to the input
    frame (+y up, +z towards the viewer), so an already frontal scan is left nearly unchanged.
    """
    centered = points - points.mean(axis=0)
    _, vecs = np.linalg.eigh(centered.T @ centered)  # ascending eigenvalues
    z, a, b = vecs[:, 0], vecs[:, 1], vecs[:, 2]
    # the larger of the two in-plane axes is usually the height, but pick by agreement with +y
    y = a if abs(a[1]) >= abs(b[1]) else b
    y = y if y[1] >= 0 else -y
    z = z if z[2] >= 0 else -z
    x = np.cross(y, z)
    return np.stack([x, y, z])  # rows: new axes in old coordinates


def normalize_scan(
    scan: Scan,
    *,
    crop_radius: float | None = 90.0,
    landmark: np.ndarray | int | None = None,
    align: bool | str = False,
    fit: bool = True,
    units: str = "auto",
) -> Scan:
    """Centre a scan on its nose tip, crop it and scale it to the renderer's frame.

    Args:
        scan: the raw scan (millimetres or metres, +y up, +z towards the viewer).
        crop_radius: keep vertices within this distance (mm) of the nose tip, as BU-3DFE's 90 mm
            crops do; None keeps everything.
        landmark: the nose tip as a vertex index or an (3,) position in the scan's units, when known
            (e.g. from `.bnd` or `.lm3` files); otherwise it is found with `find_nose_tip`.
        align: False, or True/"pca" to rotate the cropped face so that its principal axes match
            x, y, z (undoes small head rotations; off by default because it can also undo a pose
            that the data means to keep).
        fit: divide by the robust radius so the face fills the unit sphere (the renderer's default
            window expects this); False keeps millimetres.
        units: "auto" (from the size: mm, cm, m or unitless), "mm", "cm" or "m".

    Returns:
        A new Scan with `normalized=True`; vertices float32 in the normalised frame. Texture, uv and colours
        follow the kept vertices. A scan that is already `normalized` is returned as it is (normalising is
        done once).

    Raises:
        ScanError: when no vertex is left after removing invalid points or cropping.
    """
    if scan.normalized:
        return scan
    return _normalize(scan, crop_radius=crop_radius, landmark=landmark, align=align, fit=fit, units=units)[0]


def normalize_sequence(frames: list[Scan], **kwargs) -> list[Scan]:
    """Normalise the frames of a 4D sequence with the first frame's nose tip, rotation and scale.

    One transform for the whole sequence keeps the motion that rank pooling should see (per-frame
    normalisation would re-centre every frame on its own nose tip). Takes `normalize_scan`'s
    arguments; `landmark` applies to the first frame.
    """
    first, (scale, tip, rotation, radius) = _normalize(frames[0], **kwargs)
    if all(frame.normalized for frame in frames):
        return list(frames)
    rest = dict(kwargs, landmark=None)
    out = [first]
    for frame in frames[1:]:
        out.append(_normalize(frame, **rest, _transform=(scale, tip, rotation, radius))[0])
    return out


def _normalize(
    scan: Scan,
    *,
    crop_radius: float | None = 90.0,
    landmark=None,
    align: bool | str = False,
    fit: bool = True,
    units: str = "auto",
    _transform=None,
):
    """normalize_scan, also returning the transform (units scale, tip in mm, rotation or None, radius or None);
    `_transform` imposes one instead of estimating it (the later frames of a sequence)."""
    _scale, _tip, _rotation, _radius = _transform or (None, None, None, None)
    scan = drop_nonfinite(scan)
    v = scan.vertices
    if units != "auto" and units not in dict(_UNIT_SCALES):
        raise ValueError(f"units must be 'auto', 'mm', 'cm' or 'm', got {units!r}")
    if align not in (False, True, "pca"):
        raise ValueError(f"align must be False, True or 'pca', got {align!r}")
    if _scale is not None:
        scale = _scale
    else:
        scale = detect_units_scale(v) if units == "auto" else dict(_UNIT_SCALES)[units]
    if scale != 1.0:
        v = v * np.float32(scale)
    if _tip is not None:
        tip = _tip
    elif landmark is None:
        tip = find_nose_tip(v)
    elif np.ndim(landmark) == 0:
        tip = v[int(landmark)]
    else:
        tip = np.asarray(landmark, dtype=np.float32).reshape(3) * np.float32(scale)
    v = v - tip
    keep = None
    if crop_radius is not None:
        keep = np.einsum("ij,ij->i", v, v) <= np.float32(crop_radius) ** 2
        if not keep.any():
            raise ScanError(f"no vertex within {crop_radius} mm of the nose tip ({_name(scan)})")
    out = scan.replace(vertices=v).subset(keep) if keep is not None else scan.replace(vertices=v)
    v = out.vertices
    rotation = _rotation
    if align and rotation is None:
        rotation = _pca_rotation(v).astype(np.float32)
    if rotation is not None:
        v = v @ rotation.T
    radius = _radius
    if fit and radius is None:
        radius = float(np.sqrt(np.percentile(np.einsum("ij,ij->i", v, v), _FIT_PERCENTILE)))
    if fit and radius and radius > 0:
        v = v * np.float32(1.0 / radius)
    out = out.replace(vertices=np.ascontiguousarray(v, dtype=np.float32), normalized=bool(fit))
    return out, (scale, tip, rotation, radius)


def _name(scan: Scan) -> str:
    """The scan's file name without its folder (messages never show server paths)."""
    return os.path.basename(scan.path) if scan.path else "scan"
