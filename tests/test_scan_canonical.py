"""normalize_scan finds the canonical frame from the face itself (`affectvlm.scan.normalize.find_face`).

A face in each file convention (y-up or z-up, looking along +z or -z, turned about the vertical, rolled, upside
down, off-centre, in mm, cm, m or unitless) must normalise to the clean face's frame. The faces: the procedural
face of `affectvlm.testing` and, when installed, the Surrey Face Model's mean face and the ICT FaceKit's neutral
face (with head, neck and eyeballs). Every vertex carries its index in its colour, so the two normalised scans are
compared vertex by vertex, in normalised radii (the face's robust radius after the 90 mm crop):

    the clean nose tip's vertex lands within 0.05 of the origin;
    the vertices within 0.2 of the nose (the nose, about 18 mm) within 0.06 of their clean places;
    the scale (RMS spread of the vertices both kept) within 1 % (a unit or a turn: exact up to rounding) or
    10 % for a unitless model (its size is the face's estimated size), 15 % for one that a unit would make a
    plausible size (0.3 or 0.5 units across: 300 or 500 mm in metres).

Measured: wherever the file's axes and a turn about its vertical undo the convention (z-up, along -z, turned 30, 90
or 135 degrees, upside down, off-centre, units) the tip 0 and the nose within 0.001; where the head is set upright
from its own profile (rolled 40 degrees, looking up or down 30, combined), the procedural face's tip 0.028 and the
SFM mean face's 0.023 from the clean tip vertex (the pitch comes from the profile against the template's, a few
degrees off for these faces: the tip moves a vertex), the ICT head's nose within 0.013; rolled 10 degrees (kept
as the face's pose) nose 0.03; the scale exact but unitless (1 or 2 units across: face_mesh -5.3 %, SFM -1.7 %, ICT
+1.4 %, against +8.3 %, +6.3 % and +1.4 % while such a scan was drawn 200 mm across; 0.3 units across: -4.5 %, 0.0 %,
-11.4 %; 0.5: -4.5 %, -2.5 %, -1.5 %).
"""

import os
from pathlib import Path

import numpy as np
import pytest

import affectvlm.scan.normalize as normalize_module
from affectvlm.data.realism import RealismConfig, apply_realism
from affectvlm.scan import Scan, load_scan, normalize_scan, normalize_sequence
from affectvlm.scan.normalize import axis_rotation, find_face
from affectvlm.scan.recipe import NO_FACE_FOUND_NOTE, NOT_A_FACE_NOTE, ScanRecipe, check_face
from affectvlm.testing import face_mesh, head_drift, wall_behind

ROOT = Path(__file__).resolve().parents[1]


def turned(r: np.ndarray):
    return lambda v: v @ r.T


Z_UP = axis_rotation(0, 90)  # +y becomes +z; the face, looking along +z, looks along -y
OFF_CENTRE = np.array([300.0, -400.0, 0.0])  # 500 mm
# file convention -> (vertices in mm, +y up, +z forward -> the file's vertices; tolerance on the scale)
CONVENTIONS = {
    "y-up, looking along +z": (lambda v: v, 0.01),
    "z-up": (turned(Z_UP), 0.01),
    "looking along -z": (turned(axis_rotation(1, 180)), 0.01),
    "turned 30 degrees": (turned(axis_rotation(1, 30)), 0.01),
    "turned -30 degrees": (turned(axis_rotation(1, -30)), 0.01),
    "turned 90 degrees": (turned(axis_rotation(1, 90)), 0.01),
    "turned 135 degrees": (turned(axis_rotation(1, 135)), 0.01),
    "rolled 10 degrees": (turned(axis_rotation(2, 10)), 0.01),
    "rolled 40 degrees": (turned(axis_rotation(2, 40)), 0.01),
    "looking down 30 degrees": (turned(axis_rotation(0, 30)), 0.01),
    "looking up 30 degrees": (turned(axis_rotation(0, -30)), 0.01),
    "z-up, looking down 20, rolled -25, turned 50": (
        turned(Z_UP @ axis_rotation(1, 50) @ axis_rotation(2, -25) @ axis_rotation(0, 20)),
        0.01,
    ),
    "upside down, looking along -z (a camera's y-down frame)": (turned(axis_rotation(0, 180)), 0.01),
    "off-centre by 500 mm": (lambda v: v + OFF_CENTRE, 0.01),
    "cm": (lambda v: v / 10.0, 0.01),
    "m": (lambda v: v / 1000.0, 0.01),
    "unitless, 1 unit across": (lambda v: v / np.ptp(v, axis=0).max(), 0.1),
    "unitless, 2 units across (a unit sphere's box)": (lambda v: v * (2.0 / np.ptp(v, axis=0).max()), 0.1),
    # metres would make it 300 mm across: the face's own size must say it is not (+60 % for the SFM face before)
    "unitless, 0.3 units across": (lambda v: v * (0.3 / np.ptp(v, axis=0).max()), 0.15),
    "unitless, 0.5 units across": (lambda v: v * (0.5 / np.ptp(v, axis=0).max()), 0.15),
    "z-up, turned 60, off-centre, in m": (
        lambda v: ((v @ axis_rotation(1, 60).T) @ Z_UP.T + OFF_CENTRE) / 1000.0,
        0.01,
    ),
}


def ict_file() -> Path:
    """$AFFECTVLM_ICT_DIR/ict_facekit.npz when set, else ../shared/ict beside the checkout (as affectvlm.data)."""
    folder = os.environ.get("AFFECTVLM_ICT_DIR")
    return (Path(folder).expanduser() if folder else ROOT.parent / "shared" / "ict") / "ict_facekit.npz"


@pytest.fixture(scope="module", params=["face_mesh", "sfm", "ict"])
def face(request) -> Scan:
    """A clean face in millimetres, +y up, +z towards the viewer."""
    if request.param == "face_mesh":
        return face_mesh().replace(uv=None)
    if request.param == "sfm":
        data = np.load(request.getfixturevalue("sfm_dir") / "sfm_3448.npz")
        return Scan(vertices=data["mean"], faces=data["triangles"].astype(np.int64))
    if not ict_file().is_file():
        pytest.skip(f"no {ict_file()}: the ICT FaceKit face (MIT licence), ../shared/ict/README.md")
    data = np.load(ict_file())
    return Scan(vertices=data["neutral"] * float(data["to_mm"]), faces=data["triangles"].astype(np.int64))


def tagged(scan: Scan) -> Scan:
    """The scan with each vertex's index in its colour (subsets and crops carry colours along)."""
    index = np.arange(scan.num_vertices)
    return scan.replace(colors=np.stack([index & 255, (index >> 8) & 255, index >> 16], -1).astype(np.uint8))


def by_index(scan: Scan, count: int) -> np.ndarray:
    """(count, 3) the normalised position of each original vertex, NaN where cropped away."""
    c = scan.colors.astype(np.int64)
    out = np.full((count, 3), np.nan)
    out[c[:, 0] + (c[:, 1] << 8) + (c[:, 2] << 16)] = scan.vertices
    return out


def compare(clean: Scan, transform) -> tuple[float, float, float]:
    """(tip error, largest nose vertex error, relative scale error) of the transformed face against the clean one."""
    clean = tagged(clean)
    ref = normalize_scan(clean)
    got = normalize_scan(
        clean.replace(vertices=transform(clean.vertices.astype(np.float64)).astype(np.float32))
    )
    a, b = by_index(ref, clean.num_vertices), by_index(got, clean.num_vertices)
    tip = np.nanargmin(np.linalg.norm(a, axis=1))
    both = np.isfinite(a[:, 0]) & np.isfinite(b[:, 0])
    nose = both & (np.linalg.norm(np.nan_to_num(a), axis=1) < 0.2)

    def spread(p: np.ndarray) -> float:
        return float(np.sqrt(((p - p.mean(0)) ** 2).sum(1).mean()))

    nose_error = np.linalg.norm(b[nose] - a[nose], axis=1).max()
    return float(np.linalg.norm(b[tip])), float(nose_error), spread(b[both]) / spread(a[both]) - 1.0


@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_each_file_convention_normalises_to_the_clean_frame(face, convention):
    transform, scale_tolerance = CONVENTIONS[convention]
    tip, nose, scale = compare(face, transform)
    assert tip <= 0.05 and nose <= 0.06 and abs(scale) <= scale_tolerance, (tip, nose, scale)


def test_a_frontal_face_comes_out_exactly_as_without_orientation(face):
    """The shipped model's answers depend on it: a frontal face, or one within 20 degrees of the file's axes (its
    pose is kept), normalises bit for bit as `orient="none"` does."""
    for v in (
        face.vertices,
        (face.vertices @ axis_rotation(1, 12).T @ axis_rotation(0, -8).T).astype(np.float32),
    ):
        scan = face.replace(vertices=v)
        np.testing.assert_array_equal(
            normalize_scan(scan).vertices, normalize_scan(scan, orient="none").vertices
        )
    assert find_face(face.vertices)[0] is None


def in_front_of_a_wall(face: Scan, behind: float = 250.0) -> Scan:
    """The face (vertex indices in its colours, `tagged`) and 60,000 white points of a 1 m wall `behind` mm behind its
    deepest point, as a depth camera sees a room."""
    face = tagged(face)
    wall = wall_behind(face.vertices, behind)
    colors = np.concatenate([face.colors, np.full((len(wall), 3), 255, np.uint8)])
    return face.replace(vertices=np.concatenate([face.vertices, wall]), colors=colors)


def test_a_face_in_front_of_a_wall_normalises_as_the_face_alone(face):
    """The wall makes the scan 1 m across (no unit fits) and outnumbers the face's points in the search's subsample:
    the face is found in the region about the scene's frontmost point, and the crop leaves the wall out. The face's
    vertices land where the face alone puts them, within 0.08 (the file conventions allow 0.05 for the tip, 0.06 for
    the nose): the nose tip's neighbour count (`find_nose_tip`) sees the face through a subsample that is mostly
    wall, and the tip, and the face with it, may land a vertex or two off (measured: 0 for the procedural face,
    0.057 SFM, 0.066 ICT)."""
    got = normalize_scan(in_front_of_a_wall(face))
    assert not (got.colors == 255).all(axis=1).any()  # no wall point within the crop
    a, b = by_index(normalize_scan(tagged(face)), face.num_vertices), by_index(got, face.num_vertices)
    tip = np.nanargmin(np.linalg.norm(a, axis=1))
    nose = np.isfinite(a[:, 0]) & np.isfinite(b[:, 0]) & (np.linalg.norm(np.nan_to_num(a), axis=1) < 0.2)
    assert np.linalg.norm(b[tip]) <= 0.08 and np.linalg.norm(b[nose] - a[nose], axis=1).max() <= 0.08


@pytest.mark.parametrize("wall", [0.0, 1.0], ids=["head and shoulders", "and a wall behind"])
@pytest.mark.parametrize(
    "frame", ["y-up, looking along +z", "z-up", "turned 135 degrees", "looking down 30 degrees"]
)
def test_a_head_and_shoulders_scan_normalises_as_the_face_alone(face, wall, frame):
    """A scanner that sees the whole person: a neck, shoulders and a chest below the face (its front may stand in
    front of the nose tip) and a wall behind it (`affectvlm.data.realism`'s scene), in several file frames. The body
    outnumbers the face and no unit fits the scene: the face is found about a candidate nose (step 3b), the head
    settled on the points about it (3c), and the crop centred on its nose (the crop keeps the neck below the chin, as
    a real scan's does). The face's vertices land where the face alone puts them, within the wall test's 0.08."""
    scene, _ = apply_realism(tagged(face), np.random.default_rng(5), RealismConfig.only("scene", wall=wall))
    white = np.full((scene.num_vertices - face.num_vertices, 3), 255, np.uint8)
    scene = scene.replace(colors=np.concatenate([scene.colors[: face.num_vertices], white]))
    move, _ = CONVENTIONS[frame]
    got = normalize_scan(scene.replace(vertices=move(scene.vertices).astype(np.float32)))
    got = got.subset(~(got.colors == 255).all(axis=1))  # the face's points
    a, b = by_index(normalize_scan(tagged(face)), face.num_vertices), by_index(got, face.num_vertices)
    tip = np.nanargmin(np.linalg.norm(a, axis=1))
    nose = np.isfinite(a[:, 0]) & np.isfinite(b[:, 0]) & (np.linalg.norm(np.nan_to_num(a), axis=1) < 0.2)
    assert np.linalg.norm(b[tip]) <= 0.08 and np.linalg.norm(b[nose] - a[nose], axis=1).max() <= 0.08


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "examples").glob("scan_*.ply")))
def test_a_face_rolled_any_way_about_the_line_of_sight_is_found_upright(name):
    """Every 15 degrees of roll, a whole turn: the frame found is the unrolled scan's, never half a turn from it.
    Held upside down and rolled a little (105-285 degrees), 8 of these 138 were found upside down: the search's
    frame, rolled by up to 45 degrees, read about -0.2, inside the margin that keeps its vertical. Which way is up is
    now decided again on the settled head, with the file's +y or +z up unless the face is clearly upside down (a
    first try without that preference, turning any settled head under -0.05, flipped 5 open-mouthed realistic
    scans that had been right and was undone)."""
    vertices = load_scan(ROOT / "examples" / f"{name}.ply").vertices.astype(np.float64)
    reference = find_face(vertices).rotation
    reference = np.eye(3) if reference is None else reference
    wrong = []
    for degrees in range(15, 360, 15):
        roll = axis_rotation(2, degrees)
        rotation = find_face(vertices @ roll.T).rotation
        rotation = np.eye(3) if rotation is None else rotation
        cosine = (np.trace(rotation @ roll @ reference.T) - 1.0) / 2.0
        if np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) > 45.0:
            wrong.append(degrees)
    assert not wrong, wrong


def spikes_about_the_nose(vertices: np.ndarray, seed: int) -> np.ndarray:
    """`vertices` (mm, +z towards the viewer) with one vertex in each eighth of the ring 12-26 mm about the nose tip
    pulled forward to 1-5 mm in front of it: lone points (a scanner's spikes) level with the nose, all round it."""
    rng = np.random.default_rng(seed)
    v = vertices.copy()
    tip = v[np.argmax(v[:, 2])]
    d = v[:, :2] - tip[:2]
    r, angle = np.hypot(d[:, 0], d[:, 1]), np.arctan2(d[:, 1], d[:, 0])
    ring = (r > 12.0) & (r < 26.0)
    for a in np.arange(-np.pi, np.pi, np.pi / 4):
        v[rng.choice(np.flatnonzero(ring & (angle >= a) & (angle < a + np.pi / 4))), 2] = tip[2] + rng.uniform(1, 5)
    return v


@pytest.mark.parametrize("seed", range(5))
def test_spikes_level_with_the_nose_do_not_hide_the_face(face, seed):
    """Eight lone points level with the nose tip, all round it, in a z-up file. The nose's bump is measured on the
    surface about it, which a lone point (no company in its 12 mm cube) is not: before, a spike in each direction
    made the nose look flat, no face was found, and the z-up frame was kept (3 of these 15 faces: the procedural
    face twice, the SFM's once). The face is now found, and turned as the clean face is."""
    clean = find_face(face.vertices.astype(np.float64) @ Z_UP.T).rotation
    got = find_face(spikes_about_the_nose(face.vertices.astype(np.float64), seed) @ Z_UP.T)
    assert got.size is not None
    cosine = (np.trace(got.rotation @ clean.T) - 1.0) / 2.0
    assert np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))) < 5.0


def test_normalising_twice_is_a_no_op(face):
    once = normalize_scan(face.replace(vertices=(face.vertices @ Z_UP.T).astype(np.float32) / 1000))
    assert once.normalized and normalize_scan(once) is once


def test_a_sequence_takes_the_first_frames_frame(monkeypatch):
    """One search for the sequence (the first frame's), and the same transform for every frame: the turned
    sequence normalises like the clean one, motion included."""
    clean = [face_mesh("surprise", t).replace(uv=None) for t in np.linspace(0.0, 1.0, 4)]
    turn = axis_rotation(0, 90) @ axis_rotation(1, 90)
    files = [f.replace(vertices=(f.vertices @ turn.T).astype(np.float32) / 1000) for f in clean]
    searches = []
    monkeypatch.setattr(normalize_module, "find_face", lambda v: searches.append(1) or find_face(v))
    for got, want in zip(normalize_sequence(files), normalize_sequence(clean)):
        np.testing.assert_allclose(got.vertices, want.vertices, atol=1e-4)
    assert len(searches) == 2  # the turned sequence's first frame, then the clean one's


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_head_that_moves_during_a_sequence_is_put_back_onto_the_first_frame(face, seed):
    """A head drifting by about 1.5 degrees and 1.5 mm a frame (up to about 5 and 5 by the last, as a subject
    does over a few seconds in front of a 4D scanner) while the face goes from neutral to surprise (the
    procedural face; the face models' faces keep still) normalises as the still head does, to within 1 mm at the
    90th percentile (0.6 at most seen). Imposing the first frame's transform alone left the moved frames 3-8 mm
    off."""
    apex = face_mesh("surprise", 1.0).vertices - face_mesh().vertices
    if len(apex) != face.num_vertices:  # a face model's face: the head moves, the face keeps still
        apex = np.zeros_like(face.vertices)
    still = [
        face.replace(vertices=(face.vertices + t * apex).astype(np.float32)) for t in np.linspace(0, 1, 5)
    ]
    still = [tagged(f) for f in still]
    want = normalize_sequence(still, fit=False)
    got = normalize_sequence(head_drift(still, 1.5, 1.5, seed), fit=False)
    for a, b in zip(want[1:], got[1:]):
        a, b = by_index(a, face.num_vertices), by_index(b, face.num_vertices)
        both = np.isfinite(a[:, 0]) & np.isfinite(b[:, 0])
        assert np.percentile(np.linalg.norm(a[both] - b[both], axis=1), 90) <= 1.0


def test_a_landmark_position_is_in_the_files_axes(face):
    idx = int(np.argmax(face.vertices[:, 1]))
    file = face.replace(vertices=(face.vertices @ Z_UP.T).astype(np.float32))
    got = normalize_scan(file, landmark=file.vertices[idx], crop_radius=None, fit=False)
    want = normalize_scan(face, landmark=face.vertices[idx], crop_radius=None, fit=False)
    np.testing.assert_allclose(got.vertices, want.vertices, atol=1e-3)


def shapes() -> dict[str, Scan]:
    import trimesh

    from bench.hostile import cube

    sphere = trimesh.creation.icosphere(4, 100.0)
    grid = np.stack(np.meshgrid(np.linspace(-100, 100, 41), np.linspace(-100, 100, 41)), -1).reshape(-1, 2)
    i = np.arange(40 * 41).reshape(40, 41)[:, :40].ravel()
    quads = np.stack([i, i + 1, i + 42, i + 41], -1)
    return {
        "cube": Scan(*cube(150.0, 4)),
        "sphere": Scan(sphere.vertices, sphere.faces),
        "plane": Scan(np.c_[grid, np.zeros(len(grid))], np.concatenate([quads[:, :3], quads[:, [0, 2, 3]]])),
    }


@pytest.mark.parametrize("name", ["cube", "sphere", "plane"])
def test_what_is_not_a_face_keeps_the_files_frame_and_gets_the_note(name):
    scan = shapes()[name]
    assert find_face(scan.vertices) == (None, None, None)
    recipe = ScanRecipe(size=64)
    normalised = recipe.normalize(scan)
    np.testing.assert_array_equal(normalised.vertices, normalize_scan(scan, orient="none").vertices)
    assert NOT_A_FACE_NOTE in check_face(normalised, recipe.views_of([scan])[0]).notes


@pytest.mark.parametrize(
    "name, depth", [("scan_ict_subject3_fear", 8.0), ("scan_subject1_surprise", 8.0), ("scan_ict_subject1_disgust", 6.0)]
)
def test_a_flat_nose_is_still_a_face(name, depth):
    """The nose pressed in by `depth` mm, tapering out over about 20 mm: it stands 0.03-0.05 normalised radii out of
    the surface about it, as a flat-nosed ICT identity's does when it smiles (0.034-0.045). At the old bar (0.05)
    that identity got "this does not look like a face" on 8 of its 25 clean scans; no shape that is no face and
    passes the other tests measures over 0.025."""
    face = load_scan(ROOT / "examples" / f"{name}.ply")
    v = face.vertices.copy()
    tip = v[np.argmax(v[:, 2])]
    v[:, 2] -= depth * np.exp(-((v[:, :2] - tip[:2]) ** 2).sum(1) / (2 * 9.0**2))
    recipe = ScanRecipe(size=64)
    normalised = recipe.normalize(Scan(v, face.faces))
    checked = check_face(normalised, recipe.views_of([normalised])[0])
    assert 0.03 <= checked.nose_prominence < 0.05
    assert checked.notes == []


def test_the_normalised_scan_says_whether_the_search_found_a_face():
    face = load_scan(ROOT / "examples" / "scan_subject1_surprise.ply")
    assert normalize_scan(face).face_found is True
    assert normalize_scan(shapes()["sphere"]).face_found is False
    assert normalize_scan(face, orient="none").face_found is None  # no search made
    assert face.face_found is None


@pytest.mark.parametrize("name", ["scan_subject1_surprise", "scan_ict_subject3_fear"])
def test_a_face_the_search_missed_is_noted_unless_the_files_frame_shows_it_upright(name, monkeypatch):
    """When `find_face` finds no face the file's frame is kept, and `check_face` looks again at what that frame
    shows from the front (`front_view_is_face`). A face the file holds frontal and upright is scored with no note;
    upside down, it passes the nose tests (they do not see which way is up) and was scored upside down with no
    note: now it gets one. (The search misses 2 of 500 realistic held-out faces of seed 21 once stray points are
    dropped, a teapot and a knot of trimesh's test models every time.)"""
    monkeypatch.setattr(normalize_module, "find_face", lambda v: normalize_module.Face(None, None, None))
    face = load_scan(ROOT / "examples" / f"{name}.ply")
    recipe = ScanRecipe(size=64)
    for turn, note in ((np.eye(3), None), (axis_rotation(2, 180), NO_FACE_FOUND_NOTE)):
        normalised = recipe.normalize(Scan(face.vertices @ turn.T, face.faces))
        assert normalised.face_found is False
        notes = check_face(normalised, recipe.views_of([normalised])[0]).notes
        assert notes == ([note] if note else []), notes


def test_orient_takes_auto_or_none():
    with pytest.raises(ValueError, match="orient"):
        normalize_scan(face_mesh(), orient="z-up")


def test_the_search_looks_at_a_subsample_whatever_the_scans_size(monkeypatch):
    """A 90k-vertex face turned and z-up: `find_face` looks at a 2,000-4,000 point subsample, so its time does not
    grow with the scan (about 30 ms on one core: `python bench/render.py`, "find_face"). Asserted on the points its
    depth maps are drawn from, not on the clock: a timed bound failed a CI run on a busy machine (0.207 s against
    0.2)."""
    face = face_mesh(spacing=0.5)
    v = (face.vertices @ (Z_UP @ axis_rotation(1, 40)).T).astype(np.float32)
    seen = []
    views = normalize_module._views
    counted = lambda points, *args, **kwargs: seen.append(len(points)) or views(points, *args, **kwargs)  # noqa: E731
    monkeypatch.setattr(normalize_module, "_views", counted)
    found = find_face(v)
    assert face.num_vertices > 80_000 and found.size is not None
    assert seen and max(seen) <= 4_000


# A face's size (step 5) from the detail of its depth map at scales 2^(-1 .. 1): the correlation with the mean
# face's detail, as measured for two SFM identities (SynthFER-3D seed 21, neutral, in mm: truth 1.0), and the
# index of the scale at which the map's shape was most like the mean face's (16: 2x, the range's end).
DETAIL_SEEN = {
    # the shape kept getting more template-like up to 2x: the window about it held no peak of the detail
    "F0002": ([0.829, 0.613, 0.503, 0.509, 0.511, 0.63, 0.778, 0.858, 0.828, 0.626, 0.473, 0.41, 0.333, 0.384,
               0.492, 0.513, 0.571], 16),
    # the window about the shape's 2x held a peak of its own (0.48 at 1.83x), far below the detail's (0.78 at 0.92x):
    # an ICT identity with a flat nose, smiling (seed 41, happiness at level 2; 1.97x before)
    "F0009": ([0.702, 0.71, 0.64, 0.661, 0.612, 0.579, 0.73, 0.777, 0.609, 0.554, 0.467, 0.464, 0.377, 0.345, 0.383,
               0.479, 0.463], 16),
    # an ordinary face: the shape and the detail agree
    "M0003": ([0.883, 0.821, 0.764, 0.71, 0.711, 0.78, 0.862, 0.928, 0.932, 0.884, 0.745, 0.68, 0.587, 0.507,
               0.534, 0.555, 0.567], 9),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DETAIL_SEEN))
def test_a_face_is_sized_at_its_details_peak_not_at_a_slope(name):
    """All three faces are 0.92-1.0 of the template's size by their detail; the F0002 face was measured 1.9x over
    at the end of the shape's window (the whole face then rendered as its nose and mouth, and 4 of its 7 sequences
    read wrong): the detail's own peak wins when the window about the shape's size holds none, or one clearly
    weaker (F0009)."""
    detail, rough = DETAIL_SEEN[name]
    index = normalize_module._detail_peak(-np.asarray(detail), rough)
    assert 0.9 <= normalize_module._SIZES[index] <= 1.0


@pytest.mark.parametrize("subject", ["F0002", "M0016"])
def test_sfm_faces_whose_shape_misleads_are_measured_at_their_size(sfm_dir, subject, monkeypatch):
    """The two SFM identities of 20 in a held-out set (seed 21) that were measured 1.9x over: in millimetres, as
    their files are, and no longer cropped to the nose and mouth."""
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    synth = SynthFER3D(SynthConfig(seed=21, num_subjects=40, face_model="both", neutral=True))
    index = next(i for i in range(40) if synth.subject(i).subject_id == subject)
    for emotion, level in (("neutral", 0), ("happiness", 4)):
        scan = synth.scan(index, emotion, level).to_scan()
        size = find_face(scan.vertices).size
        assert 0.8 <= size <= 1.2, (emotion, size)  # 1.9 before
        assert normalize_module._normalize(scan, fit=False)[1][1] == 1.0, emotion  # the units: mm


def unitless_sizes_against_the_truth(seed: int, subject: str, faces, across: float) -> dict:
    """{(emotion, level): the size `find_face` measures over the truth} for one SynthFER-3D identity (both face
    models, 8 subjects drawn) written `across` units across, as a file without units."""
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    synth = SynthFER3D(SynthConfig(seed=seed, num_subjects=8, face_model="both", neutral=True))
    index = next(i for i in range(8) if synth.subject(i).subject_id == subject)
    ratios = {}
    for emotion, level in faces:
        vertices = synth.scan(index, emotion, level).to_scan().vertices.astype(np.float64)
        mm_across = float(np.ptp(vertices, axis=0).max())
        size = find_face((vertices * (across / mm_across)).astype(np.float32)).size
        ratios[emotion, level] = round(size * across / mm_across, 3)
    return ratios


@pytest.mark.parametrize("across", [1.0, 2.0, 100.0])
def test_a_face_measured_again_does_not_walk_past_the_search_scale(sfm_dir, across, monkeypatch):
    """F0002 of seed 21, whose shape grows likelier to the template up to 2x its size, in a file without units. Its
    first measure was a little under the search's scale (0.89x, the truth 0.93x), which asks for a measure again; a
    measure again looks only within the shape's window, which for this face lies above it, and so walked 1.2x, then
    1.9x: the face was drawn 2.4x too large (26 of its 78 unitless files in the probe of stop 65). A measure again
    that ends past the search's own scale now leaves the first measure standing."""
    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    faces = (("anger", 3), ("fear", 3), ("disgust", 3), ("sadness", 3))
    ratios = unitless_sizes_against_the_truth(21, "F0002", faces, across)
    assert all(0.8 <= r <= 1.25 for r in ratios.values()), ratios  # 2.3-2.5 before


@pytest.mark.parametrize("across", [1.0, 2.0])
@pytest.mark.parametrize(
    "seed, subject, faces",
    [(57, "M0002", (("neutral", 0), ("disgust", 3))), (59, "F0006", (("disgust", 3), ("surprise", 1)))],
)
def test_a_unitless_faces_middle_does_not_win_as_a_face_in_a_scene(sfm_dir, seed, subject, faces, across, monkeypatch):
    """Faces of two new identities in a file without units, 1 or 2 units across. The whole scan's search finds the face
    at the face mask's scale (190 mm across the scan, 1.2-1.35x its size), where its detail correlates with the
    template's by 0.50-0.58; the search for a face in a larger scene then found its nose and mouth at the scale that
    makes the scan a head with its shoulders (600 mm, 3.7-4x), at 0.63-0.73, and that won as clearly likelier the
    template: the face was drawn 3.4-3.9x too large. The two are now compared by each one's best detail over the
    sizes the measure looks at, where the face at its own size correlates about as well as the middle or better."""
    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    ratios = unitless_sizes_against_the_truth(seed, subject, faces, across)
    assert all(0.8 <= r <= 1.25 for r in ratios.values()), ratios  # 3.4-3.9 before


@pytest.mark.parametrize("across", [0.5, 1.0, 2.0])
def test_a_unitless_face_is_drawn_at_its_own_size_not_at_a_guess(sfm_dir, across, monkeypatch):
    """Faces of new SFM identities in a file without units, 0.5, 1 or 2 units across (a unit box, a unit sphere's).
    A scan 1 or 2 units across kept the size rule's guess, 200 mm across, unless the face's size differed from it
    by 1.5x: faces 143-196 mm across as they come were drawn 1.18x too large at the median (156 faces of both face
    models, seed 57; 1.04-1.33x for nine in ten). At 0.5 units metres make the face 500 mm, and its middle passed for
    a whole face at that scale, so one such face in seven to thirteen was drawn 2.3-3.2x too large (34 of 234 over
    seeds 13, 21 and 41; 12 of 156 of seed 57): it costs more there than at the face mask's scale. Now the median is
    within 5 % of the truth at each size, and every face within 0.87-1.14x: subject 5's sadness was measured 2.8x over
    at 1 and 2 units across until stop 66 (a measure again that walked past the search's scale, the test above)."""
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    synth = SynthFER3D(SynthConfig(seed=57, num_subjects=6, face_model="sfm", neutral=True))
    ratios = []
    for index in range(6):
        for emotion, level in (("neutral", 0), ("surprise", 4), ("sadness", 4)):
            scan = synth.scan(index, emotion, level).to_scan()
            mm_across = float(np.ptp(scan.vertices.astype(np.float64), axis=0).max())
            unitless = scan.replace(vertices=scan.vertices * np.float32(across / mm_across))
            mm_per_unit = normalize_module._normalize(unitless, fit=False)[1][1]
            ratios.append(mm_per_unit * across / mm_across)
    ratios = np.array(ratios)
    near = (ratios > 0.8) & (ratios < 1.25)
    assert 0.95 <= np.median(ratios) <= 1.05 and near.all(), ratios.round(2)  # median 1.17-1.19 before stop 65


@pytest.mark.parametrize("size", [None, 0.3])
def test_the_order_a_file_lists_its_vertices_in_changes_nothing(face, size):
    """The face found, its size and the normalised surface are the same for any order of the vertices (a
    scanner's rows, a mesh tool's reordering): the search works on points chosen by their coordinates, not by a
    stride through the file. A stride gave a unitless face 0.3 units across three different answers under three
    orders (happiness 0.96, happiness 0.31, surprise)."""
    vertices = face.vertices.astype(np.float64)
    if size is not None:
        vertices = vertices * (size / np.ptp(vertices, axis=0).max())
    scan = tagged(face.replace(vertices=vertices.astype(np.float32)))
    order = np.random.default_rng(3).permutation(scan.num_vertices)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    shuffled = scan.replace(vertices=scan.vertices[order], faces=back[scan.faces], colors=scan.colors[order])
    a, b = find_face(scan.vertices), find_face(shuffled.vertices)
    assert a.size == b.size
    np.testing.assert_array_equal(a.rotation, b.rotation)
    count = scan.num_vertices
    got, want = by_index(normalize_scan(shuffled), count), by_index(normalize_scan(scan), count)
    np.testing.assert_allclose(got, want, atol=1e-5)
