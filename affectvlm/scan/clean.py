"""`drop_stray_points`: a scan without the points that stand alone, away from any surface.

Scanners leave flying pixels, background specks and single points on the far side of the room in their files. A
few such points wreck what comes after: the scan's size (read from its bounding box) says the wrong units, and
the face search sees a scatter. A point is stray when the cube of `_CELL_SPACINGS` point spacings it falls in,
with the 26 cubes about it, holds fewer than `_MIN_COMPANY` points: a surface sampled at that spacing puts dozens
of points in each cube, a scattered point has the cubes to itself. In a mesh, a vertex that no triangle uses and that lies
outside the triangles' extent is not on the surface either, however many keep it company (a patch of loose points
metres away once took the face search). Nor is a point at exactly (0, 0, 0) that no triangle uses: depth cameras
write their unmeasured pixels there, and such a pile keeps itself company (50 of them among a face's 4,000 vertices
turned a happy face sad). Vertices at the origin that triangles do use go when there are `_ORIGIN_PILE` or more
of them; fewer is a mesh's own vertex that happens to sit there (an unwelded mesh repeats one per triangle).

    scan = drop_stray_points(scan)   # `normalize_scan` does this first

`cluster_vertices` decimates a scan by vertex clustering (a scan far denser than the pixels it is drawn on).
"""

from __future__ import annotations

import numpy as np

from .types import Scan, spread_sample

__all__ = ["cluster_vertices", "clustered", "drop_stray_points", "point_spacing"]

_CELL_SPACINGS = 4.0  # a cube's side, in point spacings
_MIN_COMPANY = 3  # points (itself included) the 27 cubes about a point must hold
_MAX_DROPPED = (
    0.5  # a scan that would lose more than this fraction keeps every point (no surface to speak of)
)
_ORIGIN_PILE = 16  # vertices used by triangles at exactly the origin that make a depth camera's marker
_SAMPLE = 4096  # points the spacing is measured on (128 of them against the rest)
_BITS = 21  # per axis in a cube's key


def drop_stray_points(scan: Scan) -> Scan:
    """`scan` without its stray points (see above) and the faces that touch them; the scan itself when it has none,
    has fewer than 64 points, or would lose more than half of them. Takes finite vertices (`drop_nonfinite`).
    Cost: a few ms for 100k points."""
    scan = _drop_unreferenced(_drop_origin_markers(scan))
    v = scan.vertices
    if len(v) < 64:
        return scan
    spacing = point_spacing(scan)
    if not spacing > 0.0:
        return scan
    cells = np.floor((v - v.min(axis=0)) * np.float32(1.0 / (spacing * _CELL_SPACINGS)))
    cells = np.minimum(cells, 2**_BITS - 2).astype(np.int64) + 1  # 0 and 2**BITS - 1 stay free for neighbours
    key = (cells[:, 0] << (2 * _BITS)) | (cells[:, 1] << _BITS) | cells[:, 2]
    unique, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    alone = np.flatnonzero(counts[inverse] < _MIN_COMPANY)  # few: the cube's neighbours decide
    if not len(alone):
        return scan
    steps = np.array(
        [(i << (2 * _BITS)) + (j << _BITS) + k for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]
    )
    around = key[alone, None] + steps  # (A, 27)
    found = np.minimum(np.searchsorted(unique, around), len(unique) - 1)
    company = np.where(unique[found] == around, counts[found], 0).sum(axis=1)
    stray = alone[company < _MIN_COMPANY]
    if not len(stray) or len(stray) > _MAX_DROPPED * len(v):
        return scan
    keep = np.ones(len(v), dtype=bool)
    keep[stray] = False
    return scan.subset(keep)


def _drop_origin_markers(scan: Scan) -> Scan:
    """The scan without its points at exactly (0, 0, 0) that no triangle uses, and without the used ones too when
    there are `_ORIGIN_PILE` or more (see above); the scan itself when that would leave nothing."""
    at_origin = ~scan.vertices.any(axis=1)  # -0.0 counts as 0
    if not at_origin.any() or at_origin.all():
        return scan
    if scan.faces is not None and len(scan.faces):
        used = np.zeros(scan.num_vertices, dtype=bool)
        used[scan.faces.ravel()] = True
        if np.count_nonzero(at_origin & used) < _ORIGIN_PILE:
            at_origin &= ~used
    return scan.subset(~at_origin) if at_origin.any() else scan


def _drop_unreferenced(scan: Scan) -> Scan:
    """A mesh without the vertices that no face uses and that lie outside the box of those that are used (grown
    by a tenth each way); loose vertices among the surface (a hole's edge) stay, as they do not move what is
    measured on it. A mesh made mostly of loose points keeps them all (a point cloud with a few triangles)."""
    if scan.faces is None or not len(scan.faces):
        return scan
    used = np.zeros(scan.num_vertices, dtype=bool)
    used[scan.faces.ravel()] = True
    if used.all() or used.sum() < (1 - _MAX_DROPPED) * len(used):
        return scan
    v = scan.vertices
    lo, hi = v[used].min(axis=0), v[used].max(axis=0)
    margin = 0.1 * (hi - lo)
    outside = ((v < lo - margin) | (v > hi + margin)).any(axis=1)
    return scan.subset(~(outside & ~used)) if (outside & ~used).any() else scan


def point_spacing(scan: Scan) -> float:
    """The scan's typical point spacing: a mesh's median edge length, or a point cloud's median distance from a
    point to its nearest neighbour (among up to `_SAMPLE` points: an overestimate for larger clouds, which only
    widens the cubes). Edges of no length are left out: a mesh whose quads repeat a vertex ("f 1 2 3 3"), or a
    welded mesh with collapsed triangles, has them in every other triangle, and its median edge was then 0."""
    v = scan.vertices
    if scan.faces is not None and len(scan.faces):
        f = scan.faces[:: max(1, len(scan.faces) // _SAMPLE)]
        edges = v[f[:, 1]].astype(np.float64) - v[f[:, 0]]
        lengths = np.sqrt((edges * edges).sum(axis=1))
        lengths = lengths[lengths > 0.0]
        if len(lengths):
            return float(np.median(lengths))
    sample = spread_sample(v, _SAMPLE).astype(np.float64)
    queries = sample[:: max(1, len(sample) // 128)]
    d2 = sum((queries[:, None, i] - sample[None, :, i]) ** 2 for i in range(3))
    d2[d2 == 0.0] = np.inf  # itself, and duplicates
    return float(np.median(np.sqrt(d2.min(axis=1))))


def cluster_vertices(scan: Scan, cell: float) -> Scan:
    """Decimate by vertex clustering: one vertex per occupied cube of side `cell` (the scan's units) at the mean of
    its vertices (colours and uv of the first); triangles that collapse or repeat are dropped. Cost: O(N log N)."""
    return clustered(scan, cell)[0]


def clustered(scan: Scan, cell: float) -> tuple[Scan, np.ndarray]:
    """`cluster_vertices`, and each of the scan's vertices' (N,) index in the clustered scan."""
    v = scan.vertices.astype(np.float64)
    key = np.floor((v - v.min(0)) / cell).astype(np.int64)
    span = key.max(0) + 1
    flat = (key[:, 0] * span[1] + key[:, 1]) * span[2] + key[:, 2]
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    count = np.bincount(inverse)
    mean = np.stack([np.bincount(inverse, weights=v[:, i]) for i in range(3)], -1) / count[:, None]
    faces = None
    if not scan.is_point_cloud:
        f = inverse[scan.faces]
        f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
        faces = f[np.sort(_first_of_each(np.sort(f, axis=1), len(count)))]
    pick = {name: getattr(scan, name)[first] for name in ("colors", "uv") if getattr(scan, name) is not None}
    return Scan(vertices=mean.astype(np.float32), faces=faces, texture=scan.texture, path=scan.path, **pick), inverse


def _first_of_each(rows: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first of each distinct row of `rows` ((M, 3) ints in [0, n)): one int64 key per row where
    n^3 fits in one, else numpy's row-wise unique (several times slower)."""
    if n**3 < 2**63:
        key = (rows[:, 0] * n + rows[:, 1]) * n + rows[:, 2]
        return np.unique(key, return_index=True)[1]
    return np.unique(rows, axis=0, return_index=True)[1]
