"""Hostile scan files: every one is read or refused with a ScanError that names the problem and the
file's base name (never its folder), in bounded time and memory. Each test writes its own files."""

import json
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from affectvlm.scan import Scan, ScanError, load_scan
from affectvlm.scan.io import MAX_TEXTURE_PIXELS

ROOT = Path(__file__).resolve().parents[1]

TRIANGLE_OBJ = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
PLY_XYZ = b"property float x\nproperty float y\nproperty float z\n"


def _load(path, **caps):
    """load_scan, checking that a refusal names the file but not its folder."""
    try:
        return load_scan(path, **caps)
    except ScanError as err:
        assert Path(path).name in str(err), str(err)
        assert str(Path(path).parent) not in str(err), str(err)
        raise


def _png(
    width: int, height: int, rows: int | None = None, color=(0, 0, 0), idat: bytes | None = None
) -> bytes:
    """An RGB PNG whose header says width x height, holding `rows` rows of pixels (all by default) or
    the given IDAT bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" + bytes(color) * width
    packer = zlib.compressobj(1)
    left, parts = height if rows is None else rows, []
    while left:
        n = min(left, 256)
        parts.append(packer.compress(row * n))
        left -= n
    idat = b"".join(parts) + packer.flush() if idat is None else idat
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _glb(doc: dict, binary: bytes) -> bytes:
    """GLB container around a glTF JSON document and its binary chunk."""
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(binary), 0x004E4942) + binary
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def _textured_glb(png: bytes, instances: int = 1) -> bytes:
    """One textured triangle, placed `instances` times, its texture the given PNG bytes."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes()
    indices = np.array([0, 1, 2, 0], "<u2").tobytes()  # padded to 4 bytes
    uv = np.array([[0, 0], [1, 0], [0, 1]], "<f4").tobytes()
    offsets = np.cumsum([0, len(positions), len(indices), len(uv)])
    views = [(offsets[0], 36), (offsets[1], 6), (offsets[2], 24), (offsets[3], len(png))]
    doc = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": list(range(instances))}],
        "nodes": [{"mesh": 0}] * instances,
        "meshes": [
            {"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 2}, "indices": 1, "material": 0}]}
        ],
        "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0}],
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            },
            {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"},
            {"bufferView": 2, "componentType": 5126, "count": 3, "type": "VEC2"},
        ],
        "bufferViews": [{"buffer": 0, "byteOffset": int(o), "byteLength": int(n)} for o, n in views],
        "buffers": [{"byteLength": int(offsets[3]) + len(png)}],
    }
    return _glb(doc, positions + indices + uv + png)


def _textured_obj(folder: Path, map_kd: str, name: str = "m.obj", mtllib: str = "m.mtl") -> Path:
    (folder / "m.mtl").write_text(f"newmtl skin\nmap_Kd {map_kd}\n")
    obj = f"mtllib {mtllib}\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl skin\nf 1/1 2/2 3/3\n"
    (folder / name).write_text(obj)
    return folder / name


def _textured_wrl(folder: Path, url: str, name: str = "a.wrl") -> Path:
    (folder / name).write_text(
        '#VRML V2.0 utf8\nShape { appearance Appearance { texture ImageTexture { url "' + url + '" } }\n'
        "geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ]\n"
        "texCoord TextureCoordinate { point [ 0 0, 1 0, 0 1 ] } } }\n"
    )
    return folder / name


# ----------------------------------------------------------------------------- 1. any byte in text


NON_UTF8 = {
    "a.obj": b"# \xff\xfe comment\nmtllib caf\xe9.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl m\xe9\nf 1 2 3\n",
    "a.ply": b"ply\nformat ascii 1.0\ncomment \xff\xfe scanner\nelement vertex 3\n"
    + PLY_XYZ
    + b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
    "b.ply": b"ply\nformat binary_little_endian 1.0\ncomment \xff\xfe\nelement vertex 3\n"
    + PLY_XYZ
    + b"end_header\n"
    + np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes(),
    "a.off": b"OFF\n# \xff\xfe\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
    "a.stl": b"solid \xff\xfe\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
    b"endloop\nendfacet\nendsolid\n",
    "a.wrl": b'#VRML V2.0 utf8\n# \xff\xfe\nShape { appearance Appearance { texture ImageTexture { url "t\xe9.png" } }\n'
    b"geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } coordIndex [ 0 1 2 -1 ] } }\n",
    "a.xyz": b"# \xff\xfe exported\n0 0 0\n1 0 0\n0 1 0\n",
}


@pytest.mark.parametrize("name", sorted(NON_UTF8))
def test_text_with_non_utf8_bytes_loads_without_charset_normalizer(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, "charset_normalizer", None)  # as where it is not installed
    (tmp_path / name).write_bytes(NON_UTF8[name])
    scan = _load(tmp_path / name)
    np.testing.assert_allclose(scan.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert scan.num_faces == (0 if name in ("a.xyz", "b.ply") else 1)


def test_latin1_material_names_still_find_their_texture(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "charset_normalizer", None)
    Image.new("RGB", (4, 4), (200, 10, 20)).save(tmp_path / "skin.png")
    (tmp_path / "m.mtl").write_bytes(b"# \xff\nnewmtl caf\xe9\nmap_Kd skin.png\n")
    obj = b"mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl caf\xe9\nf 1/1 2/2 3/3\n"
    (tmp_path / "m.obj").write_bytes(obj)
    scan = _load(tmp_path / "m.obj")
    assert scan.texture is not None and tuple(scan.texture[0, 0]) == (200, 10, 20)


# ----------------------------------------------------------------------------- 2. relative OBJ indices


@pytest.mark.parametrize(
    ("negative", "positive"),
    [
        (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\n", TRIANGLE_OBJ),
        (  # relative to the vertices seen so far, not to the end of the file
            (
                b"v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf -3/-3 -2/-2 -1/-1\n"
                b"v 5 5 5\nv 6 5 5\nv 5 6 5\nv 7 7 7\nvt 0 0\nvt 1 0\nvt 0 1\nf -4/-3 -3/-2 -2/-1 # a comment\n"
            ),
            (
                b"v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"
                b"v 5 5 5\nv 6 5 5\nv 5 6 5\nv 7 7 7\nvt 0 0\nvt 1 0\nvt 0 1\nf 4/4 5/5 6/6\n"
            ),
        ),
        (
            b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 -3 -1\nf -4 2 -2\n",
            b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 4\nf 1 2 3\n",
        ),
    ],
    ids=["after-all-vertices", "interleaved-with-uv", "mixed-signs"],
)
def test_obj_relative_indices_equal_absolute_ones(tmp_path, negative, positive):
    (tmp_path / "neg.obj").write_bytes(negative)
    (tmp_path / "pos.obj").write_bytes(positive)
    neg, pos = _load(tmp_path / "neg.obj"), _load(tmp_path / "pos.obj")
    np.testing.assert_array_equal(neg.faces, pos.faces)
    np.testing.assert_array_equal(neg.vertices, pos.vertices)


# ----------------------------------------------------------------------------- 3. OFF preamble


@pytest.mark.parametrize(
    "preamble",
    [
        b"\n\n  \t\n",
        b"# written by a scanner\n\n# units: mm\n   ",
        b"\xef\xbb\xbf",
        b"#" + b" long comment" * 2000 + b"\n",
    ],
    ids=["blank-lines", "comments", "bom", "long-comment"],
)
def test_off_with_whitespace_and_comments_before_the_keyword(tmp_path, preamble):
    (tmp_path / "a.off").write_bytes(preamble + b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    scan = _load(tmp_path / "a.off")
    assert scan.num_vertices == 3 and scan.faces.tolist() == [[0, 1, 2]]


# ----------------------------------------------------------------------------- 4. foreign exceptions


@pytest.mark.parametrize(
    ("exc", "match"),
    [
        (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
        (zipfile.BadZipFile("File is not a zip file"), "corrupt compressed data"),
        (
            zlib.error("Error -3 while decompressing data: invalid stored block lengths"),
            "corrupt compressed data",
        ),
        (RuntimeError("reader gave up"), "RuntimeError: reader gave up"),
        (NotImplementedError("no such layout"), "NotImplementedError"),
        (json.JSONDecodeError("Expecting value", "[", 1), "corrupt JSON"),
        (struct.error("unpack requires a buffer of 4 bytes"), "truncated binary data"),
        (KeyError("accessors"), "KeyError"),
        (IndexError("index 9 is out of bounds"), "IndexError"),
        (TypeError("unsupported operand"), "TypeError"),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "unknown encoding"),
        (MemoryError(), "more memory"),
        (OSError("[Errno 2] No such file or directory: '{folder}/textures/skin.png'"), "skin.png"),
    ],
    ids=lambda value: (
        f"{type(value).__module__}.{type(value).__name__}" if isinstance(value, BaseException) else ""
    ),
)
def test_any_exception_of_a_reader_becomes_a_scan_error(tmp_path, monkeypatch, exc, match):
    import affectvlm.scan.io as scan_io

    if isinstance(exc, OSError):
        exc = OSError(exc.args[0].format(folder=tmp_path))

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(scan_io, "_load_points_text", broken)
    (tmp_path / "a.xyz").write_bytes(b"0 0 0\n")
    with pytest.raises(ScanError, match=match) as info:
        _load(tmp_path / "a.xyz")
    assert "cannot read XYZ file" in str(info.value) and "/textures/" not in str(info.value)


def _deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


_DEEP = _deep_json(100_000)
HOSTILE = {
    "deep.glb": b"glTF" + struct.pack("<III", 2, 20 + len(_DEEP), len(_DEEP)) + b"JSON" + _DEEP,
    "deep.gltf": _DEEP,
    "corrupt.gltf": b'{"asset": {"version": "2.0"}, "meshes": [',
    "list.gltf": b"[1, 2, 3]",
    "range.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n",
    "range.off": b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
    "junk.ply": b"ply\nformat binary_little_endian 1.0\nelement junk 1000000000000\nend_header\n",
    "lists.ply": b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
    + PLY_XYZ
    + b"element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    + bytes(36)
    + b"\xff"
    + bytes(12),
    "number.ply": b"ply\nformat ascii 1.0\nelement vertex 3\n"
    + PLY_XYZ
    + b"end_header\n0 0 0\n1 x 0\n0 1 0\n",
    "utf16.ply": b"ply\nformat ascii 1.0\nelement vertex 1\n"
    + PLY_XYZ
    + b"end_header\n\xff\xfe0\x000\x00 0\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_malformed_files_fail_with_a_scan_error(tmp_path, name):
    (tmp_path / name).write_bytes(HOSTILE[name])
    start = time.perf_counter()
    with pytest.raises(ScanError):
        _load(tmp_path / name)
    assert time.perf_counter() - start < 5.0


def test_glb_accessor_without_its_buffer_view(tmp_path):
    glb = _textured_glb(_png(2, 2))
    js_len = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20 : 20 + js_len])
    doc["accessors"][0]["bufferView"] = 99
    (tmp_path / "a.glb").write_bytes(_glb(doc, glb[20 + js_len + 8 :]))
    with pytest.raises(ScanError, match="GLB"):
        _load(tmp_path / "a.glb")


def test_deeply_nested_vrml_is_read_fast(tmp_path):
    payload = (
        b"#VRML V2.0 utf8\n"
        + b"Transform { children [ " * 200_000
        + b"Shape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] }"
        + b" coordIndex [ 0 1 2 -1 ] } }"
        + b" ] }" * 200_000
    )
    (tmp_path / "a.wrl").write_bytes(payload)
    start = time.perf_counter()
    scan = _load(tmp_path / "a.wrl")
    assert scan.num_faces == 1 and time.perf_counter() - start < 5.0


def test_corrupt_texture_data_is_a_scan_error(tmp_path):
    (tmp_path / "skin.png").write_bytes(_png(64, 64, idat=b"\x78\x9c not deflate data at all"))
    _textured_obj(tmp_path, "skin.png")
    with pytest.raises(ScanError, match="texture"):
        _load(tmp_path / "m.obj")


# ----------------------------------------------------------------------------- 5. texture bombs

_MEASURE = """
import json, resource, sys, time
import PIL.ImageFile
decoded = []
_load = PIL.ImageFile.ImageFile.load
def load(self):
    decoded.append(self.size[0] * self.size[1])
    return _load(self)
PIL.ImageFile.ImageFile.load = load
from affectvlm.scan import load_scan
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    scan = load_scan(path)
    out[path] = {"seconds": time.perf_counter() - start, "texture": scan.texture is not None}
print(json.dumps({"files": out, "largest_decoded": max(decoded, default=0),
                  "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Scans whose texture declares far more pixels than the cap, loaded in a fresh interpreter."""
    folder = tmp_path_factory.mktemp("bombs")
    files = {
        "30000.glb": _textured_glb(_png(30000, 30000, rows=4)),  # PIL's own check refuses it
        "9000.glb": _textured_glb(_png(9000, 9000)),  # all its 243 MB of pixels really there
        "5000.glb": _textured_glb(_png(5000, 5000)),  # between the cap and PIL's refusal
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "big.png").write_bytes(_png(5000, 5000))
    paths = [folder / name for name in files]
    paths += [_textured_obj(folder, "big.png"), _textured_wrl(folder, "big.png")]
    # three instances of a mesh whose texture is within the cap, together over it
    (folder / "three.glb").write_bytes(_textured_glb(_png(4096, 2048), instances=3))
    paths.append(folder / "three.glb")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_texture_bombs_are_not_decoded(bombs):
    assert bombs["largest_decoded"] <= MAX_TEXTURE_PIXELS
    assert bombs["rss_growth_mb"] < 300, bombs


def test_texture_bombs_load_fast_without_their_texture(bombs):
    for path, result in bombs["files"].items():
        assert not result["texture"], path
        assert result["seconds"] < 10.0, path


def test_textures_within_the_cap_still_load(tmp_path):
    (tmp_path / "a.glb").write_bytes(_textured_glb(_png(16, 8, color=(9, 8, 7))))
    scan = _load(tmp_path / "a.glb")
    assert scan.texture.shape == (8, 16, 3) and tuple(scan.texture[0, 0]) == (9, 8, 7)
    assert scan.uv.shape == (3, 2)


def test_pil_refuses_images_beyond_twice_the_cap():
    from PIL import Image

    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= MAX_TEXTURE_PIXELS


# ----------------------------------------------------------------------------- 6. texture confinement


@pytest.fixture
def outside(tmp_path):
    """A scans folder, and a real image (and MTL) outside it that no scan may read."""
    from PIL import Image

    scans = tmp_path / "scans"
    scans.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "secret.png")
    (tmp_path / "secret.mtl").write_text(f"newmtl skin\nmap_Kd {tmp_path / 'secret.png'}\n")
    (scans / "link.png").symlink_to(tmp_path / "secret.png")
    return scans


def _urls(scans: Path) -> list:
    secret = scans.parent / "secret.png"
    return [
        "../secret.png",
        "..\\secret.png",
        "sub/../../secret.png",
        str(secret),
        "file://" + str(secret),
        "http://127.0.0.1:9/secret.png",
        "C:\\secret.png",
        "link.png",
    ]


@pytest.mark.parametrize("index", range(8))
def test_wrl_texture_urls_stay_in_the_scan_folder(outside, monkeypatch, index):
    from PIL import Image

    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    scan = _load(_textured_wrl(outside, _urls(outside)[index]))
    assert scan.texture is None and scan.num_faces == 1
    assert not any("secret" in p for p in opened)


@pytest.mark.parametrize("index", range(8))
def test_obj_textures_stay_in_the_scan_folder(outside, index):
    scan = _load(_textured_obj(outside, _urls(outside)[index]))
    assert scan.texture is None and scan.num_faces == 1


def test_obj_mtllib_outside_the_folder_is_not_read(outside):
    scan = _load(_textured_obj(outside, "skin.png", mtllib=str(outside.parent / "secret.mtl")))
    # without its MTL the OBJ keeps trimesh's placeholder texture, never the secret red
    assert scan.texture is None or not (scan.texture == (255, 0, 0)).all(axis=-1).any()


def test_textures_in_the_folder_are_found(outside):
    from PIL import Image

    (outside / "tex").mkdir()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(outside / "tex" / "Skin.png")
    for scan in (
        _load(_textured_wrl(outside, "./tex/skin.PNG")),
        _load(_textured_obj(outside, "tex/Skin.png")),
    ):
        assert tuple(scan.texture[0, 0]) == (0, 0, 255)


# ----------------------------------------------------------------------------- 7. geometry hygiene


def test_coordinates_beyond_float32_are_dropped(tmp_path):
    (tmp_path / "a.obj").write_bytes(
        b"v 1e39 0 0\nv nan 0 0\n" + b"v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 3 4 5\nf 1 2 3\n"
    )
    scan = _load(tmp_path / "a.obj")
    assert scan.num_vertices == 4 and scan.faces.tolist() == [[0, 1, 2]]
    assert np.isfinite(scan.vertices).all()


def test_mostly_overflowing_coordinates_are_refused(tmp_path):
    (tmp_path / "a.xyz").write_bytes(b"1e39 0 0\n0 -1e300 0\n0 0 0\n")
    with pytest.raises(ScanError, match="NaN or Inf"):
        _load(tmp_path / "a.xyz")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("same.obj", b"v 1 2 3\nv 1 2 3\nv 1 2 3\nf 1 2 3\n"),
        ("two.obj", b"v 0 0 0\nv 1 0 0\nv 1 0 0\nf 1 2 3\nf 2 3 1\n"),
        ("faces.obj", b"f 1 2 3\n"),
        ("empty.ply", b"ply\nformat ascii 1.0\nelement vertex 0\n" + PLY_XYZ + b"end_header\n"),
        (
            "nan.wrl",
            b"#VRML V2.0 utf8\ncoord Coordinate { point [ nan 0 0, 0 nan 0, 0 0 nan ] } coordIndex [ 0 1 2 ]",
        ),
        ("comments.xyz", b"# nothing\n// here\n"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_no_usable_vertices(tmp_path, name, payload):
    (tmp_path / name).write_bytes(payload)
    with pytest.raises(ScanError, match="no usable vertices|no vertices|NaN"):
        _load(tmp_path / name)


def test_degenerate_but_readable_geometry_is_left_to_later_checks(tmp_path):
    (tmp_path / "dot.xyz").write_bytes(b"1 2 3\n")
    (tmp_path / "tri.obj").write_bytes(TRIANGLE_OBJ)
    assert _load(tmp_path / "dot.xyz").num_vertices == 1
    assert _load(tmp_path / "tri.obj").num_faces == 1


def test_nan_uv_is_made_finite():
    scan = Scan(vertices=np.zeros((2, 3)), uv=np.array([[np.nan, 0.5], [np.inf, -np.inf]]))
    assert np.isfinite(scan.uv).all()


# ----------------------------------------------------------------------------- 8. sizes fail fast


@pytest.mark.parametrize(
    ("name", "payload", "caps", "match"),
    [
        (
            "a.ply",
            b"ply\nformat ascii 1.0\nelement vertex 999999999\n" + PLY_XYZ + b"end_header\n0 0 0\n",
            {},
            "cap",
        ),
        (
            "b.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n"
            + PLY_XYZ
            + b"element face 999999999\nproperty list uchar int vertex_indices\nend_header\n",
            {},
            "cap",
        ),
        (
            "c.ply",
            b"ply\nformat ascii 1.0\nelement vertex 1\n" + PLY_XYZ + b"end_header\n0 0 0\n" + b"1\n" * 5000,
            {},
            "lines",
        ),
        ("a.off", b"OFF\n999999999 999999999 0\n0 0 0\n", {}, "caps"),
        ("b.off", b"OFF 3 -1 0\n0 0 0\n1 0 0\n0 1 0\n", {}, "negative"),
        ("c.off", b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n" + b"\n" * 5000, {}, "lines"),
        (
            "a.obj",
            b"v 0 0 0\n" + b"vt 0 0\n" * 100,
            {"max_vertices": 10, "max_faces": 10},
            "texture coordinate",
        ),
        ("a.glb", _textured_glb(_png(2, 2), instances=5000), {}, "cap of"),
        ("b.glb", _textured_glb(_png(2, 2), instances=30), {"max_vertices": 60}, "caps"),
        ("a.xyz", b"1 2 3 " * 2000 + b"\n", {}, "longer than"),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else "",
)
def test_declared_sizes_beyond_the_caps_fail_fast(tmp_path, name, payload, caps, match):
    (tmp_path / name).write_bytes(payload)
    start = time.perf_counter()
    with pytest.raises(ScanError, match=match):
        _load(tmp_path / name, **caps)
    assert time.perf_counter() - start < 2.0


def test_gltf_accessor_counts_are_checked(tmp_path):
    doc = {
        "asset": {"version": "2.0"},
        "accessors": [{"count": 10**12, "componentType": 5126, "type": "VEC3"}],
    }
    (tmp_path / "a.gltf").write_text(json.dumps(doc))
    with pytest.raises(ScanError, match="accessor"):
        _load(tmp_path / "a.gltf")


# ----------------------------------------------------------------------------- messages


def test_messages_name_the_file_never_its_folder(tmp_path):
    folder = tmp_path / "srv-private" / "uploads"
    folder.mkdir(parents=True)
    payloads = {
        "a.obj": b"f 1 2 3\n",
        "a.wrl": b"#VRML V1.0\n",
        "a.bnt": b"\1\0",
        "a.off": b"nope",
        "a.npy": b"x",
    }
    for name, payload in payloads.items():
        (folder / name).write_bytes(payload)
        with pytest.raises(ScanError) as info:
            load_scan(folder / name)
        assert name in str(info.value) and "srv-private" not in str(info.value)
    with pytest.raises(ScanError) as info:
        Scan(vertices=np.zeros((3, 2)), path=str(folder / "b.obj"))
    assert "(b.obj)" in str(info.value) and "srv-private" not in str(info.value)


def test_off_with_its_first_count_glued_to_the_keyword(tmp_path):
    """`OFF8 6 12` (trimesh's models/whitespace.off does this, after a run of blank space): read as trimesh does."""
    text = "\t   \n OFF4 1 0 # counts glued on\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n"
    (tmp_path / "glued.off").write_text(text)
    scan = load_scan(tmp_path / "glued.off")
    assert scan.num_vertices == 4 and scan.num_faces == 1
