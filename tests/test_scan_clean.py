"""`drop_stray_points`: flying pixels and background specks go, the face's own points stay.

Before it, 50 points scattered up to a metre about a face (2 % of its points) made the bounding box say the scan
was unitless, and no face was found at any scale: the face rendered as a speck.
"""

import numpy as np
import pytest

from affectvlm.data.realism import cluster_vertices, subdivide
from affectvlm.scan import Scan, normalize_scan
from affectvlm.scan.clean import drop_stray_points
from affectvlm.testing import face_mesh, stray_points


def with_strays(face: Scan, count: int, spread: float, seed: int = 0) -> Scan:
    """The face (a point cloud or a mesh) and `count` points scattered about it with `spread` mm std per axis."""
    strays = stray_points(face.vertices, count, spread, seed)
    return Scan(np.concatenate([face.vertices, strays]).astype(np.float32), face.faces)


@pytest.fixture(scope="module")
def face() -> Scan:
    return face_mesh().replace(uv=None)


@pytest.mark.parametrize("count, spread", [(50, 300.0), (500, 300.0), (2000, 1000.0)])
@pytest.mark.parametrize("kind", ["mesh", "point cloud"])
def test_scattered_points_go_and_the_face_stays(face, count, spread, kind):
    """Every point of the face stays; of the strays only those that landed next to the face may stay."""
    face = face if kind == "mesh" else face.replace(faces=None)
    cleaned = drop_stray_points(with_strays(face, count, spread))
    n = face.num_vertices
    np.testing.assert_array_equal(cleaned.vertices[:n], face.vertices)
    if kind == "mesh":
        np.testing.assert_array_equal(cleaned.faces, face.faces)
    kept = cleaned.vertices[n:]
    assert len(kept) <= 0.01 * count
    if len(kept):
        nearest = np.sqrt(((kept[:, None] - face.vertices[None]) ** 2).sum(-1)).min(axis=1)
        assert nearest.max() < 30.0, nearest  # within two cubes of 4 spacings (3.6 mm) of the face


def test_a_face_with_strays_normalises_as_the_face_alone(face):
    """200 strays make the bounding box 1.5 m across: before they were dropped, no face showed at the scale it
    suggests, and the face rendered as a speck."""
    messy = with_strays(face, 200, 400.0)
    np.testing.assert_array_equal(normalize_scan(messy).vertices, normalize_scan(face).vertices)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f,
        lambda f: f.replace(faces=None),
        lambda f: subdivide(subdivide(f)),
        lambda f: cluster_vertices(f.replace(faces=None), 5.0),  # a sparse cloud: 5 mm apart
    ],
    ids=["mesh", "cloud", "dense mesh", "sparse cloud"],
)
def test_a_clean_face_loses_nothing(face, make):
    scan = make(face)
    assert drop_stray_points(scan) is scan


def test_loose_vertices_of_a_mesh_go_however_dense(face):
    """A patch of 50 vertices no triangle uses, copied from the face and moved 5 m off (dense enough to keep each
    other company): gone, and the mesh itself unchanged. A mesh made mostly of loose points keeps them."""
    patch = face.vertices[:50] + np.float32(5000.0)
    loose = Scan(np.concatenate([face.vertices, patch]), face.faces)
    cleaned = drop_stray_points(loose)
    np.testing.assert_array_equal(cleaned.vertices, face.vertices)
    np.testing.assert_array_equal(cleaned.faces, face.faces)
    few_triangles = Scan(face.vertices, face.faces[:10])
    assert drop_stray_points(few_triangles).num_vertices >= 0.9 * face.num_vertices


def test_a_face_with_a_loose_patch_far_away_reads_as_the_face():
    """The shipped model reads a happy example face with a dense loose patch 5 m away as it reads the face."""
    from faces import EXAMPLES

    from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor
    from affectvlm.scan import load_scan

    if not (DEMO_CHECKPOINT / "config.json").is_file():
        pytest.skip("no demo checkpoint")
    happy = load_scan(EXAMPLES / "scan_subject0_happiness.ply")
    patch = happy.vertices[:50] + np.float32(5000.0)
    loose = Scan(np.concatenate([happy.vertices, patch]), happy.faces)
    predictor = AffectVLMPredictor.from_pretrained()
    labels = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    got = predictor(scan=loose, labels=labels)
    assert got.label == "happiness" and not got.notes
    np.testing.assert_allclose(got.probs, predictor(scan=happy, labels=labels).probs, atol=0.02)


@pytest.mark.parametrize("kind", ["mesh", "point cloud"])
def test_a_pile_at_the_origin_goes(face, kind):
    """Depth cameras write unmeasured pixels at (0, 0, 0): a pile of them, loose in a mesh or among a cloud's
    points, keeps itself company and must go as no measurement; the face stays whole."""
    face = face if kind == "mesh" else face.replace(faces=None)
    piled = Scan(np.concatenate([face.vertices, np.zeros((300, 3), np.float32)]), face.faces)
    cleaned = drop_stray_points(piled)
    np.testing.assert_array_equal(cleaned.vertices, face.vertices)
    if kind == "mesh":
        np.testing.assert_array_equal(cleaned.faces, face.faces)


def test_a_mesh_vertex_at_the_origin_stays(face):
    """A face moved so that one of its vertices is the origin keeps it and its triangles, also unwelded (one copy of
    the vertex for each triangle at it); a pile of used vertices there, a camera's range image meshed with its
    unmeasured pixels, goes with the triangles that reach it."""
    moved = face.replace(vertices=face.vertices - face.vertices[100])
    assert drop_stray_points(moved) is moved
    unwelded = Scan(moved.vertices[moved.faces].reshape(-1, 3), np.arange(3 * moved.num_faces).reshape(-1, 3))
    assert 2 <= (~unwelded.vertices.any(axis=1)).sum() < 16
    assert drop_stray_points(unwelded).num_faces == unwelded.num_faces
    away = face.replace(vertices=face.vertices + np.float32([0, 0, 600]))  # the face 0.6 m from the camera
    n = away.num_vertices
    spikes = np.stack([np.arange(n, n + 40), np.arange(40), np.arange(1, 41)], axis=1)
    spiked = Scan(np.concatenate([away.vertices, np.zeros((40, 3), np.float32)]), np.concatenate([away.faces, spikes]))
    cleaned = drop_stray_points(spiked)
    np.testing.assert_array_equal(cleaned.vertices, away.vertices)
    np.testing.assert_array_equal(cleaned.faces, away.faces)


# `orient_faces`: triangles wound one way. Each test checks the winding itself: every edge that two triangles
# share is run once each way (a mesh's triangles agree), and each triangle is still the one it was.


def _directed_edges_once(scan: Scan) -> bool:
    f = scan.faces
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return len(np.unique(edges, axis=0)) == len(edges)


def _same_triangles(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.sort(np.sort(a, axis=1), axis=0), np.sort(np.sort(b, axis=1), axis=0))


def test_a_mesh_wound_either_way_at_random_is_wound_one_way(face):
    from affectvlm.scan.clean import orient_faces

    flip = np.random.default_rng(0).random(face.num_faces) < 0.4
    mixed = face.replace(faces=np.where(flip[:, None], face.faces[:, ::-1], face.faces))
    assert not _directed_edges_once(mixed)
    out = orient_faces(mixed)
    assert _directed_edges_once(out) and _same_triangles(out.faces, face.faces)
    # the smaller side turned round: the mesh's own winding (60 % of it) kept
    assert np.array_equal(out.faces, face.faces)
    assert orient_faces(face) is face  # wound one way already: nothing to do, and no copy


def test_a_two_sided_mesh_keeps_one_side(face):
    """Each triangle listed twice, once each way (an exporter's two-sided surface): the first of each kept."""
    from affectvlm.scan.clean import orient_faces

    two_sided = face.replace(faces=np.concatenate([face.faces, face.faces[:, ::-1]]))
    assert np.array_equal(orient_faces(two_sided).faces, face.faces)


def test_an_unwelded_mesh_is_joined_by_place(face):
    """A triangle soup (an STL: three vertices of its own per triangle) wound either way: its triangles meet at
    places, not at shared vertices, and agree there once turned."""
    from affectvlm.scan.clean import orient_faces

    flip = np.random.default_rng(1).random(face.num_faces) < 0.3
    mixed = np.where(flip[:, None], face.faces[:, ::-1], face.faces)
    soup = Scan(face.vertices[mixed].reshape(-1, 3), np.arange(3 * face.num_faces).reshape(-1, 3))
    out = orient_faces(soup)
    turned = out.faces[:, 0] != soup.faces[:, 0]  # (a, b, c) -> (c, b, a)
    assert np.array_equal(turned, flip)  # exactly the triangles that were turned, turned back
    assert _same_triangles(out.faces, soup.faces)


def _facing(scan: Scan) -> float:
    """The triangles' area as the viewer (+z) sees them, fronts (counter-clockwise) counted positive."""
    a, b, c = (scan.vertices[scan.faces[:, k]].astype(np.float64) for k in range(3))
    return float(((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])).sum())


@pytest.mark.parametrize("winding", ["as made", "the other way", "either way"])
def test_a_normalised_mesh_shows_the_viewer_its_fronts(face, winding):
    """Whichever way a file winds its triangles, the normalised face's triangles face the viewer: a preview (the
    app's GLB) draws fronts only, and a face wound the other way was drawn as nothing."""
    faces = {
        "as made": face.faces,
        "the other way": face.faces[:, ::-1],
        "either way": np.where(
            (np.random.default_rng(3).random(face.num_faces) < 0.7)[:, None], face.faces[:, ::-1], face.faces
        ),
    }[winding]
    out = normalize_scan(face.replace(faces=faces))
    assert _facing(out) > 0 and _directed_edges_once(out)


def _boundary(faces: np.ndarray) -> set[tuple[int, int]]:
    """The edges (as sorted pairs) that one triangle uses."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    pairs, count = np.unique(edges, axis=0, return_counts=True)
    return {tuple(p) for p in pairs[count == 1].tolist()}


def test_a_triangle_soup_is_welded_back_into_its_mesh(face):
    """An STL's three vertices of its own per triangle become the mesh's one per place again, each keeping its first
    copy's colour; a mesh that repeats a few places (texture seams) is left as it is."""
    from affectvlm.scan.clean import weld_soup

    colors = np.random.default_rng(0).integers(0, 255, (face.num_vertices, 3), dtype=np.uint8)
    mesh = face.replace(colors=colors)
    soup = Scan(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(3 * mesh.num_faces).reshape(-1, 3),
                colors=colors[mesh.faces].reshape(-1, 3))  # fmt: skip
    welded = weld_soup(soup)
    assert welded.num_vertices == len(np.unique(mesh.faces)) and welded.num_faces == mesh.num_faces
    np.testing.assert_array_equal(welded.vertices[welded.faces], mesh.vertices[mesh.faces])
    np.testing.assert_array_equal(welded.colors[welded.faces], colors[mesh.faces])
    assert _boundary(welded.faces) and len(_boundary(welded.faces)) == len(_boundary(mesh.faces))
    seams = np.arange(0, face.num_vertices, 20)  # one vertex in twenty repeated, as a texture seam repeats them
    seamed = face.replace(vertices=np.concatenate([face.vertices, face.vertices[seams]]))
    assert weld_soup(seamed) is seamed and weld_soup(face) is face


def test_pinholes_close_wound_as_their_neighbours_and_wider_holes_stay(face):
    """Holes a lost vertex leaves (5-8 mm across on this 2.5 mm mesh) are closed with the rim's own vertices,
    every edge then run once each way; a hole 30 mm across (a patch the scanner missed) and the outer boundary stay
    open."""
    from affectvlm.scan.clean import fill_pinholes

    v, centre = face.vertices, np.array([35.0, -40.0])
    patch = np.linalg.norm(v[:, :2] - centre, axis=1) < 15.0
    lost = np.zeros(face.num_vertices, dtype=bool)
    for i in np.random.default_rng(3).permutation(face.num_vertices):  # up to 25 cheek vertices, 10 mm apart
        far = np.linalg.norm(v[lost, :2] - v[i, :2], axis=1).min(initial=np.inf) > 10.0
        cheek = 15.0 < abs(v[i, 0]) < 45.0 and -45.0 < v[i, 1] < 5.0 and np.linalg.norm(v[i, :2] - centre) > 25.0
        lost[i] = far and cheek and lost.sum() < 25
    pitted = face.replace(faces=face.faces[~(lost | patch)[face.faces].any(axis=1)])
    outer = _boundary(face.faces)
    assert lost.sum() >= 15 and len(_boundary(pitted.faces) - outer) > 15 * 6 + 30
    filled = fill_pinholes(pitted)
    assert filled.num_vertices == face.num_vertices and filled.num_faces > pitted.num_faces
    left = _boundary(filled.faces) - outer
    assert len(left) >= 30 and all(np.linalg.norm(v[list(e), :2] - centre, axis=1).max() < 20.0 for e in left)
    assert _directed_edges_once(filled)


