"""Readers and writers: write-then-read round trips for every format, and hostile inputs."""

import struct

import numpy as np
import pytest

from affectvlm.scan import Scan, ScanError, load_scan, write_bnt, write_obj, write_ply, write_wrl
from affectvlm.scan.wrl import triangulate_polygons
from affectvlm.testing import face_mesh


@pytest.fixture(scope="module")
def face():
    return face_mesh()


def _small_textured():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 3)).astype(np.float32) * 50
    f = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0]])
    uv = rng.uniform(size=(6, 2)).astype(np.float32)
    tex = rng.integers(0, 255, size=(8, 16, 3), dtype=np.uint8)
    return Scan(vertices=v, faces=f, uv=uv, texture=tex)


def test_scan_validates_and_converts():
    s = Scan(
        vertices=np.zeros((3, 3), np.float64), faces=np.array([[0, 1, 2]], np.int32), colors=np.ones((3, 3))
    )
    assert s.vertices.dtype == np.float32 and s.faces.dtype == np.int64 and s.colors.dtype == np.uint8
    assert s.colors.max() == 255 and not s.is_point_cloud
    assert Scan(vertices=np.zeros((2, 3))).is_point_cloud
    with pytest.raises(ScanError, match="out of range"):
        Scan(vertices=np.zeros((3, 3)), faces=np.array([[0, 1, 3]]))
    with pytest.raises(ScanError, match=r"\(N, 3\)"):
        Scan(vertices=np.zeros((3, 2)))
    assert issubclass(ScanError, ValueError)


def test_wrl_round_trip_with_texture(tmp_path, face):
    tex = np.random.default_rng(1).integers(0, 255, size=(32, 32, 3), dtype=np.uint8)
    scan = face.replace(texture=tex)
    write_wrl(tmp_path / "F0001_HA04WH_F3D.wrl", scan)
    assert (tmp_path / "F0001_HA04WH_F3D.bmp").is_file()
    back = load_scan(tmp_path / "F0001_HA04WH_F3D.wrl")
    np.testing.assert_allclose(back.vertices, scan.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, scan.faces)
    np.testing.assert_allclose(back.uv, scan.uv, atol=1e-6)
    np.testing.assert_array_equal(back.texture, tex)


WRL_MIXED = """#VRML V2.0 utf8
# a comment with [ brackets ] and coordIndex [ 9 9 9 ]
Transform { children [ Shape {
  appearance Appearance { texture ImageTexture { url "tex.BMP" } }
  geometry IndexedFaceSet {
    coord DEF co Coordinate { point [ 0 0 0, 1 0 0, 1 1 0,
      0 1 0, 2 0.5 1 ] }
    coordIndex [ 0, 1, 2, 3, -1, 1 4 2 -1 ]
    texCoord TextureCoordinate { point [ 0 0, 1 0, 1 1, 0 1, 0.5 0.5, 0.9 0.9 ] }
    texCoordIndex [ 0 1 2 3 -1 4 5 2 ]
  }
} ] }
Viewpoint { position 0 0 400 description "front" }
"""


def _with_transforms(path, *fields: str) -> None:
    """Wrap the geometry of a written `.wrl` in nested Transforms, the first given outermost."""
    text = path.read_text()
    body = text[text.index("Transform {") :]
    for field in reversed(fields):
        body = f"Transform {{\n  {field}\n  children [\n{body}\n  ]\n}}\n"
    path.write_text("#VRML V2.0 utf8\n\n" + body)


def test_wrl_transforms_place_the_geometry(tmp_path, face):
    """Each IndexedFaceSet goes through the Transforms about it, innermost first: VRML's T C R SR S -SR -C, so a
    metre-scale model turned z-up reads as the millimetre face, +y up (the reader once ignored them)."""
    v = face.vertices.astype(np.float64)
    metres_z_up = np.c_[v[:, 0], -v[:, 2], v[:, 1]] / 1000.0  # a quarter turn about x, then metres
    write_wrl(tmp_path / "a.wrl", Scan(metres_z_up, face.faces))
    _with_transforms(tmp_path / "a.wrl", "scale 1000 1000 1000", "rotation 1 0 0 -1.5707963267948966")
    np.testing.assert_allclose(load_scan(tmp_path / "a.wrl").vertices, v, atol=2e-3)
    write_wrl(tmp_path / "b.wrl", face)
    _with_transforms(tmp_path / "b.wrl", "translation 10 0 0 center 1 2 3 rotation 0 0 1 3.141592653589793 scale 2, 1, 1")
    turned = np.c_[-(2 * (v[:, 0] - 1)) + 1 + 10, -(v[:, 1] - 2) + 2, v[:, 2]]
    np.testing.assert_allclose(load_scan(tmp_path / "b.wrl").vertices, turned, atol=2e-3)
    _with_transforms(tmp_path / "b.wrl", "scale 1 1")
    with pytest.raises(ScanError, match="'scale' needs 3 numbers"):
        load_scan(tmp_path / "b.wrl")


def test_wrl_mixed_polygons_and_per_corner_uv(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4), (10, 20, 30)).save(tmp_path / "tex.bmp")
    (tmp_path / "a.wrl").write_text(WRL_MIXED)
    scan = load_scan(tmp_path / "a.wrl")
    # the quad gives 2 triangles, the triangle 1; vertex 1 has two different uvs -> split once
    assert scan.num_faces == 3 and scan.num_vertices == 6
    corners = scan.vertices[scan.faces]
    np.testing.assert_allclose(corners[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(corners[1], [[0, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(scan.uv[scan.faces[2]], [[0.5, 0.5], [0.9, 0.9], [1, 1]])
    np.testing.assert_allclose(scan.uv[scan.faces[0]], [[0, 0], [1, 0], [1, 1]])
    assert scan.texture.shape == (4, 4, 3) and scan.texture[0, 0, 0] == 10  # found despite case


def test_wrl_with_one_uv_per_triangle_corner_keeps_the_mesh_whole(tmp_path, face):
    """A texCoordIndex that gives every corner its own entry, repeated values and all, is split only where
    the uv values differ: the mesh keeps its vertices (it fell apart into separate triangles)."""
    write_wrl(tmp_path / "a.wrl", face)
    text = (tmp_path / "a.wrl").read_text()
    corners = face.uv[face.faces.reshape(-1)]
    points = ",\n".join(f"{u:.6f} {v:.6f}" for u, v in corners)
    index = " ".join(f"{3 * i} {3 * i + 1} {3 * i + 2} -1" for i in range(face.num_faces))
    start = text.index("texCoord ")
    text = text[:start] + f"texCoord TextureCoordinate {{ point [ {points} ] }}\n texCoordIndex [ {index} ]\n }} }} ] }}\n"
    (tmp_path / "a.wrl").write_text(text)
    back = load_scan(tmp_path / "a.wrl")
    assert back.num_vertices == face.num_vertices and back.num_faces == face.num_faces
    np.testing.assert_allclose(back.vertices[back.faces], face.vertices[face.faces], atol=1e-4)
    np.testing.assert_allclose(back.uv[back.faces], face.uv[face.faces], atol=1e-5)


def test_wrl_fields_are_found_by_whole_names_only(tmp_path, face):
    """A field whose name ends in a block's keyword (a PROTO's `mycoordIndex`, `mytexCoord`, `myurl`) is not that
    block: the triangles and uvs come from the real fields that follow it."""
    write_wrl(tmp_path / "a.wrl", face)
    text = (tmp_path / "a.wrl").read_text()
    decoys = 'mycoordIndex [ 0 0 0 -1 ] mytexCoord TextureCoordinate { point [ 9 9 ] } myurl "elsewhere.png"\n'
    start = text.index("coord ")
    (tmp_path / "b.wrl").write_text(text[:start] + decoys + text[start:])
    back = load_scan(tmp_path / "b.wrl")
    assert back.num_vertices == face.num_vertices and back.num_faces == face.num_faces
    np.testing.assert_allclose(back.vertices[back.faces], face.vertices[face.faces], atol=1e-4)
    np.testing.assert_allclose(back.uv[back.faces], face.uv[face.faces], atol=1e-5)


def test_triangulate_polygons_fan():
    tri = triangulate_polygons(np.array([0, 1, 2, 3, 4, -1, 5, 6, -1, 7, 8, 9]))
    np.testing.assert_array_equal(tri, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [7, 8, 9]])


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, face, binary):
    colors = np.random.default_rng(2).integers(0, 255, size=(face.num_vertices, 3), dtype=np.uint8)
    scan = Scan(vertices=face.vertices, faces=face.faces, colors=colors)
    write_ply(tmp_path / "m.ply", scan, binary=binary)
    back = load_scan(tmp_path / "m.ply")
    np.testing.assert_allclose(back.vertices, scan.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, scan.faces)
    np.testing.assert_array_equal(back.colors, colors)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_point_cloud_round_trip(tmp_path, binary):
    rng = np.random.default_rng(3)
    scan = Scan(
        vertices=rng.normal(size=(100, 3)), colors=rng.integers(0, 255, size=(100, 3)).astype(np.uint8)
    )
    write_ply(tmp_path / "p.ply", scan, binary=binary)
    back = load_scan(tmp_path / "p.ply")
    assert back.is_point_cloud
    np.testing.assert_allclose(back.vertices, scan.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.colors, scan.colors)


def test_obj_round_trip_with_texture(tmp_path):
    scan = _small_textured()
    write_obj(tmp_path / "m.obj", scan)
    back = load_scan(tmp_path / "m.obj")
    np.testing.assert_allclose(back.vertices, scan.vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, scan.faces)
    np.testing.assert_allclose(back.uv, scan.uv, atol=1e-5)
    np.testing.assert_array_equal(back.texture, scan.texture)


def test_obj_vertex_colors_round_trip(tmp_path, face):
    colors = np.random.default_rng(4).integers(0, 255, size=(face.num_vertices, 3), dtype=np.uint8)
    write_obj(tmp_path / "c.obj", Scan(vertices=face.vertices, faces=face.faces, colors=colors))
    back = load_scan(tmp_path / "c.obj")
    np.testing.assert_array_equal(back.faces, face.faces)
    assert np.abs(back.colors.astype(int) - colors).max() <= 1


def test_obj_with_per_corner_uv_reads_its_geometry_without_numpy_warnings(tmp_path, face):
    """Each triangle corner its own `vt` (as exporters that split UV seams write) and vertices no triangle uses:
    the vertices and triangles read as written, and trimesh's texture code does not print numpy's RuntimeWarnings to the user."""
    import warnings

    vertices = np.vstack([face.vertices[:3] + 50.0, face.vertices])  # three a triangle never uses, first
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {(k % 97) / 97:.4f} {(k % 89) / 89:.4f}" for k in range(3 * face.num_faces)]
    lines += ["f " + " ".join(f"{a + 4}/{3 * i + j + 1}" for j, a in enumerate(t)) for i, t in enumerate(face.faces)]
    (tmp_path / "corners.obj").write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = load_scan(tmp_path / "corners.obj")
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    np.testing.assert_allclose(back.vertices, vertices, atol=1e-5)
    np.testing.assert_array_equal(back.faces, face.faces + 3)


@pytest.mark.parametrize("ext", ["stl", "off", "glb"])
def test_trimesh_formats_round_trip(tmp_path, face, ext):
    import trimesh

    mesh = trimesh.Trimesh(face.vertices, face.faces, process=False)
    mesh.export(tmp_path / f"m.{ext}")
    back = load_scan(tmp_path / f"m.{ext}")
    assert back.num_faces == face.num_faces
    # STL stores corners, not shared vertices: compare the triangles' corner positions
    np.testing.assert_allclose(back.vertices[back.faces], face.vertices[face.faces], atol=1e-4)


def test_bnt_round_trip(tmp_path):
    nrows, ncols = 5, 4
    yy, xx = np.mgrid[0:nrows, 0:ncols].astype(np.float64)
    z = 10.0 + xx
    z[0, 0] = -1e9  # one background point
    u, v = xx / ncols, yy / nrows
    write_bnt(
        tmp_path / "bs000_E_HAPPY_0.bnt", xx, yy, z, u, v, nrows, ncols, image_name="bs000_E_HAPPY_0.png"
    )
    from PIL import Image

    Image.new("RGB", (ncols, nrows), (1, 2, 3)).save(tmp_path / "bs000_E_HAPPY_0.png")
    data = (tmp_path / "bs000_E_HAPPY_0.bnt").read_bytes()
    assert len(data) == 18 + len("bs000_E_HAPPY_0.png") + 8 * 5 * nrows * ncols
    scan = load_scan(tmp_path / "bs000_E_HAPPY_0.bnt")
    assert scan.num_vertices == nrows * ncols - 1
    # 3 x 4 cells minus the one touching the invalid corner, two triangles each
    assert scan.num_faces == 2 * (3 * 4 - 1)
    np.testing.assert_allclose(scan.vertices[:, 2], z.reshape(-1)[1:])
    np.testing.assert_allclose(scan.uv[:, 1], 1.0 - v.reshape(-1)[1:])  # v flipped to bottom origin
    assert scan.texture.shape == (nrows, ncols, 3)


@pytest.mark.parametrize("ncols", [3, 6])
def test_point_text_and_npy(tmp_path, ncols):
    rng = np.random.default_rng(5)
    arr = np.concatenate([rng.normal(size=(50, 3)), rng.integers(0, 255, size=(50, 3))], 1)[:, :ncols]
    np.savetxt(tmp_path / "p.xyz", arr)
    np.save(tmp_path / "p.npy", arr)
    for name in ("p.xyz", "p.npy"):
        scan = load_scan(tmp_path / name)
        assert scan.is_point_cloud and scan.num_vertices == 50
        np.testing.assert_allclose(scan.vertices, arr[:, :3], atol=1e-5)
        assert (scan.colors is None) == (ncols == 3)


# ----------------------------------------------------------------------------- hostile inputs


def _npy_header(shape):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _bnt_header(nrows, ncols, count, name=b"x.png"):
    return struct.pack("<HHdH", nrows, ncols, -1e9, len(name)) + name + struct.pack("<I", count)


@pytest.mark.parametrize(
    ("name", "payload", "match"),
    [
        ("a.foo", b"abc", "unknown scan extension"),
        ("a.wrl", b"", "empty file"),
        ("a.wrl", b"#VRML V1.0 ascii\n", "version"),
        ("a.wrl", b"solid x\n", "not a VRML"),
        (
            "a.wrl",
            b"#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2 3, 4 5",
            "never closed",
        ),
        ("a.wrl", b"#VRML V2.0 utf8\ncoord Coordinate { point [ 1 2 3 4 ] }", "multiple of 3"),
        ("a.wrl", b"#VRML V2.0 utf8\ncoord Coordinate { point [ 1 2 x ] }", "corrupt number"),
        (
            "a.wrl",
            b"#VRML V2.0 utf8\ncoord Coordinate { point [ 0 0 0 ] } coordIndex [ 0 1 2 -1 ]",
            "refers to vertex",
        ),
        ("a.wrl", b"#VRML V2.0 utf8\nTransform { }", "no vertices"),
        ("a.wrl", b"#VRML V2.0 utf8\ncoord Coordinate { point [ nan 0 0, 1 nan 0 ] }", "NaN"),
        ("a.bnt", b"\x01\x00", "truncated"),
        ("a.bnt", _bnt_header(60000, 60000, 5 * 60000 * 60000 % 2**32), "corrupt .bnt header"),
        ("a.bnt", _bnt_header(100, 100, 50000) + b"\0" * 64, "truncated"),
        ("a.bnt", _bnt_header(1, 1, 5) + struct.pack("<5d", 0, 0, -1e9, 0, 0), "no valid points"),
        (
            "a.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1000000000000\nproperty float x\nend_header\n",
            "cap",
        ),
        (
            "a.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
            + b"\0" * 100,
            "truncated",
        ),
        (
            "a.ply",
            b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n1 1 1\nfoo bar baz\n",
            "PLY",
        ),
        ("a.ply", b"PK\x03\x04 zip file", "not a PLY"),
        ("a.off", b"OFF\n99999999999 1 0\n0 0 0\n", "caps"),
        ("a.off", b"OFF\n1000 10 0\n0 0 0\n", "truncated"),
        ("a.stl", b"\0" * 80 + struct.pack("<I", 10**9) + b"\0" * 50, "binary STL"),
        ("a.glb", b"glTF\x02\x00\x00\x00\xff\xff\xff\x00", "GLB"),
        ("a.obj", b"\xff\xfe\x00garbage\x00\x01", "OBJ"),
        ("a.npy", _npy_header((10**12, 3)), "cap"),
        ("a.npy", _npy_header((10, 3)) + b"\0" * 16, "truncated"),
        ("a.xyz", b"1 2 3\n4 5\n", "columns"),
        ("a.xyz", b"nan nan nan\ninf 0 0\n1 2 3\n", "NaN"),
    ],
)
def test_hostile_files_raise_scan_error(tmp_path, name, payload, match):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(ScanError, match=match) as info:
        load_scan(path)
    assert name in str(info.value) or "extension" in str(info.value)


def test_missing_and_too_large(tmp_path):
    with pytest.raises(ScanError, match="no such file"):
        load_scan(tmp_path / "missing.ply")
    (tmp_path / "big.xyz").write_bytes(b"1 2 3\n" * 100)
    with pytest.raises(ScanError, match="larger than the cap"):
        load_scan(tmp_path / "big.xyz", max_file_bytes=100)
    with pytest.raises(ScanError, match="cap"):
        load_scan(tmp_path / "big.xyz", max_vertices=10)


def test_wrl_vertex_cap_checked_before_conversion(tmp_path):
    (tmp_path / "a.wrl").write_text("#VRML V2.0 utf8\ncoord Coordinate { point [ " + "1 2 3, " * 1000 + "] }")
    with pytest.raises(ScanError, match="cap"):
        load_scan(tmp_path / "a.wrl", max_vertices=100)


def test_few_nonfinite_vertices_are_dropped(tmp_path):
    v = np.random.default_rng(6).normal(size=(10, 3))
    v[3, 1] = np.nan
    scan = Scan(vertices=v, faces=np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7]]))
    write_ply(tmp_path / "n.ply", scan)
    back = load_scan(tmp_path / "n.ply")
    assert back.num_vertices == 9 and back.num_faces == 2
    assert np.isfinite(back.vertices).all()


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("a.obj", b"v 0 0 0\n" * 50 + b"f 1 2 3\n"),
        (
            "a.stl",
            b"solid x\n"
            + b"facet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\nendloop\nendfacet\n"
            * 30,
        ),
        ("a.xyz", b"0 0 0\n" * 200),
        ("a.wrl", b"#VRML V2.0 utf8\ncoord Coordinate { point [ " + b"1 2 3 " * 40 + b"] }"),
    ],
)
def test_caps_are_checked_before_parsing(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(ScanError, match="cap"):
        load_scan(tmp_path / name, max_vertices=20, max_faces=20)


def test_hostile_wrl_is_fast(tmp_path):
    import time

    # many unterminated ImageTexture nodes: an unbounded lazy regex would take quadratic time
    payload = (
        b"#VRML V2.0 utf8\ncoord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }\n"
        + b"ImageTexture { " * 200_000
    )
    (tmp_path / "a.wrl").write_bytes(payload)
    start = time.perf_counter()
    scan = load_scan(tmp_path / "a.wrl")
    assert scan.num_vertices == 3 and time.perf_counter() - start < 5.0


@pytest.mark.parametrize("wrong", ["obj", "stl", "off", "wrl", "bnt", "glb", "npy"])
def test_content_that_does_not_match_the_extension(tmp_path, face, wrong):
    write_ply(tmp_path / "real.ply", face)
    (tmp_path / f"fake.{wrong}").write_bytes((tmp_path / "real.ply").read_bytes())
    with pytest.raises(ScanError, match="fake"):
        load_scan(tmp_path / f"fake.{wrong}")
