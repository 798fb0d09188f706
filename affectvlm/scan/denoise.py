"""`denoise`: a scan whose surface is noisier than scanners that the models were trained on, smoothed.

Depth sensors differ by an order of magnitude in noise: a 3dMD or Di3D capture (BU-3DFE, BP4D) is within a few
tenths of a millimetre of the face, a structured-light or time-of-flight camera a millimetre or two off it. The
renderer shades by the surface's normals, so noise of a millimetre or more turns the face into crumpled paper
and the expression is lost in it. The surface is measured first (`surface_noise`: points' heights along the
normal above quadrics fitted to the voxels around 250 sampled ones; 1.48 median absolute heights, a robust
standard deviation). A scan within `QUIET_MM` (above the 0.05-0.5 mm the shipped models were trained with, and
above the 0.15-0.4 mm that a clean face's own detail reads as) is returned as it is; a noisier one has each vertex
moved along the normal onto a quadric fitted over voxels that grow with the noise (moving least squares): the
noise falls, the face's shape (nose, lips, brows: curved on a scale of centimetres) stays. A sparse point cloud
is left to the renderer: between its points a quadric's misfit is shape as much as noise.

    scan = denoise(scan)   # `normalize_scan` does this on the cropped face, in millimetres

A mesh may carry surfaces that no scanner sees and the renderer hides: the inside of a mouth, the back of the
lips, eye sockets (a character head exported from a modelling tool). Measured with the face, a surface a few
millimetres behind it reads as noise (1.9 mm on a clean MakeHuman head, 0.6 without its mouth), and smoothed with
it, the two are pulled into each other and through the lips. So a mesh that measures noisy is measured again on
the vertices the views see (`seen_vertices`), and only those are smoothed; the hidden ones stay where they are.

Vertices are first averaged per voxel (at most about `_MAX_SUPPORT` voxels, so a scan of a million points costs
what one of thirty thousand does); quadrics are fitted to the voxels and every vertex is put on its voxel's.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .clean import clustered, point_spacing
from .render import DEFAULT_VIEWS, render_depth, view_rotation
from .types import Scan

__all__ = ["QUIET_MM", "denoise", "seen_vertices", "surface_noise"]

QUIET_MM = 0.8  # noise (mm, robust standard deviation along the normal) a scan may have and be left as it is
_NEIGHBOURS = 40  # voxels a quadric is fitted to
_QUADRIC_MIN = 16.0  # fewer neighbours of weight (effectively) get a plane
_MEASURE_VOXEL_MM = 1.0  # noise is measured on voxels of at least this side (or one point spacing)
_SMOOTH_VOXEL_PER_NOISE = 1.5  # smoothing voxels' side: this many times the noise (neighbourhoods ~3.6 sides)
_SPARSE_SHAPE = 0.4  # a point cloud is left as it is below this many point spacings of noise
_MAX_MOVE = 4.0  # a vertex moves at most this many times the noise
_MAX_SUPPORT = 8_000  # voxels at most: their side grows past this
_ROBUST = 1.4826  # median absolute deviation -> standard deviation (normal noise)
_BLOCK = 1024
_MEASURED = 250  # voxels whose points the noise is measured on
_SEEN_PIXEL_MM = 1.0  # the visibility test's pixel (grown to keep the image within `_SEEN_MAX_PIXELS` a side)
_SEEN_MAX_PIXELS = 512
_UMBRELLA_PASSES = 8  # edge-smoothing passes before the visibility test
_SEEN_MAX_FACES = 200_000  # a denser mesh is tested with its vertices clustered to about this many triangles
_HIDDEN_MM = 3.0  # a vertex this far (or two pixels, if more) behind the surface drawn at its pixel is hidden there


def surface_noise(scan: Scan) -> float:
    """The noise of a scan's surface: the robust standard deviation (in the scan's units, mm in practice) of
    its points' heights above quadrics fitted to the voxels around them; of a mesh that measures noisy, of its
    `seen_vertices` only."""
    return _measure(scan)[0]


def denoise(scan: Scan) -> Scan:
    """`scan` (in mm) smoothed when its `surface_noise` is above `QUIET_MM`; the scan itself otherwise. Faces,
    colours and uv are kept: only vertices move, each along its surface's normal (a mesh's hidden ones not at
    all)."""
    if len(scan.vertices) < _NEIGHBOURS:
        return scan
    noise, seen = _measure(scan)
    # a sparse cloud's shape between its points is as unknown as its noise: what its quadrics miss is mostly shape
    quiet = QUIET_MM if scan.faces is not None else max(QUIET_MM, _SPARSE_SHAPE * point_spacing(scan))
    if not noise > quiet:
        return scan
    v = torch.from_numpy(np.ascontiguousarray(scan.vertices, dtype=np.float32)).T.contiguous()
    seen = torch.ones(v.shape[1], dtype=torch.bool) if seen is None else seen
    part = v[:, seen]
    fit = _fit(part, _SMOOTH_VOXEL_PER_NOISE * noise)
    step = _heights(part, fit).clamp_(-_MAX_MOVE * noise, _MAX_MOVE * noise)
    v[:, seen] = part - fit["normal"][:, fit["voxel"]] * step
    return scan.replace(vertices=np.ascontiguousarray(v.T.numpy(), dtype=np.float32))


def _measure(scan: Scan) -> tuple[float, torch.Tensor | None]:
    """`surface_noise` and, for a mesh that measured noisy on all its vertices, its (N,) `seen_vertices`."""
    v = torch.from_numpy(np.ascontiguousarray(scan.vertices, dtype=np.float32)).T
    spacing = point_spacing(scan)
    noise = _noise(v, spacing)
    if not (noise > QUIET_MM and not scan.is_point_cloud):
        return noise, None
    seen = torch.from_numpy(seen_vertices(scan))
    return _noise(v[:, seen], spacing), seen


def seen_vertices(scan: Scan) -> np.ndarray:
    """(N,) bool: the vertices of `scan` (mm, the face looking along +z) that the renderer's views can see: in at
    least one of `DEFAULT_VIEWS`, not more than `_HIDDEN_MM` behind the surface drawn at their pixel, or off
    every surface there. All of a point cloud's. Seen on the mesh smoothed along its edges (`_umbrella`): noise
    folds a surface over its own pits, which are not hidden surfaces."""
    if scan.is_point_cloud or not scan.num_vertices:
        return np.ones(scan.num_vertices, dtype=bool)
    cell = min(_SEEN_PIXEL_MM, point_spacing(scan) * math.sqrt(scan.num_faces / _SEEN_MAX_FACES))
    if scan.num_faces > _SEEN_MAX_FACES and cell > 0.0:  # its pixels are a millimetre: finer triangles add only time
        coarse, cluster = clustered(scan, cell)
        return _seen(coarse)[cluster]
    return _seen(scan)


def _seen(scan: Scan) -> np.ndarray:
    """`seen_vertices` of a mesh, every triangle drawn."""
    seen = np.zeros(scan.num_vertices, dtype=bool)
    v = _umbrella(scan)
    scan = scan.replace(vertices=v)
    extent = float(np.sqrt(np.einsum("ij,ij->i", v, v).max())) + _SEEN_PIXEL_MM
    size = int(min(_SEEN_MAX_PIXELS, math.ceil(2.0 * extent / _SEEN_PIXEL_MM)))
    step = 2.0 * extent / size
    depth, mask = render_depth(scan, DEFAULT_VIEWS, size, extent=extent, pivot=(0.0, 0.0, 0.0))
    for k, view in enumerate(DEFAULT_VIEWS):
        p = v @ view_rotation(*view).T.astype(np.float32)
        col = np.clip(np.floor(p[:, 0] / step + size / 2.0), 0, size - 1).astype(np.int64)
        row = np.clip(np.floor(-p[:, 1] / step + size / 2.0), 0, size - 1).astype(np.int64)
        front = depth[0, k, row, col]
        seen |= ~mask[0, k, row, col] | (p[:, 2] >= front - max(_HIDDEN_MM, 2.0 * step))
    return seen


def _umbrella(scan: Scan, passes: int = _UMBRELLA_PASSES) -> np.ndarray:
    """A mesh's vertices, each moved halfway to its neighbours' mean `passes` times: smoothed along its edges,
    so that surfaces apart (a face and the inside of its mouth) stay apart."""
    v = torch.from_numpy(np.ascontiguousarray(scan.vertices, dtype=np.float32))
    f = torch.from_numpy(np.ascontiguousarray(scan.faces, dtype=np.int64))
    a, b = torch.cat([f[:, 0], f[:, 1], f[:, 2]]), torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    a, b = torch.cat([a, b]), torch.cat([b, a])
    count = torch.zeros(len(v)).index_add_(0, a, torch.ones(len(a))).clamp_(min=1.0)[:, None]
    for _ in range(passes):
        v = 0.5 * v + 0.5 * torch.zeros_like(v).index_add_(0, a, v[b]) / count
    return v.numpy()


def _noise(v: torch.Tensor, spacing: float) -> float:
    """`surface_noise` of the points (3, N)."""
    if v.shape[1] < _NEIGHBOURS:
        return 0.0
    fit = _fit(v, max(_MEASURE_VOXEL_MM, spacing), sample=_MEASURED)
    measured = fit["fitted"][fit["voxel"]]
    return _robust_sigma(_heights(v[:, measured], fit, measured))


def _robust_sigma(heights: torch.Tensor) -> float:
    return float(_ROBUST * heights.abs().median()) if len(heights) else 0.0


def _voxels(v: torch.Tensor, side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (3, N) averaged per voxel of `side` (grown until at most `_MAX_SUPPORT` voxels): (3, M) means
    and (N,) each point's voxel."""
    lo = v.min(dim=1, keepdim=True).values
    for _ in range(16):
        cell = torch.floor((v - lo) / side).long()
        key = (cell[0] << 42) | (cell[1] << 21) | cell[2]
        unique, voxel = torch.unique(key, return_inverse=True)
        if len(unique) <= _MAX_SUPPORT:
            break
        side *= math.sqrt(len(unique) / _MAX_SUPPORT) * 1.05
    ones = torch.ones(v.shape[1], dtype=torch.float64)
    count = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, voxel, ones)
    sums = torch.zeros(len(unique), 3, dtype=torch.float64).index_add_(0, voxel, v.T.double())
    return (sums / count[:, None]).T.float().contiguous(), voxel


def _fit(v: torch.Tensor, side: float, sample: int | None = None) -> dict:
    """Quadrics fitted about the voxels (of `side`) of the points (3, N), each over its `_NEIGHBOURS` nearest
    voxels: the voxels' points (3, M), frames (M, 3, 3: tangents and normal as columns) and normals (3, M), the
    quadrics' six coefficients (M, 6: uu, uv, vv, u, v, 1 in the frame), every point's voxel (N,) and which
    voxels have a quadric (M,): every one, or `sample` of them spread evenly over the voxels' order."""
    support, voxel = _voxels(v, side)
    m = support.shape[1]
    fitted = torch.ones(m, dtype=torch.bool)
    if sample is not None and m > sample:
        fitted = torch.zeros(m, dtype=torch.bool)
        fitted[torch.linspace(0, m - 1, sample).long()] = True
    points, rows = support.T.contiguous(), torch.nonzero(fitted).flatten()
    frame, coef = torch.zeros(m, 3, 3), torch.zeros(m, 6)
    for start in range(0, len(rows), _BLOCK):
        block = rows[start : start + _BLOCK]
        near = torch.cdist(points[block], points).topk(min(_NEIGHBOURS, m), dim=1, largest=False).indices
        q = (points[near] - points[block, None]).permute(2, 0, 1)  # (3, B, k) offsets
        frame[block], coef[block] = _quadrics(q)
    normal = frame[:, :, 2].T.contiguous()
    return {
        "point": support,
        "frame": frame,
        "normal": normal,
        "coef": coef,
        "voxel": voxel,
        "fitted": fitted,
    }


def _quadrics(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quadric fits to neighbour offsets q (3, B, K): frames (B, 3, 3) whose columns are the two tangents and
    the normal (the neighbours' least principal axis), and coefficients (B, 6). Weights fall with the distance
    across the surface, to 0 just past the farthest neighbour: by the distance in space, points on the same
    side of the surface as the voxel (noise lifts a voxel off it too) would weigh more and pull the quadric
    towards it. Too few neighbours of weight (`_QUADRIC_MIN`) get a plane."""
    c = q - q.mean(2, keepdim=True)
    _, axes = torch.linalg.eigh(torch.einsum("ibk,jbk->bij", c, c).double())
    frame = axes[:, :, [2, 1, 0]].float()  # columns: widest tangent, second tangent, normal
    x, y, z = torch.einsum("ibk,bij->bkj", q, frame).unbind(-1)  # (B, K) each, in the frame
    across = x * x + y * y
    w = (1.0 - across / (1.05 * across.max(1, keepdim=True).values).clamp(min=1e-12)).square()
    design = torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], dim=-1)  # (B, K, 6)
    plane = (w.sum(1) ** 2 / (w * w).sum(1).clamp(min=1e-12)) < _QUADRIC_MIN  # (B,) too few for a quadric
    design[plane, :, :3] = 0.0
    a = torch.einsum("bki,bk,bkj->bij", design, w, design).double()
    b = torch.einsum("bki,bk,bk->bi", design, w, z).double()
    ridge = 1e-6 * a.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-12)
    eye, curved = torch.eye(6, dtype=a.dtype), torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=a.dtype)
    a = a + ridge[:, None, None] * eye + plane[:, None, None] * torch.diag(curved)
    return frame, torch.linalg.solve(a, b).float()


def _heights(v: torch.Tensor, fit: dict, which: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) each point's height along its voxel's normal above the voxel's quadric; `which`: the points' (N,)
    indices among those `fit` was made from, when they are a subset."""
    voxel = fit["voxel"] if which is None else fit["voxel"][which]
    frame = fit["frame"][voxel]  # (N, 3, 3)
    local = torch.einsum("ni,nij->nj", (v - fit["point"][:, voxel]).T, frame)
    x, y, z = local.unbind(-1)
    k = fit["coef"][voxel]
    return z - (k[:, 0] * x * x + k[:, 1] * x * y + k[:, 2] * y * y + k[:, 3] * x + k[:, 4] * y + k[:, 5])
