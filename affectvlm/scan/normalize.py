"""`normalize_scan`: put every face in the same frame before rendering.

The frame: the nose tip at the origin, +y up, +z towards the viewer, and lengths divided by the
scan's robust radius (the 99th percentile of the vertices' distance to the nose tip after cropping),
so that a 90 mm crop of a large face and of a small one both fill the unit sphere and the renderer's
fixed window alike. First the scan is turned into that frame (`find_face` finds which way is up and forward from
the face itself: y-up or z-up files, looking along +z, -z or turned any way, the head looking up or down or tilted
to a shoulder) and converted to millimetres (mm, cm, m or unitless, read from the face's and the scan's size).
Normalising is done once: a scan `normalize_scan` returned (`Scan.normalized`) comes back unchanged.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .clean import drop_stray_points, face_the_viewer, fill_pinholes, orient_faces, weld_soup
from .denoise import denoise
from .io import drop_nonfinite
from .register import follow, normals, still_parts
from .types import Scan, ScanError, file_tag, spread_sample

__all__ = [
    "normalize_scan",
    "normalize_sequence",
    "find_nose_tip",
    "detect_units_scale",
    "find_face",
    "facing_turn",
    "FACINGS",
    "front_view_is_face",
    "axis_rotation",
    "rotate_points",
]

# A face or head scan measures 60-600 mm across its largest side. The file's units are the factor (mm, cm, m)
# that puts the scan in that range; the range spans exactly a factor of ten, so at most one of mm and cm fits.
# A scan that fits none (a normalised or unitless model, a toy) is scaled to a typical face's size instead.
_FACE_EXTENT_MM = (60.0, 600.0)
_UNITLESS_EXTENT_MM = 200.0
_UNIT_SCALES = (("mm", 1.0), ("cm", 10.0), ("m", 1000.0))
# The face's own size (`find_face`, step 5) comes within 15 % of the truth for 93-100 % of faces, 0.71x to 1.33x at
# worst (580 faces of both face models in mm: clean, in hand-written ARKit recipes, and with every kind of scanner
# realism at once): a unit is taken when that size is 0.75x to 1.4x of it.
_UNIT_SNAP = (0.75, 1.4)
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
    ref = spread_sample(vertices, sample).astype(np.float32)
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


# --- the face's own frame -------------------------------------------------------------------------------------
# `find_face` looks at a 2,000-4,000 point subsample of the scan from many directions, keeps the one from which it
# looks most like a face seen from the front, then measures how large the face is. Seen from a frame, the nose tip
# is the frontmost point that is not a spike (alone in its 12 mm cube), and the surface within 90 mm of it is a
# depth map: 16 x 16 cells over the 180 mm square centred on the front 7 mm of the nose, each the frontmost depth in
# it (units of 90 mm, behind the tip), NaN where there is no surface. Maps are compared after taking out their tilt
# (the depth slope from top to bottom: the head's pitch) and, while searching, their slope across (a turn that
# the coarse grid missed). A map's cost (`_cost`) is its mean difference from a mean face's map (`_TEMPLATE`,
# either way up; a cell without surface counts 0.3) plus the mean difference from its own left-right mirror image
# (a face is symmetric about the plane through its nose that holds the vertical and the line of sight).
#   1. Search: each file axis as the vertical, turned about it every 30 degrees, tilted by -30 to 30 degrees in
#      steps of 15 and rolled by -30, 0 and 30: 540 frames, each seen through an 800-point subsample (a frame and
#      its upside-down twin show the same view, so twins are left to step 4). The scale is
#      the units' the scan's size suggests (`detect_units_scale`); when no face shows at it, the scales that make
#      the scan 190 mm (a face mask) or 330 mm (a head with its neck) across are tried, and taken only if their best
#      frame costs less than the units' did. A face found at a cost over 0.15 (4 % of faces in their own units,
#      most unitless faces 0.3-0.5 units across, whose middle looks like a face at metres' scale) is looked for at
#      the other scales too, and one that costs 0.03 less there wins.
#   2. The file's own frame is kept when it costs at most 0.02 more than the best (a frontal face; a shape that
#      looks alike from everywhere). Else the turn is refined: the slope across predicts the rest of it, and nine
#      frames 1.5 degrees apart about the prediction decide, the mirror now counting fully.
#   3. It is a face when (`_looks_like_face`) along every line through the tip the surface 11-27 mm away (its points
#      that are not spikes) falls at least 1.4 mm behind it on one side (a roof's ridge, a cylinder: on neither; a
#      spike there counted as surface before: 11 of 500 realistic held-out scans showed no face, 7 now; 13 of 500 of
#      another set, 10), 80 % of the template's inner
#      cells have surface, the map is within 0.18 of the template and its detail (each cell's depth relative to the
#      5 x 5 cells about it: eye sockets, nose, lips) correlates with the template's by 0.45 or more (faces: 0.5 to
#      0.95; a cone, a sphere, a blob: under 0.4). Else the file's frame and size rule are kept: a cube, a sphere or
#      a plane is normalised as before, and `check_face` notes it.
#   3b. No face in the whole scan, or one only at a scale that is no unit (a face in a larger scene: a body below
#      it, a wall behind it make the scan a metre across, so no unit fits, and outnumber the face's points in the
#      subsample; at the scale that makes that scene a face, a face passes for a nose on a blob; or a unitless
#      face, which then takes about 100-300 ms): candidate noses,
#      at each unit and at the scales that make the scene 600 mm (a head and shoulders) or 1 m across, are the
#      points frontmost within their 40 mm square and the eight about it, seen from each file axis up and every
#      30 degrees about it, that stand out all round about as far as a nose does (a chest, a shoulder, a wall's
#      edge do not: the frontmost point of all may be a chest or a forehead, never the nose). Steps 1-4 on the
#      scan's points within 112 mm of the 3 at each scale whose map from there is likest the template's; of those
#      that clearly show a face (detail 0.6 or more; an ear can) and a face found at a guessed scale, the first is
#      kept unless another's detail is clearly likelier the template's, by 0.1 (`_find_in_scene`, `_likelier`); a face
#      found at a guessed scale and the scene's best are compared each at its best over the sizes of step 5 (a
#      unitless face's nose and mouth, seen at 4x its size, passed for likelier than the face seen at 1.3x).
#   3c. The face about its nose: the nose is the frontmost point of the frame found, and where the scan's points
#      within 112 mm of it are under 70 % of all (a scene), the steps below look at those only: a chest in front
#      of the chin no longer takes the nose tip's place once the head is settled upright, nor does the crop
#      centre there (`normalize_scan` looks for the nose tip within 40 mm of it).
#   4. Up or down (`_upright`): the detail in the upper half minus the lower half, upside down, against the
#      template's: about +1 the right way up (faces of both face models, with expressions, pitched or rolled: 0.2 to
#      1.5; a mouth wide open can bring it under 0: 4 of 468 settled held-out faces) and as much below 0 upside
#      down. While searching, the frame found keeps its vertical unless it is under
#      -0.25. Once the face is settled (step 6) it is decided again on the face's own points (`_upside_down`): a
#      file's +y or +z stays up unless the face is under -0.25 that way, its -y or -z only when the face is over
#      0.25 that way, and the face is settled again if that turns it. The search's frame is either of a pair of twins
#      and its subsample of a scene can hold few of the face's points: a depth camera's frame (+y down) left 25 of
#      240 held-out faces upside down, 12 now, and a face framed by a wall went from 0.04 to -0.36 once settled;
#      faces held upside down and rolled a little, 8 of 138 found upside down, none now. (Turning any settled head
#      under -0.05, with no preference for the file's axes, flipped open-mouthed faces that had been right.)
#   5. Size (`_size`, in the frame of step 6): the frame scaled by 2^(-1 .. 1) in 1/8 steps; where the map is
#      closest to the template says roughly, and within 1.7x under to 1.2x over that, where its detail (eye
#      sockets, nose, lips) correlates best with the template's (parabola through the best three), divided by 0.96,
#      gives millimetres per file unit. The map's shape alone erred by up to 1.8x over (a face's proportions are its
#      identity's: 30 % of faces more than 15 % off); its detail puts 93-100 % within 15 % (0.71x to 1.33x at worst).
#      Where the window's best is its top and the detail still rises past it, the detail's best peak over the whole
#      range is taken (`_detail_peak`): two SFM identities of 20 (seed 21) were measured 1.9-2.1x over, their faces
#      cropped to the nose and mouth; 0.958 -> 0.971 of 240 faces in mm within 15 %, worst 2.07x -> 1.26x. So is
#      a peak outside the window whose detail correlates better by 0.1 than the window's best (a smiling ICT face
#      with a flat nose, 0.78 at 0.92x against 0.48 at 1.83x, was measured 1.97x over): of 5,000 faces of both face
#      models (seeds 13, 21, 41; in mm, unitless 0.3, 0.5, 10 and 100 units across, and realistic), those whose
#      unit came out more than 0.75x-1.4x off, 171 -> 154 (18 put right, 1 put wrong). A face measured under 0.9x
#      the search's scale is measured again at the size found, window by window (`_remeasured`); a measure again
#      that walks back past the search's scale (over 1/0.9x of it) undoes the measure that asked for it, and the
#      first measure stands (stop 66: seed 21's F0002, whose shape grows likelier the template up to 2x, was
#      measured 2.4x over in 26 of its 78 unitless files; of 6,656 files of seeds 13, 21, 41 and 57, those whose
#      unit came out more than 0.75x-1.4x off, 151 -> 114: 37 put right, none put wrong).
#      `_units_for` then takes mm, cm or m when the face's size is 0.75x to 1.4x of it (a unit that would make the
#      face a third larger, or 40 % smaller, is not the file's: a unitless face 0.3 units across, which metres make
#      300 mm, or 10 or 100 units across, which cm and mm make 100 mm: 0.80 -> 0.92 and 0.82 -> 0.97 of 60 held-out
#      faces; 0.5 units across 0.82 -> 0.78, one identity's size taken at metres' scale stays 2x over), else the
#      face's size itself (a unitless scan; until stop 65 only where that differed from the size rule's 200 mm
#      guess by more than 1.5x, which drew clean faces 1 or 2 units across 1.18x too large at the median).
#   6. The head's pose (`_settle`): a head looking down puts its forehead in front of its nose tip, and one
#      tilted to a shoulder is not symmetric about the vertical. Three passes, each turning the frame by the pitch
#      that gives the map the template's tilt and by the turn its slope across suggests, then keeping the most
#      symmetric, most template-like of a range of rolls (within 45 degrees, then 6, then 2) and of small turns. On
#      40 faces of both face models with expressions, posed up to 30 degrees down or up, 40 degrees rolled, or all
#      of it turned: the turn and roll within 3 degrees of the face model's own frame, the pitch within 11 (a
#      face's own profile against the template's: 3.8 on average).
#   7. A head pitched and rolled at most 12 degrees from an axis-aligned frame keeps that frame's vertical, and
#      when it is turned at most 20 degrees about it too, the file's pose (as `align=False` does): a frontal face
#      comes out exactly as it did before orientation was detected, a face turned about the vertical only is turned
#      back about it, and a face as the training scans held it (a few degrees each way) is not moved by the pitch
#      estimate's own error. Past that the head is set upright.
_SEARCH_POINTS, _COARSE_POINTS = 2000, 800
_SEARCH_RADIUS_MM = 90.0
_SPIKE_CUBE_MM, _CAP_DEPTH_MM, _CAP_RADIUS_MM = 12.0, 7.0, 20.0
_BUMP_RING_MM = (11.0, 27.0)
_GRID = 16
_CELLS = (np.arange(_GRID) + 0.5) * (2.0 / _GRID) - 1.0
_CELL_X, _CELL_Y = np.meshgrid(_CELLS, -_CELLS)  # row 0 at the top, in units of the search radius
_CELL_R = np.hypot(_CELL_X, _CELL_Y)
_MISSING_COST = 0.3
_MIN_BUMP, _MIN_COVER, _MAX_DIFFERENCE, _MIN_DETAIL_MATCH = 0.015, 0.8, 0.18, 0.45
_KEEP_COST, _UPRIGHT_MARGIN = 0.02, 0.25
_COARSE_YAW, _FINE_YAW, _KEEP_TURN, _KEEP_TILT = 30.0, 1.5, 20.0, 12.0  # degrees
_PITCHES = (-30.0, -15.0, 0.0, 15.0, 30.0)
_ROLLS = (-30.0, 0.0, 30.0)
_EXTENT_GUESSES_MM = (190.0, 330.0)  # a face mask, a head with its neck
# with a facing given, the sizes (mm) a scan that fits no unit is looked at as: a face mask to a bust, 12 % apart
_HELD_EXTENTS_MM = tuple(150.0 * 1.12**k for k in range(11))
# a face in a larger scene (step 3b): the subsample that finds candidate noses, the scales that make the scene a head
# with its shoulders or a person before a wall, the least points about a candidate, a candidate within 30 mm of one
# searched is not searched again, and 3 are searched at each scale; the square a candidate is frontmost in (mm), the
# scene's size (mm) at a scale worth searching, the most a nose stands out (a step's edge stands out further), the
# most candidates looked at (memory), and a whole standing person's height (mm; searched when nothing else shows)
_SCENE_POINTS, _SCENE_GUESSES_MM, _MIN_REGION_POINTS, _SEEN_MM = 8000, (600.0, 1000.0), 200, 30.0
_CANDIDATES_PER_SCALE, _LIKELIER_BY, _MIN_SCENE_DETAIL = 3, 0.1, 0.6
_FRONT_CELL_MM, _SCENE_MM, _MAX_BUMP = 40.0, (200.0, 3000.0), 0.35
_MAX_FRONTS, _STANDING_MM = 256, 1700.0
# the face about the nose the search found (search radii), its share of a scene, where the nose tip is (mm)
_FACE_REACH, _MAX_FACE_SHARE, _NOSE_REACH_MM = 1.25, 0.7, 40.0
_REMEASURE_BELOW, _REMEASURES = 0.9, 3  # measured under 0.9x the search's scale: again, 3 times at most
_SIZES = 2.0 ** (np.arange(-8, 9) / 8.0)
# step 1: a face found at a cost over this is looked for at the other scales too, and one there costing this much less
# wins (a unitless face 0.3 or 0.5 units across looks like a face at metres' scale, its middle seen as a whole face)
_DOUBTFUL_COST, _CLEARLY_LESS_COST = 0.15, 0.03
# step 5: the detail's best scale is looked for from 1.7x under to 1.2x over the shape's
_DETAIL_WINDOW = (1.7, 1.2)
# ... unless a peak of the detail outside that window correlates better by this much (`_detail_peak`)
_CLEARLY_BETTER = 0.1
# ... and divided by 0.96, that scale's median against the truth (0.94-0.98 on each probe in docs/RESULTS.md)
_DETAIL_CALIBRATION = 1.0 / 0.96
# a normalised face is its robust radius across: 80-95 mm, the search's radius within a fifth either way
_FRONT_SIZES = (0.8, 0.9, 1.0, 1.1, 1.25)


def axis_rotation(axis: int, degrees: float) -> np.ndarray:
    """(3, 3) rotation by `degrees` about coordinate axis `axis` (0: x, 1: y, 2: z; right-handed)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def rotate_points(points: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(N, 3) float32 `points @ rotation.T`, computed elementwise: a BLAS matmul next to torch's threads can stall
    for tens of milliseconds."""
    r = np.asarray(rotation, np.float32)
    p = np.asarray(points, np.float32)
    return p[:, :1] * r[:, 0] + p[:, 1:2] * r[:, 1] + p[:, 2:] * r[:, 2]


# The vertical axes: the rotation taking each file axis to +y (y-up and z-up files first).
_UPS = (np.eye(3), axis_rotation(0, -90), axis_rotation(2, 90))
_YAWS = np.arange(0.0, 360.0, _COARSE_YAW)


def _frame(up: int, yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """The rotation that makes file axis `_UPS[up]` the vertical, turns by `yaw` about it, tilts by `pitch` and
    rolls by `roll` about the line of sight."""
    return axis_rotation(2, roll) @ axis_rotation(0, pitch) @ axis_rotation(1, yaw) @ _UPS[up]


_SEARCH_SHAPE = (len(_UPS), len(_YAWS), len(_PITCHES), len(_ROLLS))
_SEARCH_FRAMES = np.stack(
    [
        _frame(up, yaw, pitch, roll)
        for up in range(len(_UPS))
        for yaw in _YAWS
        for pitch in _PITCHES
        for roll in _ROLLS
    ]
)
# where candidate noses are looked for in a larger scene: each file axis up, turned every 30 degrees about it
_DIRECTIONS = _SEARCH_FRAMES.reshape(*_SEARCH_SHAPE, 3, 3)[
    :, :, _PITCHES.index(0.0), _ROLLS.index(0.0)
].reshape(-1, 3, 3)
# the file's own frame
_IDENTITY = int(np.ravel_multi_index((0, 0, _PITCHES.index(0.0), _ROLLS.index(0.0)), _SEARCH_SHAPE))


class Face(NamedTuple):
    """What `find_face` found: each None when nothing looks like a face."""

    rotation: np.ndarray | None  # (3, 3) to the canonical frame, or None to keep the file's
    size: float | None  # millimetres per file unit the face's size suggests
    nose: np.ndarray | None  # (3,) about where the nose tip is, in the file's units and axes


def find_face(vertices: np.ndarray, *, search: bool = True) -> Face:
    """The face's own frame, size and place, from the face itself (see above).

    Args:
        vertices: (N, 3) in the file's units and axes.
        search: False takes the file's axes as the face's (+z towards the viewer, +y up: a facing the scan's user
            gave, `normalize_scan`'s `orient`), and finds only the face's size and place and how far its head is
            pitched or rolled: no other direction is looked at, nor is the face turned upside down.

    Returns:
        `Face(rotation, size, nose)`: `rotation` (3, 3) puts the face in the canonical frame (+y up, +z towards the
        viewer; rows: the canonical x, y and z axes in the file's coordinates), or None to keep the file's frame
        (the head is turned at most 20 degrees from it, pitched and rolled at most 12); `size` the millimetres per
        file unit the face's size suggests; `nose` the frontmost point of the face as the search saw it (within
        about 20 mm of the nose tip), in file units. All None when nothing looks like a face. Cost: about 30 ms
        whatever the scan's size; a unitless face, a face in a larger scene (step 3b) or a shape that is no face
        about 100-300 ms.
    """
    if len(vertices) < 16:
        return Face(None, None, None)
    found = _find_at_scales(vertices, search)
    if search and (found is None or found[1] not in dict(_UNIT_SCALES).values()):
        found = _likelier(found, _find_in_scene(vertices), at_its_size=True)
    if found is None:
        return Face(None, None, None)
    frame, scale, points, solid, nose = _about_nose(vertices, *found)
    frame = _settle(points, solid, frame)
    if search and _upside_down(points, solid, frame):
        frame = _settle(points, solid, axis_rotation(2, 180) @ frame)
    size = scale * _size(points, solid, frame)
    if size < _REMEASURE_BELOW * scale:
        again, remeasured = _remeasured(vertices, nose, frame, size)
        # measured again past the search's own scale, the face contradicts the measure that asked for it: that stands
        if remeasured <= scale / _REMEASURE_BELOW:
            size = remeasured
            # the search's scale was not the face's: the frame seen at its own (a given facing is kept)
            if search and size < _UNIT_SNAP[0] * scale:
                frame = again
    return Face(_keep_pose(frame), size, nose)


def _remeasured(
    vertices: np.ndarray, nose: np.ndarray, frame: np.ndarray, size: float
) -> tuple[np.ndarray, float]:
    """Steps 6 and 5 again at the size found (mm per file unit) until it stays put: (frame, size). A face found at a
    scale that makes it larger than it is (a unitless face 0.3 units across, taken for metres) is seen through its
    middle only (the points within `_FACE_REACH` search radii of the nose), measures too large, and can be taken
    for upside down (step 4 is decided again too). A size that never stays put (each measure undoing the last: a
    point cloud in a scene with every kind of scanner noise at once, 0.7x then 1.4x then 0.7x) leaves the first
    measure and frame as they were."""
    first = frame, size
    for _ in range(_REMEASURES):
        sample = _scene_region(vertices, nose, size)
        if sample is None:
            sample = spread_sample(vertices, _SEARCH_POINTS).astype(np.float64) - nose
        points, solid = _search_points(sample, size)
        frame = _settle(points, solid, frame)
        factor = _size(points, solid, frame, past_window=False)
        size *= factor
        if _REMEASURE_BELOW <= factor <= 1.0 / _REMEASURE_BELOW:
            break
    else:
        return first
    if _upside_down(points, solid, frame):
        frame = _settle(points, solid, axis_rotation(2, 180) @ frame)
    return frame, size


_Found = tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]  # frame, scale, points, solid, origin


def _find_at_scales(vertices: np.ndarray, search: bool = True) -> _Found | None:
    """Steps 1-4 on a subsample of the whole scan at each scale guess: (frame, scale, points, solid, origin) of the
    first that shows a face (`origin`: the file point at the search points' zero), or None. `search`: False looks
    from the file's own frame only (`_as_held`)."""
    sample = spread_sample(vertices, _SEARCH_POINTS).astype(np.float64)  # 2,000 to 4,000 points
    origin = np.median(sample, axis=0)
    sample = sample - origin
    if not search:
        return _held_at_scales(sample, detect_units_scale(vertices), origin)
    least, found = np.inf, None
    for scale in _scale_guesses(detect_units_scale(vertices), _extent(sample)):
        points, solid = _search_points(sample, scale)
        frame, maps, bump, cost = _search(points, solid)
        # another scale than the units' only when it looks more like a face than the units' did; after a face
        # found at a doubtful cost, one whose cost is clearly less
        bar = least if found is None else found[0] - _CLEARLY_LESS_COST
        if cost <= bar and _looks_like_face(maps, bump):
            found = cost, (frame, scale, points, solid, origin)
            if cost <= _DOUBTFUL_COST:
                break
        least = min(least, cost)
    return None if found is None else found[1]


def _held_at_scales(sample: np.ndarray, unit: float, origin: np.ndarray) -> _Found | None:
    """`_find_at_scales` from the file's own frame only (a facing the scan's user gave): the units' scale when the
    face shows there, else of the scales that make the scan `_HELD_EXTENTS_MM` across, the one at which its detail
    is likest the template's (one view a scale: a few milliseconds in all), or None."""
    shown = []
    scales = [unit] + [mm / _extent(sample) for mm in _HELD_EXTENTS_MM]
    for k, scale in enumerate(scales):
        points, solid = _search_points(sample, scale)
        frame, maps, bump, _ = _as_held(points, solid)
        if _looks_like_face(maps, bump):
            if k == 0:
                return frame, scale, points, solid, origin
            shown.append((float(_detail_match(maps)[0]), k, (frame, scale, points, solid, origin)))
    return max(shown)[2] if shown else None


def _find_in_scene(vertices: np.ndarray) -> _Found | None:
    """Step 3b, a face in a larger scene (a body below it, a wall behind it): the scene's size is not the face's,
    and its points outnumber the face's in the subsample. At each unit, and at the scales that make the scene as
    large as a head with its shoulders or a person before a wall, the frontmost point seen from each of the search's
    directions, among the points about it, that stands out all round as far as a nose does (`_views`' bump: not a
    chest, a shoulder, a wall or its edge) is a candidate nose; steps 1-4 on the scan's points about the few whose
    map from there is likest the template's at each scale. Of the faces they show (an ear can pass too) the first
    is kept unless another is clearly likelier the template (`_likelier`). When none shows, the scale that makes the
    scene a whole standing person (`_STANDING_MM`: a body scanner's file in inches or decimetres) is searched too:
    only then, since it costs about 80 ms and the scenes above are found without it."""
    sample = spread_sample(vertices, _SCENE_POINTS).astype(np.float64)
    origin = np.median(sample, axis=0)
    sample = sample - origin
    extent = _extent(sample)
    best, scales = None, [unit for _, unit in _UNIT_SCALES]
    scales += [
        g for g in (mm / extent for mm in _SCENE_GUESSES_MM if extent > 0) if min(_ratio(g, scales)) > 1.4
    ]
    for scale in scales:
        best = _search_scene_at(vertices, sample, origin, scale, best)
    if best is None and extent > 0 and min(_ratio(_STANDING_MM / extent, scales)) > 1.4:
        best = _search_scene_at(vertices, sample, origin, _STANDING_MM / extent, None)
    return best


def _search_scene_at(
    vertices: np.ndarray, sample: np.ndarray, origin: np.ndarray, scale: float, best: _Found | None
) -> _Found | None:
    """Step 3b at one scale (mm per file unit), `sample` the scene's subsample less `origin`: `best`, or a face
    found about one of the `_CANDIDATES_PER_SCALE` candidate noses likeliest a nose and clearly likelier the
    template (`_likelier`). A scale that puts the scene outside `_SCENE_MM` is not searched."""
    if not _SCENE_MM[0] <= _extent(sample) * scale <= _SCENE_MM[1]:
        return best
    points, solid = _search_points(sample, scale)
    frame, tip = _local_fronts(points, solid, _DIRECTIONS)
    maps, bump = _views(points, solid, _DIRECTIONS[frame], at=tip)
    nose_like = np.flatnonzero((bump >= _MIN_BUMP) & (bump <= _MAX_BUMP))
    searched = []
    for i in nose_like[np.argsort(sum(_cost(maps[nose_like], across=True)))]:
        nose = origin + points[tip[i]] * (_SEARCH_RADIUS_MM / scale)
        if any(np.abs(nose - seen).max() * scale < _SEEN_MM for seen in searched):
            continue
        searched.append(nose)
        best = _likelier(best, _search_about(vertices, nose, scale))
        if len(searched) >= _CANDIDATES_PER_SCALE:
            break
    return best


def _search_about(vertices: np.ndarray, nose: np.ndarray, scale: float) -> _Found | None:
    """Steps 1-4 on a subsample of the scan's points within `_FACE_REACH` search radii of `nose` (file units), at
    `scale`: (frame, scale, points, solid, nose) when they clearly show a face, its detail like the template's by
    `_MIN_SCENE_DETAIL` (a nose seen as a face at several times its size passes for one at 0.51-0.57: a face of 60
    mm across in mm is a metre-wide scene in cm), else None."""
    region = _region(vertices, nose, scale)
    if region is None:
        return None
    points, solid = _search_points(region[1], scale)
    frame, maps, bump, _ = _search(points, solid)
    clear = _looks_like_face(maps, bump) and _detail_match(maps)[0] >= _MIN_SCENE_DETAIL
    return (frame, scale, points, solid, nose) if clear else None


def _likelier(found: _Found | None, other: _Found | None, at_its_size: bool = False) -> _Found | None:
    """Of two faces found, `other` when its map's detail is clearly more like the template's (by `_LIKELIER_BY`),
    else `found`. A scene that fits no unit is a unitless face or a face in a larger scene: at the size that makes
    the scene a face (a face before a wall 100 mm behind it) the whole face passes for a nose on a smooth blob, its
    detail just like a face's (0.50-0.52 against 0.65-0.85 at the right unit), and a unitless face's nose at
    several times its size passes too (0.51-0.57 against 0.54-0.83 at the face's own size). `at_its_size`: each
    compared at its best over the sizes step 5 looks at (`_detail_at_its_size`), for a face found at a guessed scale
    against the scene's: a unitless face found at the face mask's scale, 1.2-1.35x its size (0.50-0.58), lost to its
    own nose and mouth seen at 4x (0.63-0.73), and was drawn 3.4-3.9x too large (stop 66)."""
    if found is None or other is None:
        return found or other
    if at_its_size:
        like = [_detail_at_its_size(f) for f in (found, other)]
    else:
        like = [_detail_match(_views(f[2], f[3], f[0][None])[0])[0] for f in (found, other)]
    return other if like[1] > like[0] + _LIKELIER_BY else found


def _detail_at_its_size(found: _Found) -> float:
    """The detail's best match over the sizes step 5 looks at, the range's ends left out (a face seen at half its
    size is a head's outline): the face as it looks at its own size, wherever in that range the search's scale put
    it. 15 views: about 5 ms."""
    frame, _, points, solid = found[:4]
    maps, _ = _views(points, solid, _SIZES[1:-1, None, None] * frame)
    return float(_detail_match(maps).max())


def _about_nose(
    vertices: np.ndarray,
    frame: np.ndarray,
    scale: float,
    points: np.ndarray,
    solid: np.ndarray,
    origin: np.ndarray,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """Step 3c: (frame, scale, points, solid, nose): the nose as `frame` sees it (its frontmost solid point, in file
    units) and, when the scan's points within `_FACE_REACH` search radii of it are under `_MAX_FACE_SHARE` of
    all (a body below the head, a wall behind it), a subsample of those in place of the search points: the rest of
    the scene no longer outnumbers the face, nor comes in front of it when the head is settled upright."""
    nose = _nose(frame, scale, points, solid, origin)
    region = _scene_region(vertices, nose, scale)
    if region is not None:
        points, solid = _search_points(region, scale)
    return frame, scale, points, solid, nose


def _scene_region(vertices: np.ndarray, nose: np.ndarray, scale: float) -> np.ndarray | None:
    """`_region`'s subsample about `nose` when its points are under `_MAX_FACE_SHARE` of the scan's (a scene: a
    body below the head, a wall behind it), else None."""
    region = _region(vertices, nose, scale)
    if region is not None and len(region[0]) < _MAX_FACE_SHARE * len(vertices):
        return region[1]
    return None


def _nose(
    frame: np.ndarray, scale: float, points: np.ndarray, solid: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """(3,) the frontmost solid search point as `frame` sees it, in file units."""
    depth = rotate_points(points, frame)[:, 2]
    return origin + points[int(np.argmax(np.where(solid, depth, -np.inf)))] * (_SEARCH_RADIUS_MM / scale)


def _region(vertices: np.ndarray, nose: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(the scan's points within `_FACE_REACH` search radii of `nose`, a subsample of them less `nose`), or None
    when there are fewer than `_MIN_REGION_POINTS`."""
    reach = _FACE_REACH * _SEARCH_RADIUS_MM / scale
    near = vertices[sum((vertices[:, i] - nose[i]) ** 2 for i in range(3)) <= reach * reach]
    if len(near) < _MIN_REGION_POINTS:
        return None
    return near, spread_sample(near, _SEARCH_POINTS).astype(np.float64) - nose


def _search(points: np.ndarray, solid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The face's frame at one scale (steps 1, 2 and 4 above), its map (1, G, G) and bump (1,), and the coarse
    search's least cost."""
    step = max(1, len(points) // _COARSE_POINTS)
    coarse, _ = _views(points[::step], solid[::step], _SEARCH_FRAMES)
    cost = sum(_cost(coarse, across=True))
    frame = _refine(cost, coarse, points, solid)
    maps, bump = _views(points, solid, frame[None])
    # the frame found keeps its vertical, either way, unless the face is clearly upside down; its x axis has no say
    if _upright(maps)[0] < (0.0 if np.abs(frame[1]).argmax() == 0 else -_UPRIGHT_MARGIN):
        frame = axis_rotation(2, 180) @ frame  # half a turn about the line of sight
        maps, bump = _views(points, solid, frame[None])
    return frame, maps, bump, float(cost.min())


def _as_held(points: np.ndarray, solid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """`_search`'s answer when the file's own frame is the face's (a facing the scan's user gave): that frame, its
    map and bump, and its cost."""
    frame = np.eye(3)
    maps, bump = _views(points, solid, frame[None])
    return frame, maps, bump, float(sum(_cost(maps, across=True))[0])


def _upside_down(points: np.ndarray, solid: np.ndarray, frame: np.ndarray) -> bool:
    """Step 4 again, on the settled face: whether `frame` shows it upside down. A file's +y or +z stays up unless
    the face is clearly upside down that way (`_upright` under -`_UPRIGHT_MARGIN`), its -y or -z only when the face
    is clearly upright that way; its x axis has no say."""
    upright = _upright(_views(points, solid, frame[None])[0])[0]
    axis = int(np.abs(frame[1]).argmax())
    if axis == 0:
        return bool(upright < 0.0)
    return bool(upright < (-_UPRIGHT_MARGIN if frame[1, axis] > 0 else _UPRIGHT_MARGIN))


def _ratio(scale: float, scales: list[float]) -> np.ndarray:
    """How many times larger or smaller `scale` is than each of `scales`."""
    r = scale / np.asarray(scales, np.float64)
    return np.maximum(r, 1.0 / r)


def _scale_guesses(unit: float, extent: float) -> list[float]:
    """mm per file unit to search at: the unit the scan's size suggests, then those that make it as large as a face
    mask or a head with its neck (a unitless model, or one whose size suggests the wrong unit)."""
    guesses = [unit]
    for guess in (mm / extent for mm in _EXTENT_GUESSES_MM if extent > 0):
        if min(_ratio(guess, guesses)) > 1.4:
            guesses.append(guess)
    return guesses


def _looks_like_face(maps: np.ndarray, bump: np.ndarray) -> bool:
    """Whether one frame's map (1, G, G) shows a face: a nose standing out all round, surface about it, close to
    the template, and the template's detail (eye sockets, nose, lips: a cone, a sphere or a blob has other)."""
    cover = np.isfinite(maps[0][_INNER_CELLS]).mean()
    return bool(
        bump[0] >= _MIN_BUMP
        and cover >= _MIN_COVER
        and _cost(maps)[0][0] <= _MAX_DIFFERENCE
        and _detail_match(maps)[0] >= _MIN_DETAIL_MATCH
    )


def front_view_is_face(vertices: np.ndarray) -> bool:
    """Whether a normalised scan (the nose tip at the origin, +z towards the viewer, its robust radius 1) seen from
    the front passes the search's own test of a face (step 3, `_looks_like_face`) at one of `_FRONT_SIZES`, the
    right way up (step 4's measure over -0.25). `check_face` asks it of a scan in which `find_face` found no face,
    so the file's frame was kept: a face that frame shows from the front and upright passes (the search, on a
    coarser subsample, can miss one); a face the frame shows from above, behind or upside down, a teapot or a knot
    does not. Cost: a few milliseconds."""
    sample = spread_sample(vertices, _SEARCH_POINTS).astype(np.float64)
    front = np.eye(3)[None]
    for size in _FRONT_SIZES:
        maps, bump = _views(*_search_points(sample, size * _SEARCH_RADIUS_MM), front)
        if _looks_like_face(maps, bump) and _upright(maps)[0] > -_UPRIGHT_MARGIN:
            return True
    return False


def _search_points(sample: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, 3) float32 points in units of the search radius (`scale`: mm per file unit), and (S,) whether each has
    company in its 12 mm cube (a spike, alone in its cube, never makes a nose tip)."""
    points = sample * (scale / _SEARCH_RADIUS_MM)
    cube = np.floor(points * (_SEARCH_RADIUS_MM / _SPIKE_CUBE_MM)).astype(np.int64)
    cube -= cube.min(axis=0)
    key = (cube[:, 0] * (cube[:, 1].max() + 1) + cube[:, 1]) * (cube[:, 2].max() + 1) + cube[:, 2]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return points.astype(np.float32), counts[inverse] >= 2


def _views(points: np.ndarray, solid: np.ndarray, frames: np.ndarray, at: np.ndarray | None = None):
    """(K, G, G) depth maps of `points` (S, 3) seen from each of `frames` (K, 3, 3), and (K,) the bump: along the
    line through the tip where the surface 11-27 mm away falls least far behind it on both sides, the further of
    the two sides (of eight directions); -1 where a direction has no surface. The tip is each frame's frontmost
    solid point, or the point `at` (K,) gives."""
    k, s = len(frames), len(points)
    x, y, z = _seen(points, frames)  # each (K, S)
    tip = (np.argmax(np.where(solid, z, -np.inf), axis=1) if at is None else np.asarray(at))[:, None]
    x, y, z = (c - np.take_along_axis(c, tip, 1) for c in (x, y, z))
    r2 = x * x + y * y
    lo, hi = (d / _SEARCH_RADIUS_MM for d in _BUMP_RING_MM)
    ring = np.flatnonzero((r2 >= lo * lo) & (r2 <= hi * hi) & solid)  # a lone spike is no surface
    sector = np.minimum(((np.arctan2(y.take(ring), x.take(ring)) + np.pi) * (4 / np.pi)).astype(np.intp), 7)
    nearest = _max_per_bin(ring // s * 8 + sector, z.take(ring), k * 8).reshape(k, 8)
    level = np.minimum(nearest[:, :4], nearest[:, 4:]).max(axis=1)
    bump = np.where(np.isfinite(nearest).all(1), -level, -1.0)
    # centre the map on the front of the nose, not on whichever sampled point is frontmost: a steady mirror plane
    cap = (z >= -_CAP_DEPTH_MM / _SEARCH_RADIUS_MM) & (r2 <= (_CAP_RADIUS_MM / _SEARCH_RADIUS_MM) ** 2)
    count = cap.sum(1, keepdims=True)
    x = x - (x * cap).sum(1, keepdims=True) / count
    y = y - (y * cap).sum(1, keepdims=True) / count
    inside = np.flatnonzero(x * x + y * y + z * z <= 1.0)
    ix = np.clip(((x.take(inside) + 1.0) * (_GRID / 2)).astype(np.intp), 0, _GRID - 1)
    iy = np.clip(((1.0 - y.take(inside)) * (_GRID / 2)).astype(np.intp), 0, _GRID - 1)
    maps = _max_per_bin((inside // s * _GRID + iy) * _GRID + ix, z.take(inside), k * _GRID * _GRID)
    return maps.reshape(k, _GRID, _GRID), bump


def _seen(points: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, S) x, y and depth of `points` (S, 3) in each of `frames` (K, 3, 3), elementwise as `rotate_points`."""
    f, p = frames.astype(np.float32)[:, :, :, None], points.T
    return tuple(f[:, i, 0] * p[0] + f[:, i, 1] * p[1] + f[:, i, 2] * p[2] for i in range(3))


def _local_fronts(points: np.ndarray, solid: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frame, point) index pairs, at most `_MAX_FRONTS`, those that stand out most first: seen from each of
    `frames`, the solid points frontmost within their `_FRONT_CELL_MM` square and in front of the eight squares
    about it, each point once (a nose, and a chin, a chest, a shoulder: candidates that `_find_in_scene` sorts;
    the frontmost point of all may be a chest or a forehead, never the nose; a flat wall has none)."""
    x, y, z = _seen(points, frames)
    k, s = z.shape
    cell = _FRONT_CELL_MM / _SEARCH_RADIUS_MM
    ix, iy = (np.floor(c / cell).astype(np.intp) for c in (x, y))
    ix, iy = ix - ix.min() + 1, iy - iy.min() + 1
    n = int(max(ix.max(), iy.max())) + 2
    key = (np.arange(k)[:, None] * n + iy) * n + ix
    depth = np.where(solid, z, -np.inf)
    grid = np.full(k * n * n, -np.inf, np.float32)
    np.maximum.at(grid, key.ravel(), depth.ravel())
    grid = grid.reshape(k, n, n)
    pad = np.pad(grid, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    rings = [pad[:, i : i + n, j : j + n] for i in range(3) for j in range(3) if (i, j) != (1, 1)]
    with np.errstate(invalid="ignore"):  # -inf - -inf where nothing is seen
        prominence = np.where(depth == grid.ravel()[key], depth - np.max(rings, axis=0).ravel()[key], -np.inf)
    frame, point = np.nonzero(prominence > 0.0)
    order = np.argsort(-prominence[frame, point], kind="stable")
    frame, point = frame[order], point[order]
    _, first = np.unique(point, return_index=True)  # each point once, where it stands out most
    first = np.sort(first)[:_MAX_FRONTS]
    return frame[first], point[first]


def _max_per_bin(key: np.ndarray, value: np.ndarray, size: int) -> np.ndarray:
    """(size,) the largest `value` with each `key`; NaN for keys with none."""
    out = np.full(size, -np.inf, np.float32)
    np.maximum.at(out, key, value)
    out[np.isinf(out)] = np.nan
    return out


def _refine(cost: np.ndarray, maps: np.ndarray, points: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """The frame (3, 3) to settle from: the file's own when the search's best is not clearly better, else the best
    with its turn refined."""
    best = int(np.argmin(cost))
    if cost[_IDENTITY] <= cost[best] + _KEEP_COST:
        return np.eye(3)
    up, yaw, pitch, roll = np.unravel_index(best, _SEARCH_SHAPE)
    turn, _ = _tilts(maps[best : best + 1])
    yaws = _YAWS[yaw] + np.degrees(np.arctan(turn[0])) + np.arange(-4, 5) * _FINE_YAW
    frames = np.stack([_frame(up, a, _PITCHES[pitch], _ROLLS[roll]) for a in yaws])
    return frames[int(np.argmin(sum(_cost(_views(points, solid, frames)[0]))))]


# The head's pose within the frame: each pass turns the frame by the pitch that gives its depth map the template's
# tilt (`_pitch`) and by the turn its slope across suggests (twice: the nose tip moves with them), then keeps the
# most symmetric, most template-like map of a range of rolls about the line of sight, then of five small turns; the
# passes narrow the ranges.
_SETTLE_PASSES = ((45.0, 3.0, 0.0), (6.0, 1.0, 3.0), (2.0, 0.5, 1.5))  # (largest roll, its step, turn step)


def _settle(points: np.ndarray, solid: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """`frame` (3, 3) turned so that the head in it is neither pitched nor rolled: its tilt the template's, its map
    as symmetric and as like the template as it gets."""
    for span, step, turn_step in _SETTLE_PASSES:
        for _ in range(2):
            maps = _views(points, solid, frame[None])[0]
            turn = np.degrees(np.arctan(_tilts(maps)[0][0]))
            frame = axis_rotation(0, -_pitch(maps)[0]) @ axis_rotation(1, turn) @ frame
        frame = _likest(
            points, solid, [axis_rotation(2, r) @ frame for r in np.arange(-span, span + step / 2, step)]
        )
        if turn_step:
            frame = _likest(
                points, solid, [axis_rotation(1, a) @ frame for a in np.arange(-2, 3) * turn_step]
            )
    return frame


def _likest(points: np.ndarray, solid: np.ndarray, frames: list[np.ndarray]) -> np.ndarray:
    """The frame among `frames` whose map is most like the template and most symmetric."""
    return frames[int(np.argmin(sum(_cost(_views(points, solid, np.stack(frames))[0]))))]


def _size(points: np.ndarray, solid: np.ndarray, frame: np.ndarray, past_window: bool = True) -> float:
    """The factor by which the face is larger than the template's (step 5): the map's shape finds it roughly, and
    within `_DETAIL_WINDOW` of that the scale at which the map's detail (eye sockets, nose, lips) lines up best;
    `past_window`: or the detail's own peak past the window's top (`_detail_peak`). Measuring again
    (`_remeasured`) walks from the window's edge towards the face's size instead, and keeps doing that."""
    maps, _ = _views(points, solid, _SIZES[:, None, None] * frame)
    cost = _cost(maps, across=True)[0]
    unlike = -_detail_match(maps)
    rough = int(np.argmin(cost))
    best = _detail_peak(unlike, rough) if past_window else _window_best(unlike, rough)
    return _DETAIL_CALIBRATION * _parabola_peak(unlike, best)


def _window(rough: int) -> np.ndarray:
    """(len(_SIZES),) bool: the sizes within `_DETAIL_WINDOW` of the shape's size (`rough`, an index)."""
    return (_SIZES >= _SIZES[rough] / _DETAIL_WINDOW[0]) & (_SIZES <= _SIZES[rough] * _DETAIL_WINDOW[1])


def _window_best(unlike: np.ndarray, rough: int) -> int:
    """The index into `_SIZES` of the detail's best match within `_DETAIL_WINDOW` of the shape's size (an index)."""
    return int(np.argmin(np.where(_window(rough), unlike, np.inf)))


def _detail_peak(unlike: np.ndarray, rough: int) -> int:
    """The index into `_SIZES` of the detail's best match (`unlike`: minus the correlation) within `_DETAIL_WINDOW`
    of the shape's size (`rough`, an index), unless the detail's best peak over the whole range is clearly better
    (by `_CLEARLY_BETTER`), or that best is the window's top and the detail still rises past it (or it is the
    range's top): then that peak. The shape of some identities keeps getting more template-like towards 2x, and the
    window about it then missed the detail's peak by up to 2x over, with a window's best of 0.35-0.5 against a peak
    of 0.5-0.8 (a smile); a face measured too large is seen through its middle only, which looks consistent, so
    measuring again at that size (as `_remeasured` does for a face measured too small) does not undo it. The range's
    ends are no peak: a face seen at half its size is a head's outline, and correlates well there."""
    best = _window_best(unlike, rough)
    inner = np.arange(1, len(unlike) - 1)
    peaks = inner[(unlike[inner] < unlike[inner - 1]) & (unlike[inner] < unlike[inner + 1])]
    if not len(peaks):
        return best
    peak = int(peaks[np.argmin(unlike[peaks])])
    top = best == len(unlike) - 1 or (not _window(rough)[best + 1] and unlike[best + 1] < unlike[best])
    if unlike[peak] < unlike[best] - _CLEARLY_BETTER or (top and best not in peaks):
        return peak
    return best


def _parabola_peak(cost: np.ndarray, i: int) -> float:
    """The scale among `_SIZES` where a parabola through `cost`'s three values about index `i` is least."""
    i = int(np.clip(i, 1, len(cost) - 2))
    a, b, c = cost[i - 1 : i + 2]
    step = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c > 0 else 0.0
    return float(_SIZES[i] * 2.0 ** (np.clip(step, -1.0, 1.0) / 8.0))


def _tilts(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) depth slopes of maps (K, G, G): across (fitted to the left-right differences over the cells that have
    surface on both sides: a face turned about the vertical) and downwards (over all face cells: its pitch)."""
    half = 0.5 * (maps - maps[:, :, ::-1])
    slopes = []
    for diff, axis in ((half, _CELL_X), (maps, _CELL_Y)):
        ok = np.isfinite(diff) & _FACE_CELLS
        a = np.where(ok, axis, 0.0)
        slopes.append((np.where(ok, diff, 0.0) * a).sum((1, 2)) / np.maximum((a * a).sum((1, 2)), 1e-9))
    return slopes[0], slopes[1]


def _pitch(maps: np.ndarray) -> np.ndarray:
    """(K,) degrees by which each map's face looks further down than the template's: the slope from top to bottom
    of the map's depth minus the template's, fitted with an intercept over the inner cells that have surface (a
    crop that keeps less forehead or chin does not move it)."""
    diff = maps[:, _INNER_CELLS] - _TEMPLATE_MAP[_INNER_CELLS]
    ok = np.isfinite(diff)
    count = np.maximum(ok.sum(1, keepdims=True), 1)
    y = np.where(ok, _CELL_Y[_INNER_CELLS], 0.0)
    y = np.where(ok, y - y.sum(1, keepdims=True) / count, 0.0)
    diff = np.where(ok, diff, 0.0)
    return np.degrees(np.arctan((y * diff).sum(1) / np.maximum((y * y).sum(1), 1e-9)))


def _level(maps: np.ndarray, across: bool = False) -> np.ndarray:
    """Maps without their downward tilt (and their slope across, if `across`)."""
    turn, tilt = _tilts(maps)
    return maps - tilt[:, None, None] * _CELL_Y - (turn[:, None, None] * _CELL_X if across else 0.0)


def _cost(maps: np.ndarray, across: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(K,) each levelled map's mean difference from the template over its cells (the better of either way up; a
    cell without surface counts `_MISSING_COST`), and (K,) from its mirror image over the cells with surface on
    both sides."""
    m = _level(maps, across)
    face = m[:, _FACE_CELLS]
    differences = []
    for template in (_TEMPLATE_FACE, _TEMPLATE_FACE_UPSIDE_DOWN):
        diff = np.abs(face - template)
        differences.append(np.where(np.isfinite(diff), diff, _MISSING_COST).mean(1))
    mirror = np.abs(m - m[:, :, ::-1])[:, _FACE_CELLS]
    pairs = np.isfinite(mirror).sum(1)
    mirror = np.where(pairs > 0, np.nansum(mirror, axis=1) / np.maximum(pairs, 1), _MISSING_COST)
    return np.minimum(*differences), mirror


def _detail(maps: np.ndarray) -> np.ndarray:
    """(K, G, G) each cell's depth relative to the mean of the 5 x 5 cells about it: the eye sockets, the nose, the
    lips, without the face's overall curve, tilt or pitch."""
    pad = np.pad(maps, ((0, 0), (2, 2), (2, 2)), constant_values=np.nan)
    around = np.stack([pad[:, i : i + _GRID, j : j + _GRID] for i in range(5) for j in range(5)])
    has = np.isfinite(around)
    return maps - np.where(has, around, 0.0).sum(0) / np.maximum(has.sum(0), 1)


def _detail_match(maps: np.ndarray) -> np.ndarray:
    """(K,) the correlation of the maps' detail with the template's over the face cells, either way up."""
    detail = _detail(maps)[:, _FACE_CELLS]
    best = np.full(len(maps), -1.0)
    for template in (_TEMPLATE_DETAIL, _TEMPLATE_DETAIL_UPSIDE_DOWN):
        ok = np.isfinite(detail)
        n = np.maximum(ok.sum(1, keepdims=True), 1)
        a = np.where(ok, detail, 0.0)
        b = np.where(ok, template, 0.0)
        a, b = (
            np.where(ok, a - a.sum(1, keepdims=True) / n, 0.0),
            np.where(ok, b - b.sum(1, keepdims=True) / n, 0.0),
        )
        best = np.maximum(best, (a * b).sum(1) / np.maximum(np.sqrt((a * a).sum(1) * (b * b).sum(1)), 1e-12))
    return best


def _upright_part(maps: np.ndarray) -> np.ndarray:
    """(K, C) the detail of left-right averaged maps in the upper half minus the lower half's, upside down."""
    detail = _detail(0.5 * (maps + maps[:, :, ::-1]))
    return np.nan_to_num((detail - detail[:, ::-1])[:, _UPPER_CELLS])


def _upright(maps: np.ndarray) -> np.ndarray:
    """(K,) `_upright_part` against the template's: about +1 for a face the right way up, -1 upside down."""
    return _upright_part(maps) @ _TEMPLATE_UPRIGHT / float(_TEMPLATE_UPRIGHT @ _TEMPLATE_UPRIGHT)


def _keep_pose(frame: np.ndarray) -> np.ndarray | None:
    """What `find_face` returns for the settled `frame`: the file's vertical is kept when the head in it is pitched
    and rolled at most `_KEEP_TILT` degrees from an axis-aligned frame (the poses a face holds in front of a
    scanner, and the pitch estimate's own error), and then the axis-aligned frame itself (None for the identity)
    when the head is also turned at most `_KEEP_TURN`, else that frame turned about its vertical; past that,
    `frame`."""
    axis = np.abs(frame).argmax(1)
    snapped = np.zeros((3, 3))
    snapped[np.arange(3), axis] = np.sign(frame[np.arange(3), axis])
    if abs(np.linalg.det(snapped) - 1.0) > 1e-6:
        return frame
    up, forward = (frame @ snapped.T)[1:]  # the head's axes in the snapped frame
    pitch, roll = np.degrees(np.arcsin(np.clip(np.abs([forward[1], up[0]]), 0.0, 1.0)))
    if max(pitch, roll) > _KEEP_TILT:
        return frame
    turn = np.degrees(np.arctan2(-forward[0], forward[2]))
    if abs(turn) > _KEEP_TURN:
        return axis_rotation(1, turn) @ snapped
    return None if np.array_equal(snapped, np.eye(3)) else snapped


def _units_for(size: float | None, vertices: np.ndarray) -> float:
    """The factor to millimetres: the scan's size's (`detect_units_scale`) when the face's own size (`size`, mm
    per unit, from `find_face`) is not known; else the one of mm, cm and m that `size` is 0.75x to 1.4x of
    (`_UNIT_SNAP`), and failing that `size` itself: a unitless face, or a scene whose size suggests a unit that the
    face's does not. (Until stop 65 a unitless scan kept the size rule's guess, 200 mm across, unless the face's size
    differed from it by more than 1.5x: clean faces 1 or 2 units across were then drawn 1.18x too large at the median,
    a third of them within 15 % of their size against nine in ten by the face's own.)"""
    if size is None:
        return detect_units_scale(vertices)
    for _, unit in _UNIT_SCALES:
        if _UNIT_SNAP[0] * unit <= size <= _UNIT_SNAP[1] * unit:
            return unit
    return size


# The mean face's depth map as `_views` sees it (the right half; the left mirrors it), in hundredths of the search
# radius behind the nose tip: the mean of 80 random ICT FaceKit identities (MIT licence) with up to three random
# expression blendshapes each, weighted 0.7, and of `affectvlm.testing.face_mesh`'s expressions, weighted 0.3.
_TEMPLATE = """
. . . . . . . .
-32 -33 -36 . . . . .
-28 -30 -33 -38 -46 . . .
-26 -28 -31 -35 -42 . . .
-24 -33 -34 -37 -43 -56 . .
-17 -32 -38 -41 -47 -57 . .
-8 -25 -34 -38 -44 -55 . .
-1 -15 -31 -35 -42 -54 . .
0 -12 -29 -33 -41 -55 . .
-10 -19 -28 -33 -44 -58 . .
-16 -21 -28 -35 -46 . . .
-20 -24 -31 -39 -51 . . .
-25 -28 -36 -46 -55 . . .
-30 -33 -40 . . . . .
-34 -39 -45 . . . . .
. . . . . . . .
"""


def _template() -> np.ndarray:
    rows = [
        [np.nan if v == "." else float(v) / 100.0 for v in line.split()]
        for line in _TEMPLATE.strip().splitlines()
    ]
    half = np.array(rows)
    return np.concatenate([half[:, ::-1], half], axis=1)


_TEMPLATE_MAP = _template()
_FACE_CELLS = (_CELL_R < 0.9) & np.isfinite(_TEMPLATE_MAP) & np.isfinite(_TEMPLATE_MAP[::-1])
_INNER_CELLS = _FACE_CELLS & (_CELL_R < 0.7)
_UPPER_CELLS = _FACE_CELLS & (_CELL_Y > 0) & (_CELL_X > 0)
_TEMPLATE_FACE = _level(_TEMPLATE_MAP[None])[0][_FACE_CELLS]
_TEMPLATE_FACE_UPSIDE_DOWN = _level(_TEMPLATE_MAP[None, ::-1])[0][_FACE_CELLS]
_TEMPLATE_UPRIGHT = _upright_part(_TEMPLATE_MAP[None])[0]
_TEMPLATE_DETAIL = _detail(_TEMPLATE_MAP[None])[0][_FACE_CELLS]
_TEMPLATE_DETAIL_UPSIDE_DOWN = _detail(_TEMPLATE_MAP[None, ::-1])[0][_FACE_CELLS]


def normalize_scan(
    scan: Scan,
    *,
    crop_radius: float | None = 90.0,
    landmark: np.ndarray | int | None = None,
    align: bool | str = False,
    fit: bool = True,
    units: str = "auto",
    orient: str = "auto",
) -> Scan:
    """Turn a scan into the canonical frame, centre it on its nose tip, crop it and scale it to the renderer's frame.

    Args:
        scan: the raw scan, in any units and axes (y-up or z-up, looking along +z, -z or any way; the head
            looking up or down, tilted to a shoulder).
        crop_radius: keep vertices within this distance (mm) of the nose tip, as BU-3DFE's 90 mm
            crops do; None keeps everything.
        landmark: the nose tip as a vertex index or an (3,) position in the scan's units and axes, when known
            (e.g. from `.bnd` or `.lm3` files); otherwise it is found with `find_nose_tip`.
        align: False, or True/"pca" to rotate the cropped face so that its principal axes match
            x, y, z (undoes small head rotations; off by default because it can also undo a pose
            that the data means to keep).
        fit: divide by the robust radius so the face fills the unit sphere (the renderer's default
            window expects this); False keeps millimetres.
        units: "auto" (from the face's size, else the scan's: mm, cm, m or unitless), "mm", "cm" or "m".
        orient: "auto" finds which way is up and forward from the face itself (`find_face`: a head turned more
            than 20 degrees from the file's axes, or pitched or rolled more than 12, is turned to look along +z, +y
            up); "none" takes the file's axes as +y up and +z towards the viewer, and measures nothing; a facing
            (`FACINGS`: "-z", or "-y,+z" to name the up axis too, `facing_turn`) says which file axis the face
            looks along, for a scan whose face "auto" does not find (a statue's bust: the search can take an ear
            or the top of the head for the face): the face's size, nose and small tilts are measured in that frame.

    A triangle soup is welded first (`affectvlm.scan.clean.weld_soup`: an STL file's three vertices of its own per
    triangle). Stray points (a scanner's flying pixels, background specks: `affectvlm.scan.clean.drop_stray_points`)
    are dropped next, and a mesh's triangles wound one way (`orient_faces`: wound either way at random, or listed
    twice, their normals cancelled), the way that faces the viewer once the face is framed (`face_the_viewer`: a
    preview draws the front of each triangle only); a cropped face noisier than the scanners the models were trained on is smoothed
    (`affectvlm.scan.denoise`), and its holes of a few millimetres closed (`affectvlm.scan.clean.fill_pinholes`).

    Returns:
        A new Scan with `normalized=True`; vertices float32 in the normalised frame. Texture, uv and colours
        follow the kept vertices. A scan that is already `normalized` is returned as it is (normalising is
        done once).

    Raises:
        ScanError: when no vertex is left after removing invalid points or cropping.
    """
    if scan.normalized:
        return scan
    kwargs = dict(
        crop_radius=crop_radius, landmark=landmark, align=align, fit=fit, units=units, orient=orient
    )
    return _normalize(scan, **kwargs)[0]


def normalize_sequence(frames: list[Scan], **kwargs) -> list[Scan]:
    """Normalise the frames of a 4D sequence with the first frame's frame, nose tip, rotation and scale, each
    later frame first put back onto the first where the head has moved (`affectvlm.scan.register.follow`).

    One transform for the whole sequence keeps the motion that rank pooling should see, the face's (per-frame
    normalisation would re-centre every frame on its own nose tip); taking out the head's own drift and nods
    keeps them from painting the head's outline into the dynamic image. Takes `normalize_scan`'s arguments;
    `landmark` applies to the first frame.
    """
    if all(frame.normalized for frame in frames):
        return list(frames)
    first, transform = _normalize(frames[0], **kwargs)
    if len(frames) == 1:
        return [first]
    rest = dict(kwargs, landmark=None)
    unfitted = dict(rest, crop_radius=None, fit=False, align=False)
    reference = still_parts(
        _normalize(frames[0], **unfitted, _transform=(*transform[:3], None, None))[0].vertices
    )
    out, motion, reference_normals = [first], None, normals(reference)
    for frame in frames[1:]:
        if _same_geometry(frame, frames[0]):  # a still frame stays still: registration would add jitter
            out.append(first)
            continue
        follow_from = (reference, motion, reference_normals)
        scan, motion = _normalize(frame, **rest, _transform=transform, _follow=follow_from)
        out.append(scan)
    return out


def _same_geometry(a: Scan, b: Scan) -> bool:
    """Whether two frames hold the same vertices and faces (a frame repeated in a sequence)."""
    if a is b:
        return True
    if a.vertices.shape != b.vertices.shape or (a.faces is None) != (b.faces is None):
        return False
    same_faces = a.faces is None or (a.faces.shape == b.faces.shape and np.array_equal(a.faces, b.faces))
    return same_faces and np.array_equal(a.vertices, b.vertices)


def _normalize(
    scan: Scan,
    *,
    crop_radius: float | None = 90.0,
    landmark=None,
    align: bool | str = False,
    fit: bool = True,
    units: str = "auto",
    orient: str = "auto",
    _transform=None,
    _follow=None,
):
    """normalize_scan, also returning the transform (turn to the canonical frame or None, units scale, tip in mm,
    rotation or None, radius or None); `_transform` imposes one instead of estimating it (the later frames of a
    sequence). `_follow`: (the first frame's `still_parts`, the previous frame's motion or None, the first's
    `normals`) for a later frame of a sequence, whose head's motion back onto the first frame is then taken out
    before cropping and returned in place of the transform."""
    if units != "auto" and units not in dict(_UNIT_SCALES):
        raise ValueError(f"units must be 'auto', 'mm', 'cm' or 'm', got {units!r}")
    if align not in (False, True, "pca"):
        raise ValueError(f"align must be False, True or 'pca', got {align!r}")
    given = facing_turn(orient)  # checks it: a ValueError names the choices
    scan = orient_faces(drop_stray_points(weld_soup(drop_nonfinite(scan))))
    v = scan.vertices
    if not _extent(v) > 0.0:
        raise ScanError(f"the scan has no extent: all its vertices are at one point{file_tag(scan.path)}")
    turn, scale, tip, rotation, radius = _transform or (None, None, None, None, None)
    size = nose = found = None
    if _transform is None and orient != "none":
        turn, size, nose = _face_as_given(v, given)
        found = size is not None
    if turn is not None:
        r = turn.astype(np.float32)
        v = (
            v[:, :1] * r[:, 0] + v[:, 1:2] * r[:, 1] + v[:, 2:] * r[:, 2]
        )  # v @ r.T without BLAS (see `_views`)
        if landmark is not None and np.ndim(landmark) > 0:
            landmark = turn @ np.asarray(landmark, dtype=np.float64).reshape(3)
    if scale is None:
        scale = _units_for(size, v) if units == "auto" else dict(_UNIT_SCALES)[units]
    if scale != 1.0:
        v = v * np.float32(scale)
    if tip is None:
        if landmark is None:
            tip = find_nose_tip(_near(v, nose, turn, scale))
        elif np.ndim(landmark) == 0:
            tip = v[int(landmark)]
        else:
            tip = np.asarray(landmark, dtype=np.float32).reshape(3) * np.float32(scale)
    v = v - tip
    if _follow is not None:
        motion = follow(v, *_follow)
        v = (v @ motion[0].T.astype(np.float32) + motion[1].astype(np.float32)).astype(np.float32)
    keep = None
    if crop_radius is not None:
        keep = np.einsum("ij,ij->i", v, v) <= np.float32(crop_radius) ** 2
        if not keep.any():
            raise ScanError(f"no vertex within {crop_radius} mm of the nose tip ({_name(scan)})")
    out = scan.replace(vertices=v).subset(keep) if keep is not None else scan.replace(vertices=v)
    out = fill_pinholes(denoise(out))
    v = out.vertices
    if align and rotation is None:
        rotation = _pca_rotation(v).astype(np.float32)
    if rotation is not None:
        v = v @ rotation.T
    if fit and radius is None:
        radius = float(np.sqrt(np.percentile(np.einsum("ij,ij->i", v, v), _FIT_PERCENTILE)))
    if fit and radius and radius > 0:
        v = v * np.float32(1.0 / radius)
    out = out.replace(vertices=np.ascontiguousarray(v, dtype=np.float32), normalized=bool(fit), face_found=found)
    return face_the_viewer(out), motion if _follow is not None else (turn, scale, tip, rotation, radius)


def _face_as_given(v: np.ndarray, given: np.ndarray | None) -> Face:
    """`find_face` of the vertices `v`, or with a facing given (`facing_turn`), in that frame only (the turn
    returned is then the given one and the face's own tilt in it, the nose in the file's axes)."""
    if given is None:
        return find_face(v)
    turn, size, nose = find_face(rotate_points(v, given.astype(np.float32)), search=False)
    turn = given if turn is None else turn @ given
    return Face(turn, size, None if nose is None else given.T @ nose)


# A facing given by the scan's user (`normalize_scan`'s `orient`): the file axis the face looks along, then the one
# that points up (+y unless the face looks along y, then +z).
FACINGS = ("auto", "+z", "-z", "+x", "-x", "+y", "-y")
_AXIS_VECTORS = {f"{sign}{name}": k * np.eye(3)[i] for i, name in enumerate("xyz") for sign, k in (("+", 1), ("-", -1))}


def facing_turn(orient: str) -> np.ndarray | None:
    """The turn (3, 3; rows: the canonical x, y and z axes in the file's coordinates) that `orient` names: None for
    "auto" (found from the face), the identity for "none", else "<axis the face looks along>[,<axis up>]" with
    each axis one of +x, -x, +y, -y, +z, -z ("-z": looking along -z, +y up; "-y,+z"). Raises ValueError for
    anything else, naming the choices."""
    if orient in ("auto", "none"):
        return None if orient == "auto" else np.eye(3)
    parts = [p.strip() for p in str(orient).split(",")] if isinstance(orient, str) else []
    if not 1 <= len(parts) <= 2 or any(p not in _AXIS_VECTORS for p in parts):
        raise ValueError(
            f"orient must be 'auto', 'none' or the axis the face looks along ({', '.join(FACINGS[1:])}), optionally "
            f"followed by the axis that points up ('-y,+z'); got {orient!r}"
        )
    forward = _AXIS_VECTORS[parts[0]]
    up = _AXIS_VECTORS[parts[1]] if len(parts) == 2 else _AXIS_VECTORS["+z" if parts[0][1] == "y" else "+y"]
    if abs(float(forward @ up)) > 0.0:
        raise ValueError(f"orient {orient!r}: the axis up must be across the one the face looks along")
    return np.stack([np.cross(up, forward), up, forward])


def _near(v: np.ndarray, nose: np.ndarray | None, turn: np.ndarray | None, scale: float) -> np.ndarray:
    """The vertices `v` (mm, turned) within `_NOSE_REACH_MM` of the nose `find_face` found (file units), where the
    nose tip is; all of `v` when it found none."""
    if nose is None:
        return v
    at = (nose if turn is None else turn @ nose) * scale
    near = v[sum((v[:, i] - np.float32(at[i])) ** 2 for i in range(3)) <= _NOSE_REACH_MM**2]
    return near if len(near) else v


def _name(scan: Scan) -> str:
    """The scan's file name without its folder (messages never show server paths)."""
    return os.path.basename(scan.path) if scan.path else "scan"
