"""Files as other tools write them: a byte-order mark, tabs, classic Mac line ends, binary PLY faces of mixed
sizes (Blender, MeshLab), a point count or column names on a point file's first line, decimal commas. Each is
read back to the geometry it was written from (the truth), and one of them is scored by the shipped model."""

import struct
from pathlib import Path

import numpy as np
import pytest

from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor
from affectvlm.scan import Scan, ScanError, load_scan
from affectvlm.testing import face_mesh

BOM = b"\xef\xbb\xbf"
HAPPY = Path(__file__).resolve().parents[1] / "examples" / "scan_subject0_happiness.ply"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


@pytest.fixture(scope="module")
def face():
    return face_mesh()


def _obj(scan: Scan, sep: str = " ", newline: str = "\n") -> bytes:
    lines = [f"v{sep}{x:.6f} {y:.6f} {z:.6f}" for x, y, z in scan.vertices]
    lines += [f"f{sep}{a + 1} {b + 1} {c + 1}" for a, b, c in scan.faces]
    return (newline.join(lines) + newline).encode()


def _points(vertices: np.ndarray, sep: str = " ", decimal: str = ".") -> list[str]:
    return [sep.join(f"{c:.6f}".replace(".", decimal) for c in row) for row in vertices]


def _same_mesh(back: Scan, scan: Scan) -> None:
    np.testing.assert_allclose(back.vertices, scan.vertices, atol=1e-4)
    np.testing.assert_array_equal(back.faces, scan.faces)


@pytest.mark.parametrize(
    "variant",
    ["bom", "tab", "cr", "crlf-bom", "utf-16"],
)
def test_obj_text_conventions_read_as_written(tmp_path, face, variant):
    data = {
        "bom": BOM + _obj(face),
        "tab": _obj(face, sep="\t"),
        "cr": _obj(face, newline="\r"),
        "crlf-bom": BOM + _obj(face, newline="\r\n"),
        # Windows PowerShell's `>`: UTF-16 with its byte-order mark (once "the OBJ file holds no geometry")
        "utf-16": _obj(face, newline="\r\n").decode().encode("utf-16"),
    }[variant]
    (tmp_path / "f.obj").write_bytes(data)
    _same_mesh(load_scan(tmp_path / "f.obj"), face)


def test_byte_order_mark_on_every_text_format(tmp_path, face):
    from affectvlm.scan import write_ply, write_wrl

    write_ply(tmp_path / "a.ply", face, binary=False)
    write_wrl(tmp_path / "a.wrl", face)
    for name in ("a.ply", "a.wrl"):
        (tmp_path / f"bom-{name}").write_bytes(BOM + (tmp_path / name).read_bytes())
        _same_mesh(load_scan(tmp_path / f"bom-{name}"), load_scan(tmp_path / name))
    (tmp_path / "a.xyz").write_bytes(BOM + "\n".join(_points(face.vertices)).encode())
    np.testing.assert_allclose(load_scan(tmp_path / "a.xyz").vertices, face.vertices, atol=1e-4)
    (tmp_path / "b.xyz").write_bytes("\r\n".join(_points(face.vertices)).encode("utf-16-be").join([b"\xfe\xff", b""]))
    np.testing.assert_allclose(load_scan(tmp_path / "b.xyz").vertices, face.vertices, atol=1e-4)
    (tmp_path / "c.xyz").write_bytes(b"\xff\xfe" + b"1 2 3\n\x00\xd8")  # a lone surrogate: not UTF-16
    with pytest.raises(ScanError, match="UTF-16 byte-order mark but is not UTF-16"):
        load_scan(tmp_path / "c.xyz")


def _ascii_stl(scan: Scan, name: str = "face") -> str:
    corners = scan.vertices[scan.faces]
    facets = "".join(
        "facet normal 0 0 0\n outer loop\n"
        + "".join(f"  vertex {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in tri)
        + " endloop\nendfacet\n"
        for tri in corners
    )
    return f"solid {name}\n{facets}endsolid {name}\n"


def test_ascii_stl_in_capitals_reads_as_in_lower_case(tmp_path, face):
    text = _ascii_stl(face, "Face")
    (tmp_path / "lower.stl").write_text(text)
    (tmp_path / "upper.stl").write_text(text.upper())  # as some CAD exporters write it: SOLID, FACET NORMAL
    upper, lower = load_scan(tmp_path / "upper.stl"), load_scan(tmp_path / "lower.stl")
    np.testing.assert_allclose(upper.vertices[upper.faces], face.vertices[face.faces], atol=1e-4)
    np.testing.assert_array_equal(upper.faces, lower.faces)


def test_obj_vertex_index_zero_is_refused(tmp_path):
    (tmp_path / "z.obj").write_bytes(b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n")
    with pytest.raises(ScanError, match="index 0.*z.obj"):
        load_scan(tmp_path / "z.obj")
    (tmp_path / "ten.obj").write_bytes(b"v 0 0 0\n" * 3 + b"v 1 0 0\nv 0 1 0\n" * 4 + b"f 10 1 2\nf 1 9 10\n")
    assert load_scan(tmp_path / "ten.obj").faces.tolist() == [[9, 0, 1], [0, 8, 9]]


def _mixed_ply(scan: Scan, order: str) -> bytes:
    """Binary PLY with every other triangle pair written as one quad where they share an edge, the rest as
    triangles, with a colour and a normal per vertex and an extra face property (as Blender writes)."""
    fmt = {"<": "binary_little_endian", ">": "binary_big_endian"}[order]
    polygons = [list(t) for t in scan.faces[:-2]] + [[*scan.faces[-2], scan.faces[-1][2]]]
    header = (
        f"ply\nformat {fmt} 1.0\ncomment mixed polygons\nelement vertex {scan.num_vertices}\n"
        "property float x\nproperty float y\nproperty float z\nproperty float nx\nproperty float ny\n"
        "property float nz\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(polygons)}\nproperty list uchar uint vertex_indices\nproperty uchar flags\n"
        "end_header\n"
    ).encode()
    vertex = np.zeros(
        scan.num_vertices,
        [(k, order + "f4") for k in ("x", "y", "z", "nx", "ny", "nz")] + [(k, "u1") for k in ("r", "g", "b")],
    )
    for i, k in enumerate("xyz"):
        vertex[k] = scan.vertices[:, i]
    vertex["r"], vertex["g"] = 200, np.arange(scan.num_vertices) % 256
    faces = b"".join(struct.pack(f"{order}B{len(p)}IB", len(p), *(int(i) for i in p), 7) for p in polygons)
    return header + vertex.tobytes() + faces


@pytest.mark.parametrize("order", ["<", ">"])
def test_binary_ply_with_triangles_and_quads(tmp_path, face, order):
    """The last two triangles of the face written as one quad [a, b, c, d] (fan: (a, b, c), (a, c, d)), every
    other face a triangle: the file reads back to the triangles, the quad split as the fan rule says."""
    (tmp_path / "m.ply").write_bytes(_mixed_ply(face, order))
    back = load_scan(tmp_path / "m.ply")
    np.testing.assert_allclose(back.vertices, face.vertices, atol=1e-5)
    a, b, c = face.faces[-2]
    want = [tuple(t) for t in face.faces[:-2]] + [(a, b, c), (a, c, face.faces[-1][2])]
    assert sorted(map(tuple, back.faces.tolist())) == sorted(map(lambda t: tuple(map(int, t)), want))
    assert back.colors[:, 0].tolist() == [200] * face.num_vertices
    assert back.colors[:, 1].tolist() == (np.arange(face.num_vertices) % 256).tolist()


def test_binary_ply_with_mixed_faces_truncated(tmp_path, face):
    data = _mixed_ply(face, "<")
    (tmp_path / "t.ply").write_bytes(data[:-5])
    with pytest.raises(ScanError, match="t.ply"):
        load_scan(tmp_path / "t.ply")


@pytest.mark.parametrize(
    "variant", ["leica-count", "names", "names-csv", "decimal-comma-semicolon", "decimal-comma-space", "cr"]
)
def test_point_file_first_lines_and_decimal_commas(tmp_path, face, variant):
    v = face.vertices[:500]
    lines = {
        "leica-count": [str(len(v))] + [f"{row} 12 200 180 170" for row in _points(v)],
        "names": ["x y z"] + _points(v),
        "names-csv": ["X,Y,Z"] + _points(v, sep=","),
        "decimal-comma-semicolon": _points(v, sep=";", decimal=","),
        "decimal-comma-space": _points(v, sep=" ", decimal=","),
        "cr": _points(v),
    }[variant]
    newline = "\r" if variant == "cr" else "\n"
    (tmp_path / "p.pts").write_bytes(newline.join(lines).encode())
    back = load_scan(tmp_path / "p.pts")
    np.testing.assert_allclose(back.vertices, v, atol=1e-5)


def test_comma_separated_points_stay_comma_separated(tmp_path):
    """'0.5,1.5,2.5' is three numbers, and so is '0.5, 1.5, 2.5': a comma is a decimal comma only inside
    fields split by semicolons or spaces."""
    for text in (b"0.5,1.5,2.5\n1,2,3\n4,5,6\n", b"0.5, 1.5, 2.5\n1, 2, 3\n4, 5, 6\n"):
        (tmp_path / "c.xyz").write_bytes(text)
        np.testing.assert_allclose(load_scan(tmp_path / "c.xyz").vertices[0], [0.5, 1.5, 2.5])


@pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")
def test_blender_style_ply_is_scored_like_the_face_it_holds(tmp_path):
    """A happy face (an example scan) written as a binary PLY of triangles and a quad: happiness, as the face
    itself reads."""
    happy = load_scan(HAPPY)
    (tmp_path / "happy.ply").write_bytes(_mixed_ply(happy, "<"))
    predictor = AffectVLMPredictor.from_pretrained()
    from_file = predictor(scan=tmp_path / "happy.ply", labels=EMOTIONS)
    assert from_file.label == "happiness"
    np.testing.assert_allclose(from_file.probs, predictor(scan=happy, labels=EMOTIONS).probs, atol=0.02)


def test_point_spacing_leaves_out_edges_of_no_length(face):
    """Quads that repeat a vertex ("f 1 2 3 3") triangulate to one triangle of no area each: its edges of no
    length are not the scan's spacing (the median edge was 0, and the stray-point filter then dropped a third of a
    face's vertices)."""
    from affectvlm.scan.clean import point_spacing

    collapsed = np.concatenate([face.faces, face.faces[:, [2, 2, 0]]])
    assert point_spacing(face.replace(faces=collapsed)) == pytest.approx(point_spacing(face), rel=0.1)
    assert point_spacing(face.replace(faces=np.zeros((4, 3), np.int64))) > 0.0  # no edge at all: as a cloud


@pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")
def test_quads_that_repeat_a_vertex_are_scored_like_the_face_they_hold(tmp_path):
    """A happy face (an example scan) written as an OBJ of quads whose last corner repeats the third, as some
    exporters write triangles: happiness, as the face itself reads (0.23 and "no face was found" before)."""
    happy = load_scan(HAPPY)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in happy.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1} {c + 1}" for a, b, c in happy.faces]
    (tmp_path / "happy.obj").write_text("\n".join(lines) + "\n")
    predictor = AffectVLMPredictor.from_pretrained()
    from_file = predictor(scan=tmp_path / "happy.obj", labels=EMOTIONS)
    assert from_file.label == "happiness" and not from_file.notes
    np.testing.assert_allclose(from_file.probs, predictor(scan=happy, labels=EMOTIONS).probs, atol=0.02)


@pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")
@pytest.mark.parametrize("winding", ["either way", "two-sided", "STL either way"])
def test_a_mesh_wound_any_way_is_scored_like_the_face_it_holds(tmp_path, winding):
    """A happy face (an example scan) whose triangles are wound either way at random, listed twice (once each way),
    or written as a binary STL wound either way: happiness, as the face itself reads (fear 0.89-0.90, and
    happiness 0.40 two-sided, before: the vertex normals cancelled)."""
    happy = load_scan(HAPPY)
    flip = np.random.default_rng(0).random(happy.num_faces) < 0.5
    mixed = np.where(flip[:, None], happy.faces[:, ::-1], happy.faces)
    if winding == "STL either way":
        corners = happy.vertices[mixed]
        records = b"".join(struct.pack("<12fH", 0, 0, 0, *tri.ravel(), 0) for tri in corners)
        (tmp_path / "happy.stl").write_bytes(b"\0" * 80 + struct.pack("<I", len(corners)) + records)
        path = tmp_path / "happy.stl"
    else:
        from affectvlm.scan import write_ply

        faces = mixed if winding == "either way" else np.concatenate([happy.faces, happy.faces[:, ::-1]])
        write_ply(tmp_path / "happy.ply", happy.replace(faces=faces))
        path = tmp_path / "happy.ply"
    predictor = AffectVLMPredictor.from_pretrained()
    from_file = predictor(scan=path, labels=EMOTIONS)
    assert from_file.label == "happiness" and not from_file.notes
    np.testing.assert_allclose(from_file.probs, predictor(scan=happy, labels=EMOTIONS).probs, atol=0.02)


def _strips_ply(scan: Scan, binary: bool, paired: bool = True) -> bytes:
    """The mesh as an old range scanner's tools write it: a `tristrips` element, one list running through strips
    with -1 between two. Each triangle is a strip of its own, but with `paired` the first two, (a, b, c) and
    (c, b, d), are one strip (a, b, c, d), and the last strip is joined to the one before by repeating the
    vertices either side of the join (a, b, c, c, d, d, e, f: the join's triangles have a repeated corner)."""
    t = [[int(i) for i in f] for f in scan.faces]
    strips = [[*t[0], t[1][2]], *t[2:-1]] if paired else t[:-1]
    strips[-1] = [*strips[-1], strips[-1][-1], t[-1][0], *t[-1]]
    flat = [i for s in strips for i in (*s, -1)][:-1]
    fmt = "binary_little_endian" if binary else "ascii"
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex {scan.num_vertices}\nproperty float x\nproperty float y\n"
        "property float z\nelement tristrips 1\nproperty list int int vertex_indices\nend_header\n"
    ).encode()
    if binary:
        body = scan.vertices.astype("<f4").tobytes() + struct.pack(f"<i{len(flat)}i", len(flat), *flat)
    else:
        rows = [" ".join(f"{c:.6f}" for c in v) for v in scan.vertices]
        body = ("\n".join(rows) + f"\n{len(flat)} " + " ".join(map(str, flat)) + "\n").encode()
    return header + body


def test_strip_triangles_turn_every_second_and_drop_the_joins():
    from affectvlm.scan.ply import strip_triangles

    got = strip_triangles(np.array([0, 1, 2, 3, 4, -1, 5, 6, 7, 7, 8, 9]), max_triangles=100)
    assert got.tolist() == [[0, 1, 2], [2, 1, 3], [2, 3, 4], [5, 6, 7], [8, 7, 9]]  # parity runs on past a join
    with pytest.raises(ScanError, match="cap"):
        strip_triangles(np.arange(10), max_triangles=7)


@pytest.mark.parametrize("binary", [True, False])
def test_a_ply_of_triangle_strips_reads_as_its_triangles(tmp_path, face, binary):
    """Igea and the Cyberware scans come as PLY triangle strips; trimesh reads such a file as a point cloud and
    says nothing (the face was then framed from the back of its head)."""
    faces = face.faces.copy()
    a, b, c = faces[0]
    pair = np.flatnonzero([(f[0] == c and f[1] == b) or set(f) >= {b, c} and a not in f for f in faces])[0]
    d = int(next(i for i in faces[pair] if i not in (b, c)))
    faces[[1, pair]] = faces[[pair, 1]]
    faces[1] = (c, b, d)
    mesh = face.replace(faces=faces)
    (tmp_path / "s.ply").write_bytes(_strips_ply(mesh, binary))
    back = load_scan(tmp_path / "s.ply")
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
    assert back.faces[:2].tolist() == [[a, b, c], [c, b, d]]  # the second turned to wind as the first
    assert sorted(map(sorted, back.faces.tolist())) == sorted(map(sorted, mesh.faces.tolist()))


@pytest.mark.parametrize("damage", ["index", "cut"])
def test_a_damaged_ply_of_triangle_strips_is_refused(tmp_path, face, damage):
    data = _strips_ply(face, binary=True)
    if damage == "index":
        data = data[:-4] + struct.pack("<i", face.num_vertices + 5)
    else:
        data = data[:-10]
    (tmp_path / "bad.ply").write_bytes(data)
    with pytest.raises(ScanError, match="bad.ply"):
        load_scan(tmp_path / "bad.ply")


@pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")
def test_a_happy_face_as_triangle_strips_is_scored_like_the_face_it_holds(tmp_path):
    """The happy example written as PLY triangle strips (each triangle a strip of its own): happiness, as the face
    itself reads; read as a point cloud before, it was scored from the cloud's splats."""
    happy = load_scan(HAPPY)
    (tmp_path / "happy.ply").write_bytes(_strips_ply(happy, binary=True, paired=False))
    assert sorted(map(sorted, load_scan(tmp_path / "happy.ply").faces.tolist())) == sorted(
        map(sorted, happy.faces.tolist())
    )
    predictor = AffectVLMPredictor.from_pretrained()
    from_file = predictor(scan=tmp_path / "happy.ply", labels=EMOTIONS)
    assert from_file.label == "happiness"
    np.testing.assert_allclose(from_file.probs, predictor(scan=happy, labels=EMOTIONS).probs, atol=0.02)


@pytest.mark.parametrize("binary", [True, False])
def test_strips_beyond_the_cap_or_not_numbers_are_refused_before_they_are_read(tmp_path, face, binary):
    """The strips' indices are counted (binary: from the list counts; ASCII: a pass over the bytes) against the
    triangle cap before any is read, as a file of a billion indices would otherwise cost their memory."""
    (tmp_path / "s.ply").write_bytes(_strips_ply(face, binary))
    with pytest.raises(ScanError, match="cap of"):
        load_scan(tmp_path / "s.ply", max_faces=face.num_faces // 8)
    assert load_scan(tmp_path / "s.ply", max_faces=face.num_faces).num_faces == face.num_faces
    if not binary:
        (tmp_path / "w.ply").write_bytes(_strips_ply(face, binary).replace(b"end_header\n", b"end_header\nzero ", 1))
        with pytest.raises(ScanError, match="not a number"):
            load_scan(tmp_path / "w.ply")
