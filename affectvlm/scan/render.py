"""Orthographic multiview rendering of scans with a vectorised z-buffer rasteriser written in torch.

The same code runs on CPU and, batched, on a GPU: there is no Python loop over triangles or pixels.

How a frame is rasterised (all scans x views of a call at once):
1. Triangle corners are gathered once in scan space and rotated into every view by one
   (V, 3, 3) @ (3, 3F) matmul; all per-triangle arrays are laid out (V, F) so every op runs on long
   contiguous rows.
2. Each triangle's pixel bounding box is computed. Triangles are bucketed by its size (1, 2, 3, 4,
   6, ... pixels square); within a bucket every triangle tests the same fixed grid of candidate
   pixels by broadcasting, so no per-candidate gather is needed. Triangles at the image border or
   larger than the largest bucket enumerate exactly their own candidates instead. Either way
   candidates are made and scattered in chunks of a bounded count, so memory does not grow with
   the pixels that triangles (or point splats) cover.
3. A candidate inside the triangle (barycentric test with a small tolerance, so that pixel centres
   on a shared edge belong to both triangles and no pinhole appears) gives an int64 key
   `float_bits(depth) << 32 | triangle id`; one `scatter_reduce_(amax)` per chunk keeps the nearest
   triangle per pixel (positive floats compare like their bit patterns; the order of chunks does not
   matter).
4. Only the winning pixels are shaded. Depth is decoded from the key itself; shades and normals are
   interpolated through per-triangle planes (value = c0 + ca x + cb y); textures and colours through
   barycentrics of the winning triangle, recomputed at the pixel.
Point clouds become surfels (points closer than a pixel merged, a normal from a PCA of each surfel's
neighbours, a radius from their density; see "point clouds: surfels" below), splatted as discs that follow
their tangent planes into the same z-buffer; holes (empty pixels surrounded by splats) are filled from
their nearest neighbour, then the normals and depths of the splats on the visible surface are blended.
A cloud too sparse for that (points a pixel apart) is drawn in the shaded modes as the mesh of its frontal
range image.

Frame: view space has x to the right, y up, z towards the camera. A view (yaw, pitch) in degrees
places the camera `yaw` degrees towards the subject's left (+x) and `pitch` degrees above, rotating
about `pivot`. The image covers [-extent, extent] in x and y around the pivot; pixel (i, j) has its
centre at x = (j + 0.5 - W/2) * 2 * extent / W, y = -(i + 0.5 - H/2) * 2 * extent / H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .bnt import grid_to_faces
from .clean import PLACE_PRIMES, point_spacing
from .types import Scan, ScanError

__all__ = [
    "DEFAULT_VIEWS",
    "VIEW_NAMES",
    "MODES",
    "NORMAL_CHANNELS",
    "DEFAULT_EXTENT",
    "DEFAULT_PIVOT",
    "Fragments",
    "view_rotation",
    "rasterize",
    "render_depth",
    "render_views",
    "pixel_centers",
]

# (yaw, pitch) in degrees: frontal, left, right. +-20 degrees follows the multiview 3D FER code of
# the AffectVLM paper's authors (views named 0, +20, -20); keep views configurable (the paper does
# not state its angles).
DEFAULT_VIEWS: tuple[tuple[float, float], ...] = ((0.0, 0.0), (20.0, 0.0), (-20.0, 0.0))
VIEW_NAMES: tuple[str, ...] = ("frontal", "left", "right")
MODES = ("depth", "normal", "normal_map", "shade_normal", "texture")
_SHADED = ("normal", "normal_map", "shade_normal")  # the modes drawn from surface normals
# The image channels of the view-space normal's x and y in each mode that draws them. A mirror image of such a
# view is the view of the mirrored face only with its x channel negated (v -> 1 - v on the face): flipped
# pixels alone show every surface turned the wrong way (augment.py, the model's mirror average).
NORMAL_CHANNELS: dict[str, tuple[int, int]] = {"normal_map": (0, 1), "shade_normal": (1, 2)}
# the window half-width in normalised units: `normalize_scan` puts the face in the unit sphere; the
# 10 % margin keeps the cheeks inside the image in the +-20 degree views
DEFAULT_EXTENT = 1.1
# views rotate about a point half a face radius behind the nose tip (about the face's centre), so
# that the face stays centred in side views instead of swinging around its nose
DEFAULT_PIVOT = (0.0, 0.0, -0.5)
DEFAULT_LIGHT = (0.0, 0.6, 1.0)  # from above, symmetric in x (the mirror test relies on it)

_EPS = 1e-5  # barycentric tolerance: pixel centres on a shared edge are inside both triangles
_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)  # candidate grid sizes, in pixels per side


@dataclass
class Fragments:
    """What the rasteriser found under each pixel.

    Attributes:
        depth: (B, V, H, W) float32 view-space z of the nearest surface (larger = nearer the camera;
            in the scan's units, relative to the pivot); 0 where `mask` is False.
        mask: (B, V, H, W) bool, True where a surface covers the pixel centre.
        face: (B, V, H, W) int64 index of the visible triangle in its scan's `faces` (for point clouds,
            of a point of the visible surfel: one of the points merged into it); -1 on the background.
        bary: (B, V, H, W, 3) float32 barycentric weights of the visible triangle's corners
            (a point cloud's pixel gets (1, 0, 0)).
    """

    depth: torch.Tensor
    mask: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor


def view_rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """(3, 3) float64 rotation from scan coordinates into the view of a camera at (yaw, pitch) degrees."""
    a, b = math.radians(yaw), math.radians(pitch)
    # turn the scene by -yaw about y (the camera moves towards +x), then by pitch about x
    ry = np.array([[math.cos(a), 0.0, -math.sin(a)], [0.0, 1.0, 0.0], [math.sin(a), 0.0, math.cos(a)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(b), -math.sin(b)], [0.0, math.sin(b), math.cos(b)]])
    return rx @ ry


def pixel_centers(size: int, extent: float = DEFAULT_EXTENT) -> tuple[np.ndarray, np.ndarray]:
    """View-space (x, y) of the pixel centres, each (size,) float64: x per column, y per row."""
    step = 2.0 * extent / size
    centres = (np.arange(size) + 0.5 - size / 2.0) * step
    return centres, -centres


def _as_list(scans) -> list[Scan]:
    if isinstance(scans, Scan):
        return [scans]
    scans = list(scans)
    if not scans or not all(isinstance(s, Scan) for s in scans):
        raise TypeError("expected a Scan or a non-empty list of Scans")
    return scans


def _views(views) -> list[tuple[float, float]]:
    views = DEFAULT_VIEWS if views is None else views
    out = []
    for v in views:
        if np.ndim(v) == 0:
            out.append((float(v), 0.0))
        else:
            yaw, pitch = v
            out.append((float(yaw), float(pitch)))
    if not out:
        raise ValueError("views must not be empty")
    return out


def _bucket_offsets(s: int, width: int, device: torch.device):
    """Candidate offsets of an s x s bucket as columns: (s*s, 1) float x, float y, int64 flat pixel offset."""
    key = (s, width, device)
    if key not in _CACHE:
        oy, ox = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        ox, oy = ox.reshape(-1, 1), oy.reshape(-1, 1)
        _CACHE[key] = (ox.float().to(device), oy.float().to(device), (oy * width + ox).to(device))
    return _CACHE[key]


def _bucket_lut(device: torch.device):
    """(34,) uint8 class of a box side 0..33 (sides above the last bucket give _EXACT), and
    (len(_BUCKETS) + 2,) float window side of each class (0 for the two non-bucket classes)."""
    key = ("lut", device)
    if key not in _CACHE:
        lut = torch.bucketize(torch.arange(34), torch.tensor(_BUCKETS)).to(torch.uint8)
        side_of = torch.tensor([*_BUCKETS, 0, 0], dtype=torch.float32)
        _CACHE[key] = (lut.to(device), side_of.to(device))
    return _CACHE[key]


_CACHE: dict = {}
_VALID = 1 << 32  # keys at or above this hold a surface; smaller ones are background or rejected candidates
_EXACT, _HIDDEN = len(_BUCKETS), len(_BUCKETS) + 1  # classes after the buckets
# candidate pixels per scatter on CPU (about 100 bytes of working memory each): bounds the
# rasteriser's memory whatever the triangles' or splats' size; cache-sized chunks are also faster
# than larger ones on CPU
_CHUNK = 1 << 17


def _chunk(device: torch.device) -> int:
    """Candidate pixels per scatter: _CHUNK on CPU, 32x more on accelerators (whose kernels need long
    rows to fill the device)."""
    return _CHUNK if device.type == "cpu" else _CHUNK << 5


def _rows(table, idx: torch.Tensor) -> torch.Tensor:
    """table[:, idx] for an (R, T) table or a list of R contiguous tensors of T elements: one 1D
    gather per row (several times faster on CPU than a 2D index_select along dim 1), no stacking."""
    out = torch.empty(len(table), len(idx), dtype=table[0].dtype, device=table[0].device)
    for r, row in enumerate(table):
        torch.index_select(row.reshape(-1), 0, idx, out=out[r])
    return out


def _tensor(array: np.ndarray, device) -> torch.Tensor:
    """torch view of a numpy array (copied first when read-only, e.g. an image decoded by PIL)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy()).to(device)


def _flatnonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a 1D bool tensor (numpy's is ~10x faster on CPU)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _floor_div(x: torch.Tensor, d: int) -> torch.Tensor:
    """x // d for non-negative int64 x below 2^40, through float64 (int64 division is slow on CPU)."""
    return torch.floor((x.double() + 0.5) * (1.0 / d)).long()


class _Batch:
    """The scans of one call concatenated, with everything the views share."""

    def __init__(self, scans, views, size, extent, pivot, device, need_normals):
        self.scans, self.size, self.nv, self.device = scans, size, len(views), device
        self.extent = extent
        counts = [s.num_vertices for s in scans]
        self.vstart = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.nverts = int(self.vstart[-1])
        verts = np.concatenate([s.vertices for s in scans]) if len(scans) > 1 else scans[0].vertices
        # (3, N): coordinate rows keep every op on long contiguous rows (numpy transposes ~5x faster)
        verts = np.ascontiguousarray(verts.T) - np.asarray(pivot, dtype=np.float32)[:, None]
        self.verts = torch.from_numpy(verts).to(device)
        rot = torch.tensor(np.stack([view_rotation(*v) for v in views]), dtype=torch.float32, device=device)
        scale = size / (2.0 * extent)
        self.rot = rot  # (V, 3, 3) scan -> view space
        # scan -> pixel units: x right, y down (rows grow downwards), z unscaled
        self.pixel_rot = rot * torch.tensor([scale, -scale, 1.0], device=device)[None, :, None]
        # depth keys need positive floats; a rotation keeps norms, so z + max |v| + 1 >= 1 in every view
        self.zshift = 1.0 + float((self.verts * self.verts).sum(0).amax().sqrt()) if self.nverts else 1.0
        self.mesh_scans = [i for i, s in enumerate(scans) if not s.is_point_cloud]
        self.point_scans = [i for i, s in enumerate(scans) if s.is_point_cloud]
        self.normals = None
        self.nf = 0
        if self.mesh_scans:
            faces = [scans[i].faces + self.vstart[i] for i in self.mesh_scans]
            faces = np.concatenate(faces) if len(faces) > 1 else faces[0]
            self.nf = len(faces)
            self.faces_t = torch.from_numpy(np.ascontiguousarray(faces.T)).to(device)  # (3, F) global ids
            fcounts = [scans[i].num_faces for i in self.mesh_scans]
            self.fstart = np.concatenate([[0], np.cumsum(fcounts)]).astype(np.int64)
            self.face_scan = torch.repeat_interleave(
                torch.tensor(self.mesh_scans, device=device), torch.tensor(fcounts, device=device)
            )  # (F,) scan index of each face
            # triangle ids (view * F + face) live in the low 31 bits of a z-buffer key
            if self.nv * self.nf >= 2**31:
                raise ValueError(
                    f"too many faces x views in one call ({self.nf} x {self.nv}): split the batch"
                )
            # corners in scan space, corner-major: (3 xyz, 3 corners * F)
            self.corners = _rows(self.verts, self.faces_t.reshape(-1))
            if need_normals:
                self.normals = self._vertex_normals()

    def _vertex_normals(self) -> torch.Tensor:
        """(3, N) area-weighted vertex normals, not normalised (shading normalises per pixel)."""
        nf = self.nf
        c = self.corners.view(3, 3, nf)
        e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]  # (3, F)
        fn = torch.stack(
            [e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]]
        )  # (3, F), length = 2 * area
        n = torch.zeros(3, self.nverts, device=self.device)
        for k in range(3):  # each corner receives its face's normal
            n.index_add_(1, self.faces_t[k], fn)
        return _shared_by_place(n, self.verts, self.vstart)


def _shared_by_place(normals: torch.Tensor, verts: torch.Tensor, vstart: np.ndarray) -> torch.Tensor:
    """(3, N) vertex normals, those of vertices at one place in one scan summed: an unwelded mesh (STL, a
    triangle soup, uv seams split per corner) is shaded as the smooth surface it samples, not triangle by
    triangle. Places are told apart by a 64-bit hash of their coordinates' bits (and the scan), so that a
    million vertices take milliseconds rather than the seconds a sort of coordinate rows takes."""
    if verts.shape[1] < 2:
        return normals
    bits = verts.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # (3, N): -0.0 and 0.0 differ
    scan = torch.repeat_interleave(
        torch.arange(len(vstart) - 1, device=verts.device), torch.from_numpy(np.diff(vstart)).to(verts.device)
    )
    key = ((bits[0] * _PRIMES[0]) ^ (bits[1] * _PRIMES[1])) ^ ((bits[2] * _PRIMES[2]) ^ (scan * _PRIMES[3]))
    key, order = torch.sort(key)
    new_place = torch.ones_like(key, dtype=torch.bool)
    new_place[1:] = key[1:] != key[:-1]
    if bool(new_place.all()):  # every vertex its own place: a welded mesh, as every training scan
        return normals
    inverse = torch.empty_like(order)
    inverse[order] = torch.cumsum(new_place, 0) - 1
    summed = torch.zeros(3, int(inverse.max()) + 1, dtype=normals.dtype, device=normals.device)
    return summed.index_add_(1, inverse, normals)[:, inverse]


_PRIMES = tuple(p - 2**64 if p >= 2**63 else p for p in PLACE_PRIMES)  # as torch's int64 takes them


@dataclass
class _Triangles:
    """Every triangle in every view, in pixel units, each (V, F) (the boxes (V, 2, F) for x, y).

    j0, j1: bounding box of the pixel indices it may cover (pixel j has its centre at j - half);
    x0, y0, z0: corner 0 (z shifted positive); area: twice the signed area. Barycentrics and depth
    are linear in the offset (dx, dy) from corner 0: w1 = a1 dx + b1 dy, w2 = a2 dx + b2 dy,
    z = z0 + az dx + bz dy.
    """

    j0: torch.Tensor
    j1: torch.Tensor
    x0: torch.Tensor
    y0: torch.Tensor
    z0: torch.Tensor
    area: torch.Tensor
    a1: torch.Tensor
    b1: torch.Tensor
    a2: torch.Tensor
    b2: torch.Tensor
    az: torch.Tensor
    bz: torch.Tensor


def _triangles(b: _Batch) -> _Triangles:
    """Project every mesh face into every view."""
    nv, nf, half = b.nv, b.nf, b.size / 2.0 - 0.5
    p = torch.matmul(b.pixel_rot, b.corners).view(nv, 3, 3, nf)  # (V, xyz, corner, F)
    xy = p[:, :2]
    j0 = torch.ceil(torch.minimum(torch.minimum(xy[:, :, 0], xy[:, :, 1]), xy[:, :, 2]) + half)
    j1 = torch.floor(torch.maximum(torch.maximum(xy[:, :, 0], xy[:, :, 1]), xy[:, :, 2]) + half)
    e = p[:, :, 1:] - p[:, :, :1]  # (V, xyz, 2 edges, F): p1 - p0, p2 - p0
    e1x, e2x, e1y, e2y = e[:, 0, 0], e[:, 0, 1], e[:, 1, 0], e[:, 1, 1]
    x0, y0, z0 = p[:, 0, 0], p[:, 1, 0], p[:, 2, 0] + b.zshift
    area = e1x * e2y - e1y * e2x
    inv = 1.0 / area
    a1, b1, a2, b2 = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
    az, bz = a1 * e[:, 2, 0] + a2 * e[:, 2, 1], b1 * e[:, 2, 0] + b2 * e[:, 2, 1]
    return _Triangles(j0, j1, x0, y0, z0, area, a1, b1, a2, b2, az, bz)


def _classify(t: _Triangles, size: int) -> tuple[torch.Tensor, list[int]]:
    """The visible triangles' linear ids (view * F + face) sorted by class, and each class's count."""
    nv, nf = t.x0.shape
    lut, side_of = _bucket_lut(t.x0.device)
    ext = t.j1 - t.j0  # (V, 2, F) box side - 1
    side = torch.maximum(ext[:, 0], ext[:, 1]) + 1
    cls = torch.index_select(lut, 0, side.clamp(0, 33).long().view(-1)).view(nv, nf)
    s = torch.index_select(side_of, 0, cls.long().view(-1)).view(nv, nf)
    j0min, j0max = t.j0.amin(1), t.j0.amax(1)
    visible = (t.area != 0) & (ext.amin(1) >= 0) & (t.j1.amin(1) >= 0) & (j0max <= size - 1)
    # the whole s x s window must lie in the image for the broadcast path
    fits = (j0min >= 0) & (j0max + s <= size)
    cls = torch.where(fits, cls, _EXACT)
    cls = torch.where(visible, cls, _HIDDEN).view(-1)
    order = torch.argsort(cls)  # uint8 keys sort fast
    counts = torch.bincount(cls, minlength=_HIDDEN + 1).tolist()
    return order[: sum(counts[:_HIDDEN])], counts


def _bucket_pass(zb, t: _Triangles, tid: torch.Tensor, counts: list[int], img: torch.Tensor, size: int):
    """Rasterise the bucketed triangles `tid` (linear ids sorted by bucket, `counts[k]` in bucket k):
    each tests the s x s candidate pixels of its bucket from its box's corner by broadcasting, in
    scatters of at most `_chunk` candidates (or one triangle), so no per-candidate gather is needed."""
    half = size / 2.0 - 0.5
    # per-triangle rows with barycentrics and depth at the window's first pixel centre
    bx, by = t.j0[:, 0] - half - t.x0, t.j0[:, 1] - half - t.y0
    pbase = (img * (size * size)).add_(t.j0[:, 1].long() * size).add_(t.j0[:, 0].long())
    w1o = torch.addcmul(t.a1 * bx, t.b1, by)
    w2o = torch.addcmul(t.a2 * bx, t.b2, by)
    zo = torch.addcmul(torch.addcmul(t.z0, t.az, bx), t.bz, by)
    table = _rows([w1o, w2o, zo, t.a1, t.a2, t.az, t.b1, t.b2, t.bz], tid)  # (9, T)
    pbase = torch.index_select(pbase.view(-1), 0, tid)
    end = 0
    for s, cnt in zip(_BUCKETS, counts):
        start, end = end, end + cnt
        ox, oy, poff = _bucket_offsets(s, size, zb.device)  # (s*s, 1) each
        step = max(1, _chunk(zb.device) // (s * s))
        for lo in range(start, end, step):
            sl = slice(lo, min(lo + step, end))
            r = table[:, None, sl]  # (9, 1, Tc)
            # (3, s*s, Tc): w1, w2, depth at every candidate pixel; triangles stay the contiguous axis
            w = torch.addcmul(torch.addcmul(r[0:3], r[3:6], ox), r[6:9], oy)
            inside = (torch.minimum(w[0], w[1]) >= -_EPS) & (w[0] + w[1] <= 1.0 + _EPS)
            # rejected candidates get depth 0 and so a key below _VALID that never beats a surface
            key = (w[2] * inside).view(torch.int32).long()
            key <<= 32
            key |= tid[None, sl]
            pix = pbase[None, sl] + poff
            zb.scatter_reduce_(0, pix.view(-1), key.view(-1), reduce="amax")


def _runs(per: torch.Tensor) -> list[tuple[int, int]]:
    """Split items of `per` candidates each into consecutive runs [lo, hi) of the items whose first
    candidate falls in one window of `_chunk` candidates: a run exceeds the chunk by less than its
    last item's count."""
    first = torch.cumsum(per, 0) - per
    total = int(first[-1] + per[-1])
    windows = torch.arange(0, total, _chunk(per.device), device=per.device)
    cuts = [*torch.searchsorted(first, windows).tolist(), len(per)]
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]


def _exact_pass(zb, t: _Triangles, sel: torch.Tensor, img: torch.Tensor, size: int):
    """Rasterise the triangles `sel` (linear ids; at the image border or larger than the last bucket)
    by enumerating exactly the candidates in their boxes clipped to the image, in scatters of about
    `_chunk` candidates (at most the chunk + H * W), whatever the triangles' size."""
    dev, half = zb.device, size / 2.0 - 0.5
    box = _rows(torch.cat([t.j0, t.j1], 1).permute(1, 0, 2).reshape(4, -1), sel)
    cj0x, cj0y = box[0].clamp(min=0), box[1].clamp(min=0)
    nx = (box[2].clamp(max=size - 1) - cj0x + 1).long()
    ny = (box[3].clamp(max=size - 1) - cj0y + 1).long()
    per = nx * ny
    table = [t.x0.contiguous(), t.y0.contiguous(), t.z0, t.a1, t.a2, t.az, t.b1, t.b2, t.bz]
    img = img.reshape(-1)
    for lo, hi in _runs(per):
        run = per[lo:hi]
        which = torch.repeat_interleave(run)  # (C,) position in the run of each candidate
        first = torch.cumsum(run, 0) - run
        local = torch.arange(len(which), device=dev) - torch.index_select(first, 0, which)
        which += lo
        nxw = torch.index_select(nx, 0, which)
        oy = torch.div(local, nxw, rounding_mode="floor")
        ox = local - oy * nxw
        tri = torch.index_select(sel, 0, which)
        gx = torch.index_select(cj0x, 0, which) + ox
        gy = torch.index_select(cj0y, 0, which) + oy
        rows = _rows(table, tri)
        dx, dy = gx - half - rows[0], gy - half - rows[1]
        w1, w2 = rows[3] * dx + rows[6] * dy, rows[4] * dx + rows[7] * dy
        z = rows[2] + rows[5] * dx + rows[8] * dy
        inside = (torch.minimum(w1, w2) >= -_EPS) & (w1 + w2 <= 1.0 + _EPS)
        key = ((z * inside).view(torch.int32).long() << 32) | tri
        pix = torch.index_select(img, 0, tri) * (size * size) + gy.long() * size + gx.long()
        zb.scatter_reduce_(0, pix, key, reduce="amax")


def _mesh_zbuffer(b: _Batch, zb: torch.Tensor, vattr: torch.Tensor | None = None):
    """Rasterise every mesh face in every view into `zb` ((B*V*H*W,) int64 keys).

    Working memory is bounded by `_chunk` candidate pixels per scatter, not by the triangles' size.

    Args:
        vattr: optional (C, V * N) per-view vertex attributes (row c, column view * N + vertex) to
            turn into per-triangle planes, so a pixel's linearly interpolated value costs three
            gathers and two multiply-adds, with no barycentrics (Gouraud-style interpolation).

    Returns:
        (bary_rows, planes): the rows x0, y0, a1, a2, b1, b2 (each (V*F,)) that recover
        barycentrics at a pixel, and None or (c0, ca, cb) each (C, V*F) with value = c0 + ca * px
        + cb * py at pixel centre (px, py) = (col - half, row - half). A key's triangle id is
        view * F + face.
    """
    dev, size, nv = b.device, b.size, b.nv
    t = _triangles(b)
    order, counts = _classify(t, size)
    img = torch.arange(nv, device=dev)[:, None] + b.face_scan[None, :] * nv  # (V, F) image of each triangle
    nb = sum(counts[:_EXACT])
    if nb:
        _bucket_pass(zb, t, order[:nb], counts[:_EXACT], img, size)
    if counts[_EXACT]:
        _exact_pass(zb, t, order[nb:], img, size)
    x0, y0 = t.x0.reshape(-1), t.y0.reshape(-1)
    a1, a2, b1, b2 = t.a1.view(-1), t.a2.view(-1), t.b1.view(-1), t.b2.view(-1)
    planes = None
    if vattr is not None:
        views = torch.arange(nv, device=dev)[:, None] * b.nverts
        att = [_rows(vattr, (b.faces_t[k][None, :] + views).view(-1)) for k in range(3)]  # (C, V*F) each
        d1, d2 = att[1] - att[0], att[2] - att[0]
        ca = a1 * d1 + a2 * d2
        cb = b1 * d1 + b2 * d2
        planes = (att[0] - ca * x0 - cb * y0, ca, cb)
    return [x0, y0, a1, a2, b1, b2], planes


# --- point clouds: surfels ---------------------------------------------------------------------------------
# A point cloud is rendered as surfels. Points in one voxel of a pixel's side are merged (their mean; where
# the normals come out noisy, e.g. a noisy dense scan at 224 px, the voxels grow, up to 4x). Every surfel gets
# a normal from a weighted PCA of its neighbours within about twice the typical spacing (found through a grid
# of cells, no all-pairs distances, in blocks of bounded size) and a splat radius from their density (so a
# cloud denser in some parts than others gets small splats there and large ones elsewhere). Splats are discs
# whose depth follows the tangent plane; the nearest wins each pixel, holes are filled, and a second pass
# blends the normals and depths of all splats that lie on the visible surface at a pixel (within a depth
# tolerance of the nearest), weighted exp(-3 d^2 / r^2) over twice the radius, so the shading is smooth
# across splats instead of one flat disc per point. Sums are in fixed point, so the result does not depend
# on the order they are taken in (chunks, threads, a GPU's atomic adds).
_MERGE_PIXELS = 1.0  # points in one voxel of this side (in pixels) are merged into one surfel
_NORMAL_ERROR = 0.03  # radians: voxels grow (at most _MAX_MERGE_GROWTH times) while normals are noisier
_MAX_MERGE_GROWTH = 4.0
_CELL_CAP = 8  # neighbours taken from one cell of the neighbour grid (its side is chosen so few hold more)
_NEIGHBOUR_SPACINGS = 2.0  # neighbours within about this many typical spacings: ~12 on a surface
_SPLAT_SCALE = 1.25  # splat radius / local point spacing: ~0.7 % of a random sampling left open (then filled)
_BLEND_DEPTH = 1.5  # splats within this many blending radii behind the nearest surface are blended
_BLEND_GROW = 2.0  # splats blend over this many times their radius (weights exp(-3 d^2 / radius^2))
_MIN_RADIUS = 1.0  # pixels: an estimated splat covers at least its 4-neighbours
_MIN_BLEND = 1.5  # pixels: and blends over at least this radius
_MAX_SLOPE = 3.0  # a splat's depth changes by at most this many scan units per unit across the view
_FIX = float(1 << 20)  # fixed-point scale of merged and blended sums: integer sums do not depend on order
_ROW_BLOCK = 4096  # surfels per block of the neighbour search: a fixed size, so results never depend on it
_HALF_GRID = 1 << 19  # grid cells are counted from -_HALF_GRID cells about the pivot, 20 bits per axis


@dataclass
class _Surfels:
    """The point clouds of a batch as surfels, each (M,) or (3, M) in scan space relative to the pivot."""

    pos: torch.Tensor  # (3, M) positions
    normal: torch.Tensor  # (3, M) unit normals, 0 where unknown (no neighbour spans a plane)
    radius: torch.Tensor  # (M,) splat radii in the scan's units
    member: torch.Tensor  # (M,) global vertex index of one point merged into each surfel
    scan: torch.Tensor  # (M,) scan index in the batch


def _grid(p: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cells of side h of (3, N) points: (3, N) float64 position in cells and (N,) int64 key of the cell."""
    f = p.double().mul_(1.0 / h).add_(float(_HALF_GRID))
    c = torch.floor(f).clamp_(0, 2 * _HALF_GRID - 1).long()
    return f, (c[0] << 40) | (c[1] << 20) | c[2]


def _merge(p: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (3, N) merged per voxel of side h: (3, M) mean positions and (M,) index of a point of each."""
    n = p.shape[1]
    f, key = _grid(p, h)
    uniq, inv, counts = torch.unique(key, return_inverse=True, return_counts=True)
    if len(uniq) == n:
        return p, torch.arange(n, device=p.device)
    cell = torch.stack([uniq >> 40, (uniq >> 20) & 0xFFFFF, uniq & 0xFFFFF])  # (3, M)
    # offsets within the cell in fixed point: an exact integer sum, the same in any order (GPU atomics too)
    frac = (f - torch.floor(f)).clamp_(0.0, 1.0).mul_(_FIX).round_().long()
    sums = torch.zeros(len(uniq), 3, dtype=torch.long, device=p.device).index_add_(0, inv, frac.T)
    mean = cell.double() + sums.T.double() / (counts.double() * _FIX)
    pos = ((mean - _HALF_GRID) * h).float()
    first = torch.full((len(uniq),), n, device=p.device).scatter_reduce_(
        0, inv, torch.arange(n, device=p.device), "amin"
    )
    return pos, first


def _typical_spacing(p: torch.Tensor, h: float) -> float:
    """The typical distance between neighbouring points (3, M) of a surface, from the area of the cells (of
    side doubling from 2h) that they occupy: the first side at which cells hold 8 points on average."""
    m, side = p.shape[1], 2.0 * h
    for _ in range(24):
        occupied = len(torch.unique(_grid(p, side)[1]))
        if m >= 8 * occupied or occupied == 1:
            break
        side *= 2.0
    return side * math.sqrt(occupied / m)


# the 27 cells around a cell, as (3, 27) offsets
_NEIGHBOUR_CELLS = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij")).reshape(3, -1)


def _neighbour_grid(p: torch.Tensor, g: float) -> tuple[float, dict]:
    """The surfels (3, M) sorted into cells of side about g, shrunk until at most one cell in 20 holds more
    than `_CELL_CAP` (so the capped 3 x 3 x 3 cells around a surfel hold nearly all its neighbours within
    the side): the side, and the grid (order, sorted cell coordinates, cell keys, starts and counts)."""
    for _ in range(12):
        f, key = _grid(p, g)
        order = torch.argsort(key, stable=True)
        ukey, counts = torch.unique_consecutive(key[order], return_counts=True)
        if int(torch.kthvalue(counts, max(1, math.ceil(0.95 * len(counts))))[0]) <= _CELL_CAP:
            break
        g *= 0.8
    starts = torch.cumsum(counts, 0) - counts
    grid = {"order": order, "cell": torch.floor(f[:, order]).long(), "ukey": ukey, "starts": starts}
    return g, {**grid, "counts": counts}


def _neighbour_table(grid: dict, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 27 * cap) indices into the cell-sorted surfels of the neighbours of the sorted surfels `rows` (in
    every cell around theirs, at most `_CELL_CAP` of each), and the (B, 27 * cap) mask of the real ones."""
    cell, ukey = grid["cell"], grid["ukey"]
    c = cell[:, rows, None] + _NEIGHBOUR_CELLS.to(cell.device)[:, None, :]  # (3, B, 27)
    key = (c[0] << 40) | (c[1] << 20) | c[2]
    at = torch.searchsorted(ukey, key).clamp_(max=len(ukey) - 1)
    n = torch.where(ukey[at] == key, grid["counts"][at].clamp(max=_CELL_CAP), 0)
    slot = torch.arange(_CELL_CAP, device=cell.device)
    idx = grid["starts"][at][..., None] + slot  # (B, 27, cap)
    valid = slot < n[..., None]
    return torch.where(valid, idx, 0).flatten(1), valid.flatten(1)


def _neighbours(sp: torch.Tensor, grid: dict, g: float, rows: torch.Tensor):
    """The neighbours within g of the cell-sorted surfels `rows`: (B, K) indices into the sorted surfels
    `sp` (3, M), (3, B, K) offsets from the surfel, and (B, K) weights (1 - d^2 / g^2)^2, 0 beyond g."""
    idx, valid = _neighbour_table(grid, rows)
    q = _rows(sp, idx.view(-1)).view(3, *idx.shape).sub_(sp[:, rows, None])
    w = (1.0 - (q * q).sum(0) / (g * g)).clamp_(min=0.0).square_() * valid
    return idx, q, w


def _local_frames(p: torch.Tensor, g: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Normals and local spacing of surfels (3, M) from their neighbours within about g.

    Returns (3, M) unit normals, the least principal axis of the neighbours weighted (1 - d^2 / g^2)^2
    (where they do not span a plane, fewer than 4 or along a line, the nearest such neighbour's; 0 without
    one); (M,) the spacing of the points about each surfel: sqrt(area / count) of the neighbours within g,
    the disc's area reduced where the weighted centroid of the neighbours lies off the surfel (at the edge
    of the cloud only part of the disc holds points: half of it at a straight edge, where the centroid lies
    0.29 g off); and the median over the surfels of the normals' expected error (radians): sqrt(least /
    largest variance / neighbours).
    """
    m, dev = p.shape[1], p.device
    g, grid = _neighbour_grid(p, g)
    sp = p[:, grid["order"]]
    normal, spacing = torch.zeros(3, m, device=dev), torch.zeros(m, device=dev)
    error = torch.zeros(m, dtype=torch.float64, device=dev)
    for lo in range(0, m, _ROW_BLOCK):
        hi = min(lo + _ROW_BLOCK, m)
        _, q, w = _neighbours(sp, grid, g, torch.arange(lo, hi, device=dev))
        total = w.sum(1).clamp(min=1e-30)
        mean = (q * w).sum(2) / total  # (3, B)
        q = q - mean[:, :, None]
        values, axes = torch.linalg.eigh(torch.einsum("ibk,jbk->bij", q * w, q).double())
        count = (w > 0).sum(1)
        normal[:, lo:hi] = axes[:, :, 0].float().T * ((count >= 4) & (values[:, 1] > 0.05 * values[:, 2]))
        inside = (1.0 - mean.norm(dim=0) / (0.58 * g)).clamp_(0.25, 1.0)  # the disc's part that holds points
        spacing[lo:hi] = g * torch.sqrt(math.pi * inside / count.clamp(min=1))
        effective = (total * total / (w * w).sum(1).clamp(min=1e-30)).double()
        error[lo:hi] = torch.sqrt(values[:, 0].clamp(min=0.0) / values[:, 2].clamp(min=1e-30) / effective)
    _borrow_normals(sp, grid, g, normal)
    out_n, out_s = torch.empty_like(normal), torch.empty_like(spacing)
    out_n[:, grid["order"]], out_s[grid["order"]] = normal, spacing
    return out_n, out_s, float(error.median())


def _borrow_normals(sp: torch.Tensor, grid: dict, g: float, normal: torch.Tensor) -> None:
    """Give the cell-sorted surfels without a normal (0 in `normal` (3, M), in place) the normal of their
    nearest neighbour (the largest weight) that has one."""
    unknown = _flatnonzero((normal == 0).all(0))
    for lo in range(0, len(unknown), _ROW_BLOCK):
        rows = unknown[lo : lo + _ROW_BLOCK]
        idx, _, w = _neighbours(sp, grid, g, rows)
        around = _rows(normal, idx.view(-1)).view(3, *idx.shape)  # (3, B, K)
        best = (w * (around != 0).any(0)).argmax(1)  # (B,)
        normal[:, rows] = torch.gather(around, 2, best.view(1, -1, 1).expand(3, -1, 1))[:, :, 0]


def _surfels(b: _Batch, pixel: float) -> _Surfels:
    """Every point-cloud scan of the batch as surfels, for pixels of side `pixel` (scan units).

    Points are merged per voxel of one pixel; where that leaves the normals noisy (a noisy dense scan seen
    at a large size), the voxels grow so that each surfel averages more points and its plane spans more of
    them (the error falls about as the voxel's side to the power 1.5).
    """
    parts = []
    for i in b.point_scans:
        lo, hi = int(b.vstart[i]), int(b.vstart[i + 1])
        voxel = pixel * _MERGE_PIXELS
        for attempt in range(2):
            pos, member = _merge(b.verts[:, lo:hi], voxel)
            typical = _typical_spacing(pos, voxel)
            normal, spacing, error = _local_frames(pos, _NEIGHBOUR_SPACINGS * typical)
            if error <= _NORMAL_ERROR or attempt:
                break
            voxel *= min(_MAX_MERGE_GROWTH, (error / _NORMAL_ERROR) ** (2.0 / 3.0))
        radius = _SPLAT_SCALE * torch.minimum(spacing, 2.0 * spacing.median())
        scan = torch.full_like(member, i)
        parts.append((pos, normal, radius, member + lo, scan))
    return _Surfels(*[torch.cat(x, -1) if len(parts) > 1 else x[0] for x in zip(*parts)])


def _splat_table(b: _Batch, s: _Surfels, radius: float | None) -> dict:
    """Every surfel in every view, each (V * M,) (item view * M + surfel): centre cx, cy in pixels, depth z
    (shifted positive) and its slopes sx, sy per pixel, coverage radius r and blending radius rb in pixels,
    depth tolerance tol, unit normal nx, ny, nz facing the camera and whether it is known, and the first
    pixel of the item's image in the z-buffer (base) and among the point-cloud images only (pbase)."""
    nv, size, dev = b.nv, b.size, b.device
    scale, half = size / (2.0 * b.extent), size / 2.0 - 0.5
    pos = torch.matmul(b.pixel_rot, s.pos)  # (V, 3, M) pixel units
    n = torch.matmul(b.rot, s.normal)  # (V, 3, M) view space
    n = n * torch.where(n[:, 2:] < 0, -1.0, 1.0)  # towards the camera
    known = (n * n).sum(1, keepdim=True) > 0.25  # the others get the view direction, and no say in blends
    n = torch.where(known, n, torch.tensor([[0.0], [0.0], [1.0]], device=dev))
    nz = n[:, 2].clamp(min=1e-6)
    gx = (-n[:, 0] / nz).clamp_(-_MAX_SLOPE, _MAX_SLOPE)  # dz/dx in scan units
    gy = (-n[:, 1] / nz).clamp_(-_MAX_SLOPE, _MAX_SLOPE)
    if radius is None:
        r = (s.radius * scale).clamp(max=max(8.0, size / 8.0)).expand(nv, -1)
    else:
        r = torch.full(pos[:, 0].shape, float(radius), device=dev)
    # blending reaches further than coverage (smooth shading, the same outline), at most 8 pixels further
    rb = torch.minimum(_BLEND_GROW * r, r + 8.0).clamp(min=_MIN_BLEND)
    r = r.clamp(min=_MIN_RADIUS if radius is None else 0.71)  # 0.71: the nearest pixel centre, always
    view = torch.arange(nv, device=dev)[:, None]
    rank = torch.zeros(len(b.scans), dtype=torch.long, device=dev)
    rank[b.point_scans] = torch.arange(len(b.point_scans), device=dev)
    base = (s.scan[None, :] * nv + view) * (size * size)
    pbase = (rank[s.scan][None, :] * nv + view) * (size * size)
    t = {
        "cx": pos[:, 0] + half, "cy": pos[:, 1] + half, "z": pos[:, 2] + b.zshift,
        "sx": gx / scale, "sy": -gy / scale, "r": r, "tol": _BLEND_DEPTH * rb / scale,
        "nx": n[:, 0], "ny": n[:, 1], "nz": n[:, 2], "known": known[:, 0].float(), "rb": rb,
        "base": base, "pbase": pbase,
    }  # fmt: skip
    return {k: v.reshape(-1).contiguous() for k, v in t.items()}


def _splat_chunks(t: dict, size: int, radius: str = "r"):
    """Yield (items, pix, inside, d2, z) per chunk of at most `_chunk` candidate pixels (or one item): the
    items' (I,) ids, and per candidate (side^2, I) its flat pixel index in its image (row * size + column),
    whether it lies in the disc of radius t[radius] and in the image, its squared distance from the centre
    over the radius squared, and the tangent-plane depth there."""
    r, cx, cy = t[radius], t["cx"], t["cy"]
    seen = _flatnonzero((cx + r >= 0) & (cx - r <= size - 1) & (cy + r >= 0) & (cy - r <= size - 1))
    side = torch.floor(2.0 * torch.index_select(r, 0, seen)).long() + 1  # pixel centres within r: at most
    order = torch.index_select(seen, 0, torch.argsort(side, stable=True))  # the items in the image by side
    sides, counts = torch.unique_consecutive(torch.sort(side, stable=True)[0], return_counts=True)
    end = 0
    for s, cnt in zip(sides.tolist(), counts.tolist()):
        start, end = end, end + cnt
        ox, oy, _ = _bucket_offsets(s, size, side.device)  # (s*s, 1)
        step = max(1, _chunk(side.device) // (s * s))
        for lo in range(start, end, step):
            items = order[lo : min(lo + step, end)]
            cx, cy, r, z, sx, sy = _rows([t[k] for k in ("cx", "cy", radius, "z", "sx", "sy")], items)
            x, y = torch.ceil(cx - r) + ox, torch.ceil(cy - r) + oy  # (s*s, I) pixel indices
            dx, dy = x - cx, y - cy
            d2 = (dx * dx + dy * dy) / (r * r)
            inside = (d2 <= 1.0) & (x >= 0) & (x < size) & (y >= 0) & (y < size)
            zc = torch.addcmul(torch.addcmul(z, sx, dx), sy, dy).clamp_(min=1e-30)
            pix = y.clamp(0, size - 1).long() * size + x.clamp(0, size - 1).long()
            yield items, pix, inside, d2, zc


def _point_zbuffer(b: _Batch, zb: torch.Tensor, radius: float | None, fill_holes: int) -> dict:
    """Splat every point-cloud scan as surfels into `zb`; returns the splat table with "acc", the blended
    sums per pixel of the point-cloud images ((len(b.point_scans) * V * H * W, 5) int64 fixed-point weight,
    weight x normal (3) and weight x depth offset in pixels from the nearest splat), and "member", the
    global vertex index of each surfel.

    Point key ids are 2^31 + view * M + surfel (above every triangle id); each pass scatters at most
    `_chunk` candidate pixels at a time, whatever the radius.
    """
    dev, size, nv = b.device, b.size, b.nv
    if radius is not None and not 0.0 <= radius <= size:
        raise ValueError(f"point_radius must be between 0 and the image size ({size}), got {radius}")
    scale = size / (2.0 * b.extent)
    s = _surfels(b, 1.0 / scale)
    if nv * s.pos.shape[1] >= 2**31:
        raise ValueError(f"too many points x views in one call ({s.pos.shape[1]} x {nv}): split the batch")
    t = _splat_table(b, s, radius)
    for items, pix, inside, _, z in _splat_chunks(t, size):  # visibility: the nearest splat per pixel
        key = (z * inside).view(torch.int32).long()
        key <<= 32
        key |= items + 2**31
        pix += torch.index_select(t["base"], 0, items)
        zb.scatter_reduce_(0, pix.view(-1), key.view(-1), reduce="amax")
    if fill_holes:  # before blending, so that the filled pixels blend too
        images = torch.tensor([i * nv + v for i in b.point_scans for v in range(nv)], device=dev)
        _fill_holes(zb, images, size, fill_holes)
    acc = torch.zeros(len(b.point_scans) * nv * size * size, 5, dtype=torch.long, device=dev)
    for items, pix, inside, d2, z in _splat_chunks(t, size, "rb"):  # blend the splats on the visible surface
        front = torch.index_select(zb, 0, (pix + torch.index_select(t["base"], 0, items)).view(-1))
        front = (front >> 32).to(torch.int32).view(torch.float32).view(pix.shape)  # 0: not covered
        nx, ny, nz, tol, known = _rows([t[k] for k in ("nx", "ny", "nz", "tol", "known")], items)
        w = torch.exp(-3.0 * d2) * (inside & (front > 0) & (z >= front - tol))
        wn = w * known
        vals = torch.stack([w, wn * nx, wn * ny, wn * nz, w * (z - front) * scale], -1)
        pix += torch.index_select(t["pbase"], 0, items)
        acc.index_add_(0, pix.view(-1), vals.mul_(_FIX).round_().long().view(-1, 5))
    t.update(acc=acc, member=s.member, m=s.pos.shape[1], scale=scale)
    return t


def _point_values(out: dict, t: dict) -> None:
    """Blended normals ("pnormal", (3, P), view space, 0 for triangles), depths and point ids ("point") of
    the point pixels of `out` (from `_rasterize_flat`), from the splat table of `_point_zbuffer`."""
    pts = _flatnonzero(~out["is_tri"])
    item = torch.index_select(out["id"], 0, pts) - 2**31
    surfel = item - _floor_div(item, t["m"]) * t["m"]
    pix = torch.index_select(out["pix"], 0, pts)
    pix += torch.index_select(t["pbase"] - t["base"], 0, item)  # the pixel among the point-cloud images
    a = torch.index_select(t["acc"], 0, pix).T.double()  # (5, S)
    w = a[0]
    blended = w > 0  # pixels that no splat blends into (rare: a filled pixel beyond them all) keep the winner
    own = _rows([t[k] for k in ("nx", "ny", "nz")], item)
    normal = torch.where((a[1:4] != 0).any(0), (a[1:4] / w.clamp(min=1.0)).float(), own)
    offset = torch.where(blended, a[4] / w.clamp(min=1.0), 0.0).float() / t["scale"]
    out["depth"].index_add_(0, pts, offset)
    out["pnormal"] = torch.zeros(3, len(out["pix"]), device=normal.device).index_copy_(1, pts, normal)
    point = torch.zeros_like(out["id"])
    out["point"] = point.index_copy_(0, pts, torch.index_select(t["member"], 0, surfel))


def _fill_holes(zb: torch.Tensor, images: torch.Tensor, size: int, iterations: int, min_neighbours: int = 4):
    """Fill empty pixels of the given images from their nearest (largest-key) 8-neighbour.

    A pixel is filled only when at least `min_neighbours` of its 8 neighbours are covered, so holes
    between splats close while the outline of the cloud barely grows.
    """
    grid = zb.view(-1, size, size)
    sub = grid[images]  # (I, H, W) copy
    for _ in range(iterations):
        padded = torch.nn.functional.pad(sub, (1, 1, 1, 1), value=0)
        best = torch.zeros_like(sub)
        count = torch.zeros(sub.shape, dtype=torch.int32, device=sub.device)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                if dy == 1 and dx == 1:
                    continue
                nb = padded[:, dy : dy + size, dx : dx + size]
                best = torch.maximum(best, nb)
                count += nb >= _VALID
        fill = (sub < _VALID) & (count >= min_neighbours)
        if not bool(fill.any()):
            break
        sub = torch.where(fill, best, sub)
    grid[images] = sub


def _prepare(scans, views, size, extent, pivot, device, need_normals):
    scans = _as_list(scans)
    views = _views(views)
    if int(size) != size or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    for s in scans:
        if s.num_vertices == 0:
            raise ScanError(f"cannot render a scan without vertices ({s.path})")
        if not np.isfinite(s.vertices).all():
            raise ScanError(f"cannot render NaN/Inf vertices; normalize_scan drops them ({s.path})")
    return _Batch(scans, views, int(size), float(extent), pivot, device, need_normals)


def _rasterize_flat(
    b: _Batch, point_radius, fill_holes, need_depth: bool = True, need_bary: bool = True, vattr=None
) -> dict:
    """Z-buffer every scan in every view; return the covered pixels as flat (P,) lists.

    Keys: pix (flat index img * H * W + i * W + j), img (scan * V + view), row, col, depth
    (view-space z), is_tri; for triangles face (global face index), view and bary (3, P); for
    points point (global vertex index of a point of the surfel) and pnormal ((3, P) blended view-space
    normals facing the camera, 0 for triangles), their depth blended too.
    """
    dev, size, nv = b.device, b.size, b.nv
    n_img = len(b.scans) * nv
    zb = torch.zeros(n_img * size * size, dtype=torch.long, device=dev)
    bary_rows, planes = _mesh_zbuffer(b, zb, vattr) if b.mesh_scans else (None, None)
    splats = _point_zbuffer(b, zb, point_radius, fill_holes) if b.point_scans else None
    pix = _flatnonzero(zb >= _VALID)
    key = torch.index_select(zb, 0, pix)
    ident = key & 0xFFFFFFFF
    depth = None
    if need_depth or b.point_scans:
        # the key's high half is the float bit pattern of the shifted depth: decode it exactly
        depth = (key >> 32).to(torch.int32).view(torch.float32) - b.zshift
    hw = size * size
    img = _floor_div(pix, hw)
    rem = pix - img * hw
    row = _floor_div(rem, size)
    col = rem - row * size
    out = {"pix": pix, "id": ident, "depth": depth, "img": img, "row": row, "col": col}
    is_tri = ident < 2**31
    out["is_tri"] = is_tri
    if planes is not None:
        t = ident if not b.point_scans else ident * is_tri
        half = size / 2.0 - 0.5
        px, py = col.float() - half, row.float() - half
        nc = planes[0].shape[0]
        rows = _rows([planes[j][c] for c in range(nc) for j in range(3)], t)  # (3C, P)
        out["attr"] = torch.addcmul(torch.addcmul(rows[0::3], rows[1::3], px), rows[2::3], py)  # (C, P)
    if bary_rows is not None and need_bary:
        t = ident if not b.point_scans else ident * is_tri
        view = _floor_div(t, b.nf)
        face = t - view * b.nf
        half = size / 2.0 - 0.5
        rows = _rows(bary_rows, t)  # (6, P): x0, y0, a1, a2, b1, b2
        dx = col.float() - half - rows[0]
        dy = row.float() - half - rows[1]
        w1 = (rows[2] * dx + rows[4] * dy).clamp_(0.0, 1.0)
        w2 = (rows[3] * dx + rows[5] * dy).clamp_(0.0, 1.0)
        # pixels on an edge may sit slightly outside: clamp, then make the weights sum to one
        w0 = (1.0 - w1 - w2).clamp_(min=0.0)
        norm = 1.0 / (w0 + w1 + w2)
        out.update(bary=torch.stack([w0 * norm, w1 * norm, w2 * norm]), view=view, face=face)
    if splats is not None:
        _point_values(out, splats)
    return out


def rasterize(
    scans,
    views=None,
    size: int = 224,
    *,
    extent: float = DEFAULT_EXTENT,
    pivot=DEFAULT_PIVOT,
    point_radius: float | None = None,
    fill_holes: int = 3,
    device=None,
) -> Fragments:
    """Rasterise scans into per-pixel depth, coverage, face index and barycentrics (no shading).

    Args:
        scans: a Scan or a list of B Scans (meshes and point clouds may be mixed).
        views: V (yaw, pitch) pairs in degrees (a bare number is a yaw); default `DEFAULT_VIEWS`.
        size: image height and width in pixels.
        extent: the image covers [-extent, extent] around the pivot, in the scan's units (1.1 for
            `normalize_scan` output; e.g. 110.0 for a scan kept in millimetres).
        pivot: (3,) point the views rotate about, in the scan's units.
        point_radius: splat radius in pixels for point clouds, from 0 to `size`; None estimates one per
            surfel from the local density of the points.
        fill_holes: hole-filling passes for point clouds.
        device: torch device to render on (default CPU).

    Returns:
        Fragments with (B, V, H, W) tensors on `device`. A point cloud's `face` is a point's index, its `bary`
        (1, 0, 0); a cloud sparser than `_SPARSE_PIXELS` pixels (with `point_radius` None) is rasterised as
        `render_views` draws it, as the mesh of its frontal range image, each pixel naming the nearest corner's
        point.
    """
    scans = _as_list(scans)
    drawn = [_sparse_cloud_as_mesh(s, size, extent, pivot, point_radius, device) for s in scans]
    frags = _rasterize(
        [mesh for mesh, _ in drawn], views, size, extent, pivot, point_radius, fill_holes, device
    )
    for i, (mesh, points) in enumerate(drawn):
        # a sparse cloud drawn as its range mesh: each pixel names a point of the cloud, as surfels do
        if points is not None:
            corner = frags.bary[i].argmax(-1, keepdim=True)
            vertex = torch.as_tensor(mesh.faces, device=frags.face.device)[frags.face[i].clamp_min(0)]
            point = torch.as_tensor(points, device=frags.face.device)[vertex.gather(-1, corner)[..., 0]]
            frags.face[i] = torch.where(frags.mask[i], point, -1)
            frags.bary[i] = torch.tensor([1.0, 0.0, 0.0], device=frags.bary.device) * frags.mask[i][..., None]
    return frags


def _rasterize(scans, views, size, extent, pivot, point_radius, fill_holes, device) -> Fragments:
    """`rasterize` of the scans as they are (point clouds as surfels)."""
    b = _prepare(scans, views, size, extent, pivot, device, need_normals=False)
    flat = _rasterize_flat(b, point_radius, fill_holes)
    n_pix = len(b.scans) * b.nv * b.size * b.size
    shape = (len(b.scans), b.nv, b.size, b.size)
    pix = flat["pix"]
    depth = torch.zeros(n_pix, device=b.device).index_copy_(0, pix, flat["depth"])
    mask = torch.zeros(n_pix, dtype=torch.bool, device=b.device).index_fill_(0, pix, True)
    face = torch.full((n_pix,), -1, dtype=torch.long, device=b.device)
    local = torch.zeros_like(flat["id"])
    if b.mesh_scans:
        fstart = torch.zeros(len(b.scans), dtype=torch.long, device=b.device)
        fstart[b.mesh_scans] = torch.tensor(b.fstart[:-1], device=b.device)
        fscan = torch.index_select(b.face_scan, 0, flat["face"])
        local = torch.where(flat["is_tri"], flat["face"] - fstart[fscan], local)
    if "point" in flat:
        vstart = torch.tensor(b.vstart[:-1], device=b.device)
        pscan = torch.div(flat["img"], b.nv, rounding_mode="floor")
        local = torch.where(flat["is_tri"], local, flat["point"] - vstart[pscan])
    face.index_copy_(0, pix, local)
    bary = torch.zeros(n_pix, 3, device=b.device)
    w = flat["bary"].T if "bary" in flat else torch.zeros(len(pix), 3, device=b.device)
    w = torch.where(flat["is_tri"][:, None], w, torch.tensor([1.0, 0.0, 0.0], device=b.device))
    bary.index_copy_(0, pix, w.contiguous())
    return Fragments(depth.view(shape), mask.view(shape), face.view(shape), bary.view(*shape, 3))


def render_depth(scans, views=None, size: int = 224, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Float depth maps and validity masks, e.g. to write Bosphorus-style range grids.

    Takes the arguments of `rasterize`. Returns depth (B, V, H, W) float32 (view-space z in the
    scan's units relative to the pivot, larger = nearer, 0 where invalid) and mask (B, V, H, W) bool.
    """
    frags = rasterize(scans, views, size, **kwargs)
    return frags.depth.cpu().numpy(), frags.mask.cpu().numpy()


def _sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (P, 2) uv (origin bottom left) in an (H, W, 3) uint8 texture; (P, 3) float."""
    h, w = texture.shape[:2]
    x = (uv[:, 0].clamp(0.0, 1.0) * w - 0.5).clamp(0.0, w - 1.0)
    y = ((1.0 - uv[:, 1].clamp(0.0, 1.0)) * h - 0.5).clamp(0.0, h - 1.0)
    x0f, y0f = x.floor(), y.floor()
    fx, fy = (x - x0f)[:, None], (y - y0f)[:, None]
    x0, y0 = x0f.long(), y0f.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    flat = texture.reshape(-1, 3).float()

    def tap(yy, xx):
        return torch.index_select(flat, 0, yy * w + xx)

    return (tap(y0, x0) * (1 - fx) + tap(y0, x1) * fx) * (1 - fy) + (
        tap(y1, x0) * (1 - fx) + tap(y1, x1) * fx
    ) * fy


def _lambert(nx, ny, nz, light, ambient: float) -> torch.Tensor:
    """Grey level 0-255 of normals (any length) lit from `light`; two-sided: a surface seen from
    behind (open scans, ears) is lit like its front."""
    lvec = np.asarray(light, dtype=np.float64)
    lx, ly, lz = (lvec / np.linalg.norm(lvec) * (1.0 - ambient)).tolist()
    inv = torch.copysign(torch.rsqrt((nx * nx + ny * ny + nz * nz).clamp_min(1e-24)), nz)
    return (nx * lx + ny * ly + nz * lz).mul_(inv).clamp_(min=0.0).add_(ambient).mul_(255.0)


# A point cloud whose points lie this many pixels apart or more (median nearest neighbour) is too sparse
# for surfels to carry its shape: each surfel's normal comes from a handful of neighbours a pixel or more
# away, and the shading blurs the brows and the mouth. Such a cloud is drawn as a mesh instead: its frontal
# depth (the surfels' z-buffer, which interpolates well between the points) joined pixel to pixel, the way a
# scanner's own software meshes a range image. Denser clouds keep their surfels, which average a noisy
# surface's normals better, and which the shipped models were trained on: realism's clouds (a mesh's vertices)
# lie 0.5-1.4 pixels apart at 96 px, and drawing those from 0.8 pixels on as range meshes cost the realistic
# held-out set 0.007 (docs/scan.md, "Sparse clouds").
_SPARSE_PIXELS = 1.4
_MAX_STEP_PIXELS = 6.0  # range pixels further apart in depth than this many pixels are not joined (an edge)


def _sparse_cloud_as_mesh(scan: Scan, size: int, extent: float, pivot, point_radius, device):
    """(`scan` as the mesh of its frontal range image, (M,) the cloud's point each of its vertices shows)
    when it is a point cloud sparser than `_SPARSE_PIXELS` pixels at this size and extent and no splat radius
    is fixed; (the scan itself, None) otherwise. Colours and texture coordinates are left out (the shaded
    modes do not use them)."""
    pixel = 2.0 * extent / size
    if scan.faces is not None or point_radius is not None or len(scan.vertices) < 3:
        return scan, None
    if point_spacing(scan) < _SPARSE_PIXELS * pixel:
        return scan, None
    frags = _rasterize([scan], [(0.0, 0.0)], size, extent, pivot, None, 3, device)
    depth, valid = frags.depth[0, 0].cpu().numpy(), frags.mask[0, 0].cpu().numpy()
    faces = grid_to_faces(valid)[:, [0, 2, 1]]  # counter-clockwise seen from the front
    z = depth.reshape(-1)[faces]
    faces = faces[z.max(1) - z.min(1) <= _MAX_STEP_PIXELS * pixel]
    if not len(faces):
        return scan, None
    x, y = pixel_centers(size, extent)
    grid = np.stack(np.broadcast_arrays(x[None, :], y[:, None], depth), -1).reshape(-1, 3)
    used = np.unique(faces)
    remap = np.zeros(size * size, dtype=np.int64)
    remap[used] = np.arange(len(used))
    vertices = (grid[used] + np.asarray(pivot, dtype=np.float64)).astype(np.float32)
    mesh = Scan(vertices=vertices, faces=remap[faces], path=scan.path, normalized=scan.normalized)
    return mesh, frags.face[0, 0].cpu().numpy().reshape(-1)[used]


def render_views(
    scans,
    views=None,
    size: int = 224,
    mode: str = "normal",
    *,
    extent: float = DEFAULT_EXTENT,
    pivot=DEFAULT_PIVOT,
    light=DEFAULT_LIGHT,
    ambient: float = 0.1,
    point_radius: float | None = None,
    fill_holes: int = 3,
    device=None,
    as_tensor: bool = False,
):
    """Render every scan from every view.

    Args:
        scans: a Scan or a list of B Scans, normally `normalize_scan` output.
        views: V (yaw, pitch) pairs in degrees; default `DEFAULT_VIEWS` (frontal, left, right).
        size: output height and width.
        mode: "depth" (grey, nearer = brighter, min-max per image over the face, background 0),
            "normal" (grey Lambertian shading with a light from `light`, two-sided), "normal_map"
            (view-space unit normal as RGB, (n + 1) / 2), "shade_normal" (red: the "normal" shade; green and
            blue: the normal's x and y, (n + 1) / 2) or "texture" (the scan's texture image or
            vertex colours; a ScanError if it has neither).
        extent, pivot, point_radius, fill_holes: see `rasterize`.
        light: (3,) direction towards the light in view space.
        ambient: the grey level of surfaces facing away from the light, in [0, 1].
        device: torch device to render on; batches of many scans are fastest on a GPU.
        as_tensor: return a torch uint8 tensor on `device` instead of a numpy array.

    Returns:
        (B, V, H, W, 3) uint8, background black. Deterministic.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "texture":
        for s in _as_list(scans):
            if not s.has_texture:
                raise ScanError(f"mode='texture' needs a texture image with uv or vertex colours ({s.path})")
    if mode in _SHADED:
        drawn = [_sparse_cloud_as_mesh(s, size, extent, pivot, point_radius, device) for s in _as_list(scans)]
        scans = [mesh for mesh, _ in drawn]
    b = _prepare(scans, views, size, extent, pivot, device, need_normals=mode in _SHADED)
    flat = _rasterize_flat(
        b, point_radius, fill_holes, need_depth=mode == "depth", need_bary=mode == "texture",
        vattr=_vertex_attributes(b, mode, light, ambient),
    )  # fmt: skip
    if mode == "depth":
        planes = _depth_planes(flat, len(b.scans) * b.nv, b.device)
    elif mode in _SHADED:
        planes = _shaded_planes(flat, mode, light, ambient)
    else:
        planes = _texture_planes(b, flat)
    return _interleave(planes, flat["pix"], (len(b.scans), b.nv, b.size, b.size, 3), b.device, as_tensor)


def _vertex_attributes(b, mode: str, light, ambient: float):
    """What the rasteriser interpolates over triangles: (C, V * N) per view and vertex, or None (no normals).
    Unit vertex normals rotated into every view, as rows: stacking the rotations as (3 * V, 3) puts row
    i * V + v = (R_v n)_i, so no permuted copy is needed. "normal" shades at the vertices (Gouraud)."""
    if b.normals is None:
        return None
    n = b.normals * torch.rsqrt((b.normals * b.normals).sum(0).clamp_min(1e-24))
    vattr = torch.matmul(b.rot.permute(1, 0, 2).reshape(3 * b.nv, 3), n).view(3, -1)
    if mode == "normal":
        return _lambert(*vattr, light, ambient)[None]
    if mode == "shade_normal":  # the shade and the normal, each interpolated
        return torch.cat([_lambert(*vattr, light, ambient)[None], vattr])
    return vattr


def _depth_planes(flat: dict, n_img: int, dev) -> list:
    """One grey plane: nearer is brighter, min-max per image over the face, from 10 % to full white."""
    z, img = flat["depth"], flat["img"]
    lo = torch.full((n_img,), float("inf"), device=dev).scatter_reduce_(0, img, z, "amin")
    hi = torch.full((n_img,), float("-inf"), device=dev).scatter_reduce_(0, img, z, "amax")
    lo_p, hi_p = torch.index_select(lo, 0, img), torch.index_select(hi, 0, img)
    return [(255.0 * 0.1) + (255.0 * 0.9) * (z - lo_p) / (hi_p - lo_p).clamp_min(1e-12)]


def _shaded_planes(flat: dict, mode: str, light, ambient: float) -> list:
    """The shade (one plane), the normal map (three) or both (shade, nx, ny) of every covered pixel."""
    vals = flat.get("attr")  # (C, P): interpolated shade (normal), normal (normal_map) or both
    if "point" in flat:  # blended surfel normals, view space
        sn = flat["pnormal"]
        shade = _lambert(*sn, light, ambient)[None]
        pvals = {"normal": shade, "normal_map": sn, "shade_normal": torch.cat([shade, sn])}[mode]
        vals = pvals if vals is None else torch.where(flat["is_tri"][None], vals, pvals)
    planes = [vals[0]] if mode != "normal_map" else []
    if mode != "normal":
        nx, ny, nz = vals[-3:]
        inv = torch.copysign(torch.rsqrt((nx * nx + ny * ny + nz * nz).clamp_min(1e-24)), nz)
        planes += [(c * inv + 1.0) * 127.5 for c in ((nx, ny, nz) if mode == "normal_map" else (nx, ny))]
    return planes


def _texture_planes(b, flat: dict) -> list:
    """Three colour planes: the texture image sampled at the interpolated uv, or the vertex colours."""
    dev, nv, pix, img = b.device, b.nv, flat["pix"], flat["img"]
    colour = torch.zeros(len(pix), 3, device=dev)
    scan_of_pix = _floor_div(img, nv)
    for i, s in enumerate(b.scans):
        sel = _flatnonzero(scan_of_pix == i)
        if len(sel) == 0:
            continue
        if s.is_point_cloud:
            ids = [torch.index_select(flat["point"], 0, sel) - int(b.vstart[i])]
            w = torch.ones(len(sel), 1, device=dev)
        else:
            f = torch.index_select(flat["face"], 0, sel)
            ids = [torch.index_select(b.faces_t[k], 0, f) - int(b.vstart[i]) for k in range(3)]
            w = torch.index_select(flat["bary"], 1, sel).T  # (S, 3)
        if s.uv is not None and s.texture is not None:
            uv_t = _tensor(s.uv, dev)
            uv = sum(torch.index_select(uv_t, 0, ids[k]) * w[:, k : k + 1] for k in range(len(ids)))
            col = _sample_texture(_tensor(s.texture, dev), uv)
        else:
            col_t = _tensor(s.colors, dev).float()
            col = sum(torch.index_select(col_t, 0, ids[k]) * w[:, k : k + 1] for k in range(len(ids)))
        colour.index_copy_(0, sel, col)
    return list(colour.T)


def _interleave(planes: list, pix, shape: tuple, dev, as_tensor: bool):
    """The (B, V, H, W, 3) uint8 image from the covered pixels' planes (one plane: grey). Each plane is
    written with a 1D index_copy (row-wise copies of 3 bytes are slow), then interleaved."""
    n_pix = int(np.prod(shape[:4]))
    chans = []
    for p in planes:
        plane = torch.zeros(n_pix, dtype=torch.uint8, device=dev)
        chans.append(plane.index_copy_(0, pix, p.round_().clamp_(0, 255).to(torch.uint8)))
    if as_tensor:
        out = chans[0][:, None].expand(-1, 3) if len(chans) == 1 else torch.stack(chans, 1)
        return out.reshape(shape)
    out = np.empty((n_pix, 3), np.uint8)
    for c in range(3):
        out[:, c] = chans[min(c, len(chans) - 1)].cpu().numpy()
    return out.reshape(shape)
    out = np.empty((n_pix, 3), np.uint8)
    for c in range(3):
        out[:, c] = chans[min(c, len(chans) - 1)].cpu().numpy()
    return out.reshape(shape)
