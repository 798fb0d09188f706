"""Scanner realism: seeded, switchable transforms that make a clean face scan look like a real scanner's file.

A clean scan (millimetres, +y up, +z towards the viewer, as a face model's mesh) becomes what a scanner or a
dataset hands over: holes where the scanner saw nothing (eyes, nostrils, an open mouth, random patches), an
irregular boundary (more or less forehead, chin and cheeks; the neck and head where the mesh has them),
another density (vertex clustering down to a few thousand vertices, midpoint subdivision up to ~100k faces),
depth noise and spikes along the line of sight, a point cloud (sometimes only the half that faces the
scanner), the rest of the person and the room (a neck, shoulders and chest below the face, a wall behind it: off
unless asked for), and the file's own frame: turned about the vertical (looking along -z, or any angle), z-up axes,
off-centre, in centimetres, metres or unitless. `normalize_scan` must undo the frame and cope with the rest.

    scan, kinds = apply_realism(face, np.random.default_rng(seed), RealismConfig())
    scan, kinds = apply_realism(face, rng, RealismConfig.only("holes", "axes"), landmarks={"eyes": [i, j]})

Each kind is drawn with its own probability, in the fixed order of `KINDS`, from the caller's generator (so a
seed fixes the result); `kinds` lists those applied, for the caller to count. Nothing here knows a face model:
`landmarks` (vertex indices of the clean scan: "eyes", "nostrils", "mouth", "nose") put holes where a
scanner loses them; without them holes fall on random surface points and the nose is the frontmost vertex.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..scan.clean import cluster_vertices
from ..scan.normalize import axis_rotation, find_nose_tip, rotate_points
from ..scan.types import Scan

__all__ = [
    "KINDS",
    "Z_UP",
    "RealismConfig",
    "apply_realism",
    "cluster_vertices",
    "subdivide",
    "vertex_normals",
]

# In the order they are applied: what the scanner sees first (on the clean scan, where the landmarks point),
# then its sampling, then the file's frame.
KINDS = (
    "holes",
    "boundary",
    "density",
    "noise",
    "spikes",
    "point_cloud",
    "scene",
    "turn",
    "axes",
    "offset",
    "units",
)
# Kinds added after caches were rendered with the others: they take a draw from a random stream only when switched
# on, and their streams come after the others', so a cache rendered before they existed renders the same.
ADDED_LATER = ("scene",)
# ... and the settings added later, left out of a config's dict while the first of each group is 0 (a kind's
# probability, or a setting that switches the others on; `RealismConfig.to_dict`): a cache's folder name holds
# the dict, so the caches rendered before keep their names.
_ADDED_LATER_FIELDS = (("p_scene", "wall", "wall_behind"), ("sampled", "sampled_points"))
# z-up: +y becomes +z and the face, looking along +z, looks along -y (Blender's and many CAD tools' frame)
Z_UP = axis_rotation(0, 90)
# Hole radii (mm) at each landmark kind; a mouth hole is an ellipse twice as wide as it is tall.
_LANDMARK_HOLES = {"eyes": (6.0, 12.0), "nostrils": (3.0, 6.0), "mouth": (5.0, 12.0)}


@dataclass(frozen=True)
class RealismConfig:
    """Which realism kinds to apply (`p_<kind>`: the probability of each) and their ranges.

    Attributes:
        enabled: False returns every scan unchanged.
        hole_radius: random patches' radius range, mm; `random_holes` their count range (inclusive).
        landmark_hole: the probability of a hole at each landmark given (an eye, a nostril, the mouth).
        boundary_radius: the crop's radius range (mm) about the nose, drawn separately towards the forehead,
            chin and each cheek (up to 150 mm keeps part of the neck and head of a mesh that has them).
        faces: the density's range in triangles: a log-uniform target in it; a denser scan is clustered to
            about half as many vertices, a sparser mesh subdivided (4x the triangles a level) to about it.
        noise: depth noise standard deviation range, mm.
        spikes, spike_length: spike count and length ranges (vertices pushed along the line of sight).
        partial: the probability that a point cloud keeps only the vertices that face the scanner.
        sampled: the probability that a point cloud is points drawn uniformly over the surface (by area) rather
            than the mesh's vertices; `sampled_points`: their count's range (log-uniform), before `partial`.
        wall: the probability that a scene has a wall behind the head (`wall_behind`: its distance range behind
            the nose tip, mm).
        turn_back: the probability that a turn is half a turn (the face looks along -z); else any angle.
        offset: the largest distance (mm) of the scan from the origin.
        unit_weights: relative weights of cm, m and unitless; `unitless_size`: a unitless model's largest
            side range (log-uniform).
    """

    enabled: bool = True
    p_holes: float = 0.5
    p_boundary: float = 0.5
    p_density: float = 0.3
    p_noise: float = 0.5
    p_spikes: float = 0.3
    p_point_cloud: float = 0.15
    p_scene: float = 0.0
    p_turn: float = 0.3
    p_axes: float = 0.3
    p_offset: float = 0.3
    p_units: float = 0.3
    hole_radius: tuple[float, float] = (4.0, 12.0)
    random_holes: tuple[int, int] = (1, 3)
    landmark_hole: float = 0.5
    boundary_radius: tuple[float, float] = (65.0, 150.0)
    faces: tuple[int, int] = (6000, 100_000)
    noise: tuple[float, float] = (0.05, 0.5)
    spikes: tuple[int, int] = (1, 20)
    spike_length: tuple[float, float] = (5.0, 50.0)
    partial: float = 0.5
    sampled: float = 0.0
    sampled_points: tuple[int, int] = (8000, 80_000)
    wall: float = 0.5
    wall_behind: tuple[float, float] = (150.0, 500.0)
    turn_back: float = 0.5
    offset: float = 500.0
    unit_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unitless_size: tuple[float, float] = (0.01, 100.0)

    def __post_init__(self) -> None:
        for kind in KINDS:
            if not 0.0 <= self.probability(kind) <= 1.0:
                raise ValueError(f"p_{kind} must be in [0, 1], got {self.probability(kind)}")

    def probability(self, kind: str) -> float:
        return float(getattr(self, f"p_{kind}"))

    @classmethod
    def only(cls, *kinds: str, **changes) -> RealismConfig:
        """A config that applies exactly `kinds` (probability 1) and nothing else."""
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown realism kinds {sorted(unknown)}; known: {KINDS}")
        return cls(**{f"p_{k}": float(k in kinds) for k in KINDS}, **changes)

    def replace(self, **changes) -> RealismConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as plain data, without the settings added later while they are off."""
        out = dataclasses.asdict(self)
        for names in _ADDED_LATER_FIELDS:
            if not getattr(self, names[0]):
                for name in names:
                    del out[name]
        return out

    def draws(self, kind: str) -> bool:
        """Whether deciding `kind` takes a draw from the random stream (`ADDED_LATER`)."""
        return kind not in ADDED_LATER or self.probability(kind) > 0.0


def stream_index(kind: str) -> int:
    """A kind's own stream number: its place in `KINDS` without the kinds added later, which follow."""
    first = [k for k in KINDS if k not in ADDED_LATER]
    return first.index(kind) if kind in first else len(first) + ADDED_LATER.index(kind)


def apply_realism(
    scan: Scan,
    rng: np.random.Generator,
    config: RealismConfig | None = None,
    landmarks: Mapping[str, Sequence[int] | int] | None = None,
    notes: dict | None = None,
) -> tuple[Scan, list[str]]:
    """A clean scan (mm, +y up, +z towards the viewer) made to look like a scanner's output.

    Args:
        scan: the clean scan; not modified.
        rng: the random stream: the same generator state and config give the same scan and kinds.
        config: probabilities and ranges (default `RealismConfig()`).
        landmarks: optional vertex indices of the clean scan by name: "eyes", "nostrils", "mouth" (holes),
            "nose" (the boundary's centre; default: the frontmost vertex that is not a spike).
        notes: where a kind leaves what a later kind needs (the spikes, which a sampled cloud keeps as single
            points); pass one scan's dict to every call when its kinds are applied one call at a time.

    Returns:
        (the new scan, the kinds applied in order).
    """
    config = config or RealismConfig()
    if not config.enabled:
        return scan, []
    marks = {name: np.atleast_1d(np.asarray(idx, np.int64)) for name, idx in (landmarks or {}).items()}
    marks["notes"] = {} if notes is None else notes
    applied = []
    for kind in KINDS:
        if config.draws(kind) and rng.random() < config.probability(kind):
            changed = _APPLY[kind](scan, rng, config, marks)
            if changed is not None:
                scan = changed
                applied.append(kind)
    return scan, applied


# --- what the scanner sees ---------------------------------------------------------------------------------


def _nose(scan: Scan, marks: dict) -> np.ndarray:
    """The "nose" landmark's position, else the frontmost vertex that is not a spike."""
    if "nose" in marks:
        return scan.vertices[marks["nose"][0]]
    return find_nose_tip(scan.vertices)


def _holes(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Holes at the landmarks (each with probability `landmark_hole`) and at random surface points."""
    v = scan.vertices
    keep = np.ones(len(v), bool)
    for name, (lo, hi) in _LANDMARK_HOLES.items():
        for index in marks.get(name, ()):
            if rng.random() < config.landmark_hole:
                aspect = (2.0, 1.0) if name == "mouth" else (1.0, 1.0)
                keep &= ~_in_ellipse(v, v[index], rng.uniform(lo, hi), aspect)
    for _ in range(rng.integers(config.random_holes[0], config.random_holes[1] + 1)):
        centre = v[rng.integers(len(v))]
        keep &= ~_in_ellipse(v, centre, rng.uniform(*config.hole_radius), (1.0, 1.0))
    return _subset(scan, keep)


def _in_ellipse(v: np.ndarray, centre: np.ndarray, radius: float, aspect: tuple[float, float]) -> np.ndarray:
    """(N,) bool: within `radius` of `centre`, the x and y distances divided by `aspect` (depth counts fully)."""
    d = (v - centre) / np.array([aspect[0], aspect[1], 1.0], np.float32)
    return np.einsum("ij,ij->i", d, d) <= radius * radius


def _boundary(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Keep the vertices within a radius of the nose that changes smoothly with the direction in the image
    plane: its own radius towards the forehead, each cheek and the chin, plus a small wobble."""
    v = scan.vertices
    d = v - _nose(scan, marks)
    angle = np.arctan2(d[:, 1], d[:, 0])
    right, top, left, bottom = rng.uniform(*config.boundary_radius, size=4)
    # a smooth periodic curve through the four radii (at 0, 90, 180 and 270 degrees) ...
    c, s = np.cos(angle), np.sin(angle)
    radius = np.where(c > 0, right, left) * c * c + np.where(s > 0, top, bottom) * s * s
    # ... and a wobble of a few per cent (harmonics 3 to 6, random phases)
    for k in range(3, 7):
        radius = radius * (1.0 + 0.02 * np.sin(k * angle + rng.uniform(0, 2 * np.pi)))
    return _subset(scan, np.einsum("ij,ij->i", d, d) <= radius * radius)


def _subset(scan: Scan, keep: np.ndarray) -> Scan | None:
    """`scan.subset(keep)`, or None (nothing applied) when it would keep fewer than 3 vertices or all."""
    if keep.sum() < 3 or keep.all():
        return None
    return scan.subset(keep)


# --- density ------------------------------------------------------------------------------------------------


def _density(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan | None:
    """Cluster down or subdivide up to a log-uniform number of faces (a point cloud: vertices x 2)."""
    lo, hi = config.faces
    target = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    current = scan.num_faces if not scan.is_point_cloud else 2 * scan.num_vertices
    if target < current:
        return cluster_vertices(scan, _cell_for(scan, target / 2))
    if scan.is_point_cloud:
        return None
    levels = max(1, int(np.floor(np.log(target / current) / np.log(4.0) + 0.5)))
    for _ in range(min(levels, 4)):
        scan = subdivide(scan)
    return scan


def _cell_for(scan: Scan, vertices: float) -> float:
    """The cluster cell size (mm) that leaves about `vertices` of a surface: sqrt(area / vertices)."""
    v = scan.vertices.astype(np.float64)
    if scan.is_point_cloud:
        extent = np.sort(v.max(0) - v.min(0))
        area = extent[1] * extent[2]
    else:
        a, b, c = (v[scan.faces[:, i]] for i in range(3))
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum()
    return float(np.sqrt(max(area, 1e-12) / max(vertices, 1.0)))


def subdivide(scan: Scan) -> Scan:
    """Midpoint subdivision: each triangle becomes four; edge midpoints interpolate colours and uv."""
    f = scan.faces
    n = scan.num_vertices
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = n + inverse.reshape(3, -1).T  # (F, 3): the midpoints of edges 01, 12, 20
    a, b, c = f.T
    ab, bc, ca = mid.T
    faces = np.concatenate([np.stack(t, -1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])

    def extend(x: np.ndarray | None, dtype) -> np.ndarray | None:
        if x is None:
            return None
        midpoint = 0.5 * (x[unique[:, 0]].astype(np.float32) + x[unique[:, 1]].astype(np.float32))
        return np.concatenate([x, midpoint.astype(dtype)])

    return scan.replace(
        vertices=extend(scan.vertices, np.float32),
        faces=faces,
        colors=extend(scan.colors, np.uint8),
        uv=extend(scan.uv, np.float32),
    )


# --- what the scanner measures -------------------------------------------------------------------------------


def _noise(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Gaussian depth noise along the line of sight (z)."""
    v = scan.vertices.copy()
    v[:, 2] += rng.normal(0.0, rng.uniform(*config.noise), len(v)).astype(np.float32)
    return scan.replace(vertices=v)


def _spikes(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """A few vertices pushed along the line of sight, towards or away from the scanner."""
    v = scan.vertices.copy()
    count = min(len(v), int(rng.integers(config.spikes[0], config.spikes[1] + 1)))
    which = rng.choice(len(v), size=count, replace=False)
    length = rng.choice([-1.0, 1.0], count) * rng.uniform(*config.spike_length, count)
    v[which, 2] += length.astype(np.float32)
    marks["notes"]["spiked"] = (which, length.astype(np.float32))  # a sampled cloud keeps them single points
    return scan.replace(vertices=v)


def _point_cloud(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan | None:
    """The vertices without triangles (and without uv), or with probability `sampled` points drawn over the
    surface; with probability `partial`, only those whose normal faces the scanner (+z), as a single-view
    sensor records them."""
    partial = rng.random() < config.partial
    if scan.is_point_cloud:
        return None
    if config.sampled and rng.random() < config.sampled:
        lo, hi = np.log(config.sampled_points)
        cloud, normals = _sampled_cloud(scan, int(np.exp(rng.uniform(lo, hi))), rng, marks)
        keep = normals[:, 2] > 0.0 if partial else np.ones(len(normals), bool)
        return cloud.subset(keep) if keep.sum() >= 3 else None
    keep = vertex_normals(scan)[:, 2] > 0.0 if partial else None
    cloud = scan.replace(faces=None, uv=None, texture=None)
    return cloud.subset(keep) if keep is not None and keep.sum() >= 3 else cloud


def _sampled_cloud(scan: Scan, count: int, rng, marks: dict) -> tuple[Scan, np.ndarray]:
    """`sample_surface` of the mesh as it was before its spikes, and the spiked vertices as single points (facing
    the scanner): a spike is one bad depth reading, not the fin of triangles it pulls out of a mesh."""
    if "spiked" not in marks["notes"]:
        return sample_surface(scan, count, rng)
    which, length = marks["notes"]["spiked"]
    flat = scan.vertices.copy()
    flat[which, 2] -= length
    cloud, normals = sample_surface(scan.replace(vertices=flat), count, rng)
    colors = None if cloud.colors is None else np.concatenate([cloud.colors, scan.colors[which]])
    spikes = Scan(np.concatenate([cloud.vertices, scan.vertices[which]]), colors=colors, path=scan.path)
    return spikes, np.concatenate([normals, np.tile(np.float32([0, 0, 1]), (len(which), 1))])


def sample_surface(scan: Scan, count: int, rng) -> tuple[Scan, np.ndarray]:
    """A cloud of `count` points uniform over a mesh's area (colours interpolated), and the unit normals of
    their triangles, (count, 3)."""
    v = scan.vertices.astype(np.float64)
    a, b, c = (v[scan.faces[:, i]] for i in range(3))
    cross = np.cross(b - a, c - a)
    area = np.linalg.norm(cross, axis=1)
    which = rng.choice(len(area), size=count, p=area / area.sum())
    u, w = rng.random((2, count))
    flip = u + w > 1.0
    u[flip], w[flip] = 1.0 - u[flip], 1.0 - w[flip]
    weights = np.stack([1.0 - u - w, u, w], -1)

    def mix(x: np.ndarray) -> np.ndarray:
        corners = x[scan.faces[which]].astype(np.float64)  # (count, 3 corners, channels)
        return np.einsum("nk,nkc->nc", weights, corners)

    colors = None if scan.colors is None else np.clip(np.rint(mix(scan.colors)), 0, 255).astype(np.uint8)
    cloud = Scan(vertices=mix(v).astype(np.float32), colors=colors, path=scan.path)
    return cloud, (cross[which] / np.maximum(area[which, None], 1e-12)).astype(np.float32)


def vertex_normals(scan: Scan) -> np.ndarray:
    """(N, 3) area-weighted vertex normals of a mesh (zero for vertices without triangles)."""
    v = scan.vertices.astype(np.float64)
    a, b, c = (v[scan.faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    normals = np.zeros_like(v)
    for i in range(3):
        np.add.at(normals, scan.faces[:, i], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


# --- the rest of the person, and the room ---------------------------------------------------------------------

_MAX_SCENE_VERTICES = 40_000


def _scene(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """A neck and the front of the shoulders and chest below the face, as a scanner that sees the whole person
    records them, and with probability `wall` a flat wall behind the head (a depth camera in a room): surfaces of
    the scan's own kind (mesh or point cloud) and about its density (at most `_MAX_SCENE_VERTICES` vertices)."""
    nose = _nose(scan, marks).astype(np.float64)
    v = scan.vertices
    front = (np.abs(v[:, 0] - nose[0]) < 15.0) & (v[:, 2] > nose[2] - 50.0)  # the profile: nose, lips, chin
    chin = min(float(v[front, 1].min()) if front.any() else nose[1] - 70.0, nose[1] - 60.0) + 10.0
    neck_z, neck_r = nose[2] - rng.uniform(95, 115), rng.uniform(45, 55)
    neck_len, half_width, half_depth = rng.uniform(60, 110), rng.uniform(160, 220), rng.uniform(80, 120)
    torso_z, height, slope = neck_z + rng.uniform(-20, 10), rng.uniform(150, 400), rng.uniform(20, 60)

    def neck(u, v):
        a = np.radians(200 * u - 100)
        return np.c_[nose[0] + neck_r * np.sin(a), chin - neck_len * v, neck_z + neck_r * np.cos(a)]

    def torso(u, v):
        a = np.radians(180 * u - 90)
        y = chin - neck_len - slope * np.sin(a) ** 2 - height * v
        return np.c_[nose[0] + half_width * np.sin(a), y, torso_z + half_depth * np.cos(a)]

    side, depth = rng.uniform(300, 600), nose[2] - rng.uniform(*config.wall_behind)

    def wall(u, v):
        return np.c_[nose[0] + side * (2 * u - 1), nose[1] + side * (1 - 2 * v), np.full_like(u, depth)]

    # (surface, its width, its height)
    parts = [(neck, 3.5 * neck_r, neck_len), (torso, 2.5 * half_width, height)]
    if rng.random() < config.wall:
        parts.append((wall, 2 * side, 2 * side))
    area = sum(w * h for _, w, h in parts)
    spacing = max(_cell_for(scan, scan.num_vertices), float(np.sqrt(area / _MAX_SCENE_VERTICES)))
    return _append(scan, [_grid_surface(f, int(w / spacing) + 2, int(h / spacing) + 2) for f, w, h in parts])


def _grid_surface(surface, nu: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (nu * nv, 3), triangles) of `surface(u, v)` over a grid of [0, 1]^2."""
    u, v = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv))
    i = np.arange(nu * nv).reshape(nv, nu)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    return surface(u.ravel(), v.ravel()).astype(np.float32), np.r_[np.c_[a, c, b], np.c_[b, c, d]]


def _append(scan: Scan, parts: list[tuple[np.ndarray, np.ndarray]]) -> Scan:
    """`scan` with the surfaces `parts` added: their triangles when it is a mesh, their vertices alone when it is
    a point cloud; colours the scan's median colour, uv (0, 0)."""
    vertices, faces = [scan.vertices], [] if scan.is_point_cloud else [scan.faces]
    for v, f in parts:
        if not scan.is_point_cloud:
            faces.append(f + sum(len(x) for x in vertices))
        vertices.append(v)
    added = sum(len(v) for v, _ in parts)
    extra = {}
    if scan.colors is not None:
        colour = np.median(scan.colors, axis=0).astype(np.uint8)
        extra["colors"] = np.concatenate([scan.colors, np.repeat(colour[None], added, 0)])
    if scan.uv is not None:
        extra["uv"] = np.concatenate([scan.uv, np.zeros((added, 2), np.float32)])
    faces = None if scan.is_point_cloud else np.concatenate(faces).astype(np.int64)
    return scan.replace(vertices=np.concatenate(vertices), faces=faces, **extra)


# --- the file's frame -----------------------------------------------------------------------------------------


def _turn(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Turned about the vertical (y): half a turn with probability `turn_back` (looking along -z), else any
    angle."""
    back = rng.random() < config.turn_back
    degrees = 180.0 if back else rng.uniform(-180.0, 180.0)
    return scan.replace(vertices=rotate_points(scan.vertices, axis_rotation(1, degrees)))


def _axes(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """The z-up convention."""
    return scan.replace(vertices=rotate_points(scan.vertices, Z_UP))


def _offset(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Moved by up to `offset` mm in a random direction."""
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(0.0, config.offset)
    return scan.replace(vertices=scan.vertices + shift.astype(np.float32))


def _units(scan: Scan, rng, config: RealismConfig, marks: dict) -> Scan:
    """Centimetres, metres or a unitless model whose largest side is log-uniform in `unitless_size`."""
    weights = np.asarray(config.unit_weights, np.float64)
    unit = rng.choice(["cm", "m", "unitless"], p=weights / weights.sum())
    size = float(np.exp(rng.uniform(*np.log(config.unitless_size))))
    v = scan.vertices.astype(np.float64)
    factor = {"cm": 0.1, "m": 0.001, "unitless": size / float((v.max(0) - v.min(0)).max())}[unit]
    return scan.replace(vertices=(v * factor).astype(np.float32))


_APPLY = {
    "holes": _holes,
    "boundary": _boundary,
    "density": _density,
    "noise": _noise,
    "spikes": _spikes,
    "point_cloud": _point_cloud,
    "scene": _scene,
    "turn": _turn,
    "axes": _axes,
    "offset": _offset,
    "units": _units,
}
