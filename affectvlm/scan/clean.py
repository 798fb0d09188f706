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

`orient_faces` winds a mesh's triangles one way: a file whose triangles are wound either way at random, or listed
twice (once each way, as exporters write a two-sided surface), had vertex normals that cancel, and a happy face
drawn from them read fear 0.90.

`weld_soup` joins a triangle soup (an STL file, any exporter that writes three vertices of its own per triangle)
back into a mesh: each place's vertices become one. Drawn as they were, such files read worse than the same
triangles welded (72 held-out faces: 0.944 against 0.986), the point spacing, stray points and noise being
measured on six copies of each point.

`fill_pinholes` closes a mesh's holes a few millimetres across: scanners lose a specular speck or a shadowed pore
here and there, and drawn, each such pit is a black speck the model reads (80 pits of 3 mm on held-out faces cost
0.08 of their accuracy). Holes wider than that (an eye, a nostril, a mouth, a patch the scanner never saw) stay.

`cluster_vertices` decimates a scan by vertex clustering (a scan far denser than the pixels it is drawn on).
"""

from __future__ import annotations

import numpy as np

from .types import Scan, spread_sample

__all__ = [
    "cluster_vertices",
    "clustered",
    "drop_stray_points",
    "face_the_viewer",
    "fill_pinholes",
    "orient_faces",
    "point_spacing",
    "weld_soup",
]

_CELL_SPACINGS = 4.0  # a cube's side, in point spacings
_MIN_COMPANY = 3  # points (itself included) the 27 cubes about a point must hold
_MAX_DROPPED = (
    0.5  # a scan that would lose more than this fraction keeps every point (no surface to speak of)
)
_ORIGIN_PILE = 16  # vertices used by triangles at exactly the origin that make a depth camera's marker
_SAMPLE = 4096  # points the spacing is measured on (128 of them against the rest)
_BITS = 21  # per axis in a cube's key
# `orient_faces`: connected parts and levels walked at most (a 1,000 x 1,000 grid is 2,000 levels), triangles
# checked at a time for one not yet walked
_MAX_PARTS, _MAX_LEVELS, _BLOCK = 5_000, 10_000, 4096
# `weld_soup`: the share of a mesh's vertices that must repeat another's place for it to be welded (a soup's: five in
# six; a mesh's texture seams: a few in a hundred)
_SOUP_SHARE = 0.25
# `fill_pinholes`: holes whose rim has at most this many corners (a lost vertex leaves about 6, two lost side by side
# about 8) and that are at most this many mm across (a coarse mesh's lost vertex leaves a hole 10 mm across; an
# eye, a mouth, a patch the scanner missed, and scanner realism's holes are 12 mm and more)
_PINHOLE_CORNERS, PINHOLE_MM = 12, 12.0
# multipliers of a vertex place's 64-bit hash (x, y, z bits, and a scan's number in a batch): here and the renderer's
PLACE_PRIMES = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)


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


def orient_faces(scan: Scan) -> Scan:
    """`scan` with each triangle listed once (the first of those with the same corners) and, where triangles that
    share an edge are wound against each other, those of the smaller side in each connected part turned round, so
    that every triangle agrees with its neighbours; the scan itself when it is already so (every scan the models
    were trained on) or is a point cloud. Edges shared by more than two triangles join nothing. The renderer
    sums each vertex's triangles' normals and lights both sides alike: which way a whole part is wound does not
    matter, only that its triangles agree. Cost: a sort of the edges, 0.2-0.34 s for a million triangles wound one
    way already; otherwise about 2 s a million triangles, bounded by `_parity`."""
    f = scan.faces
    if f is None or len(f) < 2:
        return scan
    joined = _places(scan.vertices)[f]  # an unwelded mesh (STL, a triangle soup) joins its triangles by place
    if _agrees(joined):
        return scan
    keep = _once_each(joined)
    if len(keep) < len(f):
        f, joined = f[keep], joined[keep]
    pairs = _edge_pairs(joined)
    if not pairs[2].any():
        return scan if len(f) == len(scan.faces) else scan.replace(faces=f)
    flip = _parity(len(f), *pairs)
    return scan.replace(faces=np.where(flip[:, None], f[:, ::-1], f))


def weld_soup(scan: Scan) -> Scan:
    """`scan` with the vertices at each place made one, where at least `_SOUP_SHARE` of its vertices repeat another's
    place (a triangle soup; a mesh's few repeats along its texture seams stay as they are); a merged vertex keeps
    its first copy's colour and texture coordinates. The scan itself otherwise, or for a point cloud."""
    f = scan.faces
    if f is None or not len(f):
        return scan
    places = _places(scan.vertices)
    count = int(places.max()) + 1
    if count > (1 - _SOUP_SHARE) * len(places):
        return scan
    first = np.full(count, len(places), dtype=np.int64)
    np.minimum.at(first, places, np.arange(len(places)))
    return Scan(
        vertices=scan.vertices[first],
        faces=places[f],
        colors=None if scan.colors is None else scan.colors[first],
        uv=None if scan.uv is None else scan.uv[first],
        texture=scan.texture,
        path=scan.path,
    )


def fill_pinholes(scan: Scan, across: float = PINHOLE_MM) -> Scan:
    """`scan` (in millimetres, its triangles wound one way: `orient_faces`) with each hole of at most
    `_PINHOLE_CORNERS` corners and no wider than `across` (the largest distance between two of its rim's corners)
    closed by a fan of triangles over its rim's own vertices, wound as the triangles about it; the scan itself when
    it has none, or is a point cloud. A hole is a loop of edges that one triangle each uses; holes that touch
    another at a corner are left open. Vertices at one place count as one (an unwelded mesh, `_places`). Cost: a
    sort of the edges, about 0.7 s a million triangles."""
    f = scan.faces
    if f is None or len(f) < 2:
        return scan
    places = _places(scan.vertices)
    rims = _small_rims(places[f], int(places.max()) + 1, scan.vertices, places, across)
    if not rims:
        return scan
    vertex_at = np.zeros(int(places.max()) + 1, dtype=np.int64)
    vertex_at[places] = np.arange(len(places))
    fan = np.array([[rim[0], rim[k + 1], rim[k]] for rim in rims for k in range(1, len(rim) - 1)], dtype=np.int64)
    return scan.replace(faces=np.concatenate([f, vertex_at[fan].astype(f.dtype)]))


def _small_rims(f: np.ndarray, n: int, v: np.ndarray, places: np.ndarray, across: float) -> list[list[int]]:
    """The rims (place ids, in the order their triangles run them) of the holes no wider than `across` of the
    triangles `f` (place ids, `n` places): walked along the edges that one triangle runs and none runs back."""
    a, b = _directed_edges(f)
    real = a != b
    a, b = a[real], b[real]
    key = np.minimum(a, b) * n + np.maximum(a, b)
    order = np.argsort(key)
    key = key[order]
    differs = key[1:] != key[:-1]
    once = order[np.r_[True, differs] & np.r_[differs, True]]  # the edges one triangle uses
    del key, order, differs
    a, b = a[once], b[once]
    if not len(a):
        return []
    simple = (np.bincount(a, minlength=n) == 1) & (np.bincount(b, minlength=n) == 1)
    ok = simple[a] & simple[b]
    after = np.full(n, -1, dtype=np.int64)
    after[a[ok]] = b[ok]
    where = np.zeros((n, 3))
    where[places] = v
    seen, rims = np.zeros(n, dtype=bool), []
    for start in a[ok]:
        if seen[start]:
            continue
        rim, at = [int(start)], int(after[start])
        while at not in (-1, start) and len(rim) <= _PINHOLE_CORNERS and not seen[at]:
            rim.append(at)
            at = int(after[at])
        seen[rim] = True
        if at == start and 3 <= len(rim) <= _PINHOLE_CORNERS:
            corners = where[rim]
            if np.linalg.norm(corners[:, None] - corners[None], axis=-1).max() <= across:
                rims.append(rim)
    return rims


def face_the_viewer(scan: Scan) -> Scan:
    """`scan` (the face looking along +z, as `normalize_scan` leaves it) with its triangles turned round when most of
    their area faces away from the viewer (counter-clockwise is a triangle's front, as glTF has it): the renderer
    lights both sides alike, but a preview (the app's, a GLB) shows the front only, and a face wound the other way,
    or left so by `orient_faces` (which keeps each part's commoner way), was not drawn at all."""
    f = scan.faces
    if f is None or not len(f):
        return scan
    a, b, c = (scan.vertices[f[:, k]].astype(np.float64) for k in range(3))
    towards = ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])).sum()
    return scan.replace(faces=np.ascontiguousarray(f[:, ::-1])) if towards < 0 else scan


def _places(v: np.ndarray) -> np.ndarray:
    """(N,) int64: the same number for vertices at the same place (a 64-bit hash of their coordinates' bits, as
    the renderer's `_shared_by_place` takes it)."""
    bits = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = (bits[:, 0] * np.uint64(PLACE_PRIMES[0])) ^ (bits[:, 1] * np.uint64(PLACE_PRIMES[1]))
        key ^= bits[:, 2] * np.uint64(PLACE_PRIMES[2])
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def _directed_edges(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3M,) int64 each: every triangle's edges as run, corner k -> k + 1, corner by corner."""
    return f.T.ravel().astype(np.int64), np.roll(f, -1, axis=1).T.ravel().astype(np.int64)


def _agrees(f: np.ndarray) -> bool:
    """Whether no edge is run the same way twice (no two triangles wound against each other, none listed twice):
    a sort of the directed edges, without the pairing `_edge_pairs` does."""
    a, b = _directed_edges(f)
    key = np.sort(a * (int(f.max()) + 1) + b)
    return not (key[1:] == key[:-1]).any()


def _once_each(f: np.ndarray) -> np.ndarray:
    """The indices of the triangles `f` (M, 3) to keep: each set of corners once, the first, in their order."""
    c = np.sort(f, axis=1).astype(np.int64)
    n = int(c.max()) + 1
    if n < 2**21:  # one int64 key per triangle: a sort of M numbers, not of M rows
        _, first = np.unique((c[:, 0] * n + c[:, 1]) * n + c[:, 2], return_index=True)
    else:
        _, first = np.unique(c, axis=0, return_index=True)
    return np.sort(first)


def _edge_pairs(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, against): the triangles on each edge that exactly two share, and whether they are wound against each
    other there (both run the edge the same way)."""
    a, b = _directed_edges(f)
    tri = np.tile(np.arange(len(f)), 3)
    real = a != b
    a, b, tri = a[real], b[real], tri[real]
    if not len(a):
        return tri, tri, np.zeros(0, dtype=bool)
    key = np.minimum(a, b) * (int(max(a.max(), b.max())) + 1) + np.maximum(a, b)
    order = np.argsort(key)
    key = key[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    del key
    two = start[np.diff(np.r_[start, len(order)]) == 2]
    first, second = order[two], order[two + 1]
    return tri[first], tri[second], a[first] == a[second]


def _parity(n: int, i: np.ndarray, j: np.ndarray, against: np.ndarray) -> np.ndarray:
    """(n,) bool: the triangles to turn round so that no two on a shared edge are wound against each other, by a
    breadth-first walk of each connected part from its first triangle; of the two ways round that agree, each
    part keeps the one that turns fewer triangles. A part that cannot agree (a Moebius strip) keeps the walk's.
    Past `_MAX_PARTS` parts (a mesh in shards) or `_MAX_LEVELS` steps of the walks (a long strip of triangles)
    the rest are left as they are, so that the time stays bounded: 1.9 s for a million triangles 30 % turned, 1.4 s
    for 300,000 separate pairs, 1.8 s for a strip of a million (`orient_faces` included)."""
    src, dst, w = np.r_[i, j], np.r_[j, i], np.r_[against, against].astype(np.int8)
    order = np.argsort(src, kind="stable")
    dst, w = dst[order], w[order]
    start = np.searchsorted(src[order], np.arange(n + 1))
    parity = np.full(n, -1, np.int8)
    flip = np.zeros(n, dtype=bool)
    seeds, at = np.flatnonzero(np.diff(start) > 0), 0
    slot = np.zeros(n, dtype=np.int64)  # scratch for `_walk`
    levels = [_MAX_LEVELS]
    for _ in range(_MAX_PARTS):
        while at < len(seeds) and not (parity[seeds[at : at + _BLOCK]] < 0).any():
            at += _BLOCK
        if at >= len(seeds) or levels[0] <= 0:
            break
        seed = seeds[at + int(np.argmax(parity[seeds[at : at + _BLOCK]] < 0))]
        members = _walk(seed, start, dst, w, parity, slot, levels)
        turned = parity[members] == 1
        flip[members] = turned if 2 * turned.sum() <= len(members) else ~turned
    return flip


def _walk(
    seed: int, start: np.ndarray, dst: np.ndarray, w: np.ndarray, parity: np.ndarray, slot: np.ndarray, levels: list
) -> np.ndarray:
    """The triangles reached from `seed` over the adjacency (`start`, `dst`: CSR; `w`: 1 where a pair is wound
    against each other), level by level, each given in `parity` (in place) whether it turns relative to `seed`.
    `slot` (n,) is scratch: a triangle reached twice in a level is kept once, without a sort. `levels`: [the
    levels left to walk], counted down in place."""
    parity[seed] = 0
    part, frontier = [np.array([seed])], np.array([seed])
    while len(frontier) and levels[0] > 0:
        levels[0] -= 1
        lo, count = start[frontier], start[frontier + 1] - start[frontier]
        index = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
        nxt, value = dst[index], parity[np.repeat(frontier, count)] ^ w[index]
        new = parity[nxt] < 0
        nxt, value = nxt[new], value[new]
        slot[nxt] = np.arange(len(nxt))
        once = slot[nxt] == np.arange(len(nxt))
        nxt = nxt[once]
        parity[nxt] = value[once]
        part.append(nxt)
        frontier = nxt
    return np.concatenate(part)


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
