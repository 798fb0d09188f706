"""PCL `.pcd` point clouds: the three DATA kinds, LZF, organized clouds from a depth camera, and hostile files."""

import struct

import numpy as np
import pytest

from affectvlm.scan import Scan, ScanError, load_scan, write_pcd
from affectvlm.scan.pcd import lzf_compress, lzf_decompress
from affectvlm.testing import depth_camera_cloud, face_mesh

KINDS = ["ascii", "binary", "binary_compressed"]


def _cloud(n=50, colors=True, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 3)).astype(np.float32)
    c = rng.integers(0, 256, (n, 3), dtype=np.uint8) if colors else None
    return Scan(vertices=v, colors=c)


def _pcd(tmp_path, header: str, body: bytes = b"", name="cloud.pcd"):
    path = tmp_path / name
    path.write_bytes(header.strip().encode() + b"\n" + body)
    return path


def _header(fields="x y z", size="4 4 4", types="F F F", width=2, height=1, points=None, data="binary"):
    points = width * height if points is None else points
    return (
        f"VERSION 0.7\nFIELDS {fields}\nSIZE {size}\nTYPE {types}\nCOUNT {' '.join('1' for _ in fields.split())}\n"
        f"WIDTH {width}\nHEIGHT {height}\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {points}\nDATA {data}"
    )


@pytest.mark.parametrize("data", KINDS)
@pytest.mark.parametrize("colors", [True, False])
def test_pcd_round_trip(tmp_path, data, colors):
    cloud = _cloud(colors=colors)
    write_pcd(tmp_path / "c.pcd", cloud, data=data)
    back = load_scan(tmp_path / "c.pcd")
    assert back.is_point_cloud and back.num_vertices == cloud.num_vertices
    np.testing.assert_array_equal(back.vertices, cloud.vertices)
    if colors:
        np.testing.assert_array_equal(back.colors, cloud.colors)
    else:
        assert back.colors is None


def test_lzf_reads_hand_made_streams():
    # a literal run, then a back-reference 3 bytes behind, 1 + 2 long
    assert lzf_decompress(b"\x02abc\x20\x02", 6) == b"abcabc"
    # one literal byte, then a long reference (7 + 3 + 2 = 12 bytes) 1 byte behind: it overlaps what it writes
    assert lzf_decompress(b"\x00a\xe0\x03\x00", 13) == b"a" * 13


@pytest.mark.parametrize("seed", [0, 1])
def test_lzf_round_trip(seed):
    rng = np.random.default_rng(seed)
    data = b"".join(
        [
            rng.bytes(40),
            b"ab" * 300,
            rng.bytes(9000),
            bytes(700),
            rng.integers(0, 4, 5000, dtype=np.uint8).tobytes(),
        ]
    )
    packed = lzf_compress(data)
    assert len(packed) < len(data) and lzf_decompress(packed, len(data)) == data


@pytest.mark.parametrize(
    "stream, size, problem",
    [
        (b"\x05ab", 6, "literal runs past the end"),
        (b"\x00a\x20\x05", 3, "outside the data"),  # 6 bytes behind the first
        (b"\x00a\xe0", 13, "cut off"),
        (b"\x00a\xe0\xff\x00", 20, "outside the data"),  # longer than the size it may expand to
        (b"\x00a", 5, "expands to 1 bytes, not 5"),
    ],
)
def test_lzf_refuses_corrupt_streams(stream, size, problem):
    with pytest.raises(ScanError, match=problem):
        lzf_decompress(stream, size)


def test_an_organized_cloud_becomes_a_mesh_with_its_depth_edges_open(tmp_path):
    # a 10 x 10 depth image: a plane 1 m away whose right half steps 100 mm nearer, two pixels unmeasured
    x, y = np.meshgrid(np.arange(10) * 0.002, np.arange(10) * 0.002)
    z = np.where(x > 0.009, 0.9, 1.0)
    v = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    v[[11, 57]] = np.nan
    write_pcd(tmp_path / "grid.pcd", Scan(vertices=v), grid=(10, 10))
    mesh = load_scan(tmp_path / "grid.pcd")
    assert mesh.num_vertices == 98 and not mesh.is_point_cloud
    # the camera's optical frame (y down, z along the line of sight) turned to +y up, +z towards the camera
    keep = np.isfinite(v[:, 0])
    np.testing.assert_array_equal(mesh.vertices, v[keep] * np.array([1, -1, -1], np.float32))
    corners = mesh.vertices[mesh.faces]
    assert np.ptp(corners[..., 2], axis=1).max() < 1e-6  # no triangle across the step
    # 81 cells, less the 9 across the step and the 8 that touch an unmeasured pixel, two triangles each
    assert mesh.num_faces == 2 * (81 - 9 - 8)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert (normal[:, 2] > 0).all()  # every triangle faces the camera


def test_an_organized_cloud_is_placed_by_its_viewpoint(tmp_path):
    # a cloud kept in a frame where the camera looks along -z with +y up: VIEWPOINT turns the optical frame half a
    # turn about x (quaternion 0 1 0 0) to it, and 0.5 m along +x; the points come back as they were, less the shift
    x, y = np.meshgrid(np.arange(4) * 0.01, -np.arange(4) * 0.01)
    v = np.stack([x + 0.5, y, np.full_like(x, -1.0)], -1).reshape(-1, 3).astype(np.float32)
    write_pcd(tmp_path / "world.pcd", Scan(vertices=v), grid=(4, 4))
    path = tmp_path / "world.pcd"
    path.write_bytes(path.read_bytes().replace(b"VIEWPOINT 0 0 0 1 0 0 0", b"VIEWPOINT 0.5 0 0 0 1 0 0"))
    np.testing.assert_allclose(load_scan(path).vertices, v - np.array([0.5, 0, 0], np.float32), atol=1e-6)


def test_a_depth_camera_cloud_reads_back_as_the_face(tmp_path):
    face = face_mesh("happiness")
    cloud, grid = depth_camera_cloud(face, pixels=64)
    write_pcd(tmp_path / "cam.pcd", cloud, data="binary_compressed", grid=grid)
    mesh = load_scan(tmp_path / "cam.pcd")
    assert not mesh.is_point_cloud and mesh.num_vertices == int(np.isfinite(cloud.vertices[:, 0]).sum())
    # metres, +y up and +z towards the camera: the face 0.6 m in front of it, its top at the top
    assert -0.7 < np.median(mesh.vertices[:, 2]) < -0.59
    low, high = face.vertices[:, 1].min(), face.vertices[:, 1].max()
    half = (high - low) / 2000.0
    np.testing.assert_allclose(
        [mesh.vertices[:, 1].min(), mesh.vertices[:, 1].max()], [-half, half], rtol=0.1
    )


def test_unmeasured_pixels_at_the_origin_read_as_nan_ones(tmp_path):
    """Many depth cameras' tools write an unmeasured pixel as (0, 0, 0), not NaN: the same mesh either way (the
    zeros were once meshed among themselves and the face's own cells dropped as steps across a depth edge)."""
    cloud, grid = depth_camera_cloud(face_mesh("happiness"), pixels=64)
    write_pcd(tmp_path / "nan.pcd", cloud, grid=grid)
    write_pcd(tmp_path / "zero.pcd", cloud.replace(vertices=np.nan_to_num(cloud.vertices, nan=0.0)), grid=grid)
    nan, zero = load_scan(tmp_path / "nan.pcd"), load_scan(tmp_path / "zero.pcd")
    np.testing.assert_array_equal(zero.vertices, nan.vertices)
    np.testing.assert_array_equal(zero.faces, nan.faces)


def test_colours_from_a_packed_float_rgb_and_from_r_g_b_fields(tmp_path):
    packed = struct.pack("<I", (200 << 16) | (100 << 8) | 50)
    body = struct.pack("<fff", 1, 2, 3) + packed + struct.pack("<fff", 4, 5, 6) + packed
    scan = load_scan(_pcd(tmp_path, _header("x y z rgb", "4 4 4 4", "F F F F"), body))
    assert scan.colors.tolist() == [[200, 100, 50]] * 2
    text = "1 2 3 0.5 1 0\n4 5 6 0 0 1\n"
    scan = load_scan(
        _pcd(tmp_path, _header("x y z r g b", "4 4 4 4 4 4", "F F F F F F", data="ascii"), text.encode())
    )
    assert scan.colors.tolist() == [[128, 255, 0], [0, 0, 255]]


def test_unmeasured_points_are_dropped_and_an_empty_cloud_refused(tmp_path):
    body = struct.pack("<6f", 1, 2, 3, np.nan, np.nan, np.nan)
    assert load_scan(_pcd(tmp_path, _header(), body)).num_vertices == 1
    with pytest.raises(ScanError, match="no measured points") as err:
        load_scan(_pcd(tmp_path, _header(), struct.pack("<6f", *[np.nan] * 6), name="blank.pcd"))
    assert "blank.pcd" in str(err.value) and str(tmp_path) not in str(err.value)


@pytest.mark.parametrize(
    "header, body, problem",
    [
        (_header(), b"\0" * 20, "truncated .pcd data"),
        (_header(points=3), b"\0" * 36, "POINTS 3 is not WIDTH x HEIGHT"),
        (_header(width=3_000_000), b"", "more than the cap"),
        (_header(fields="a b c"), b"\0" * 24, "no x, y, z"),
        (_header(types="F F Q"), b"\0" * 24, "unknown type"),
        (_header(size="4 4 3"), b"\0" * 24, "unknown type"),
        (_header(data="lzma"), b"", "unknown .pcd DATA kind"),
        (_header().replace("COUNT 1 1 1", "COUNT 2 1 1"), b"\0" * 32, "COUNT 1"),
        (_header(width="-2", points="-2"), b"", "whole number"),
        (
            _header("x y z big", "4 4 4 4", "F F F F", width=1000).replace(
                "COUNT 1 1 1 1", "COUNT 1 1 1 99999"
            ),
            b"",
            "cap of",
        ),
        (_header(data="ascii"), b"1 2 3\n4 5 x\n", "corrupt number"),
        (_header(data="ascii"), b"1 2 3\n", "needs 2 lines of 3 numbers, it has 3"),
        ("VERSION 0.7\nFIELDS x y z", b"", "no DATA line"),
        (
            _header(data="binary_compressed"),
            struct.pack("<II", 4, 24) + b"\x00a",
            "4 compressed bytes claimed",
        ),
        (
            _header(data="binary_compressed"),
            struct.pack("<II", 2, 1 << 30) + b"\x00a",
            "the header's points need 24",
        ),
        (_header(data="binary_compressed"), struct.pack("<II", 4, 24) + b"\x00a\x3f\x00", "outside the data"),
    ],
)
def test_hostile_pcd_files_are_refused_by_name(tmp_path, header, body, problem):
    with pytest.raises(ScanError, match=problem) as err:
        load_scan(_pcd(tmp_path, header, body, name="bad.pcd"))
    assert "bad.pcd" in str(err.value) and str(tmp_path) not in str(err.value)
