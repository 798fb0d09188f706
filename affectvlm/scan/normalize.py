"""`normalize_scan`: put every face in the same frame before rendering.

The frame: the nose tip at the origin, +y up, +z towards the viewer, and lengths divided by the
scan's robust radius (the 99th percentile of the vertices' distance to the nose tip after cropping),
so that a 90 mm crop of a large face and of a small one both fill the unit sphere and the renderer's
fixed window alike. Scans stored in metres are detected and converted to millimetres first.
"""

from __future__ import annotations

import numpy as np

from .io import drop_nonfinite
from .types import Scan, ScanError

__all__ = ["normalize_scan", "normalize_sequence", "find_nose_tip", "detect_units_scale"]

# a face measures 120-250 mm across; anything below this many units across was stored in metres
_METRES_MAX_EXTENT = 2.0
_FIT_PERCENTILE = 99.0


def detect_units_scale(vertices: np.ndarray) -> float:
    """1000 when the vertices look like metres (bounding box under 2 units across), else 1."""
    # per column: numpy's reductions along axis 0 of an (N, 3) array are ~20x slower
    extent = max(float(vertices[:, i].max() - vertices[:, i].min()) for i in range(3))
    return 1000.0 if 0.0 < extent < _METRES_MAX_EXTENT else 1.0


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
        units: "auto" (detect metres), "mm" or "m".

    Returns:
        A new Scan; vertices float32 in the normalised frame. Texture, uv and colours follow the
        kept vertices.

    Raises:
        ScanError: when no vertex is left after removing invalid points or cropping.
    """
    return _normalize(scan, crop_radius=crop_radius, landmark=landmark, align=align, fit=fit, units=units)[0]


def normalize_sequence(frames: list[Scan], **kwargs) -> list[Scan]:
    """Normalise the frames of a 4D sequence with the first frame's nose tip, rotation and scale.

    One transform for the whole sequence keeps the motion that rank pooling should see (per-frame
    normalisation would re-centre every frame on its own nose tip). Takes `normalize_scan`'s
    arguments; `landmark` applies to the first frame.
    """
    first, tip, rotation, radius = _normalize(frames[0], **kwargs)
    rest = dict(kwargs, landmark=None)
    out = [first]
    for frame in frames[1:]:
        out.append(_normalize(frame, **rest, _tip=tip, _rotation=rotation, _radius=radius)[0])
    return out


def _normalize(
    scan: Scan,
    *,
    crop_radius: float | None = 90.0,
    landmark=None,
    align: bool | str = False,
    fit: bool = True,
    units: str = "auto",
    _tip=None,
    _rotation=None,
    _radius=None,
):
    """normalize_scan, also returning the transform (tip in mm, rotation or None, radius or None);
    the underscored arguments impose a transform instead of estimating it."""
    scan = drop_nonfinite(scan)
    v = scan.vertices
    if units not in ("auto", "mm", "m"):
        raise ValueError(f"units must be 'auto', 'mm' or 'm', got {units!r}")
    if align not in (False, True, "pca"):
        raise ValueError(f"align must be False, True or 'pca', got {align!r}")
    scale = {"auto": detect_units_scale(v), "mm": 1.0, "m": 1000.0}[units]
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
            raise ScanError(f"no vertex within {crop_radius} mm of the nose tip ({scan.path})")
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
    return out.replace(vertices=np.ascontiguousarray(v, dtype=np.float32)), tip, rotation, radius
