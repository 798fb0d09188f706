"""Renderer: analytic depth, mirror symmetry, no pinholes, point clouds, modes, batching."""

import numpy as np
import pytest
import torch

from affectvlm.scan import (
    DEFAULT_VIEWS,
    NORMAL_CHANNELS,
    Scan,
    ScanError,
    normalize_scan,
    pixel_centers,
    rasterize,
    render_depth,
    render_views,
)
from affectvlm.testing import face_mesh


@pytest.fixture(scope="module")
def face():
    return normalize_scan(face_mesh().replace(uv=None))


def _grid_plane(n, lo=-0.9, hi=0.9, slope=(0.3, -0.2), offset=0.1, jitter=0.0, seed=0):
    """A plane z = sx x + sy y + offset tessellated as an n x n vertex grid."""
    t = np.linspace(lo, hi, n)
    x, y = np.meshgrid(t, t)
    if jitter:
        rng = np.random.default_rng(seed)
        x = x + rng.uniform(-jitter, jitter, x.shape) * (x > lo) * (x < hi)
        y = y + rng.uniform(-jitter, jitter, y.shape) * (y > lo) * (y < hi)
    z = slope[0] * x + slope[1] * y + offset
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return Scan(vertices=np.stack([x, y, z], -1).reshape(-1, 3), faces=faces)


@pytest.mark.parametrize("n", [2, 9, 60, 200])  # from two large triangles (exact path) to sub-pixel ones
def test_tilted_plane_depth_is_exact(n):
    size, extent = 64, 1.0
    plane = _grid_plane(n, jitter=0.3 / n if n > 2 else 0.0)
    depth, mask = render_depth(plane, views=[(0, 0)], size=size, extent=extent, pivot=(0, 0, 0))
    xs, ys = pixel_centers(size, extent)
    x, y = np.meshgrid(xs, ys)
    expected = 0.3 * x - 0.2 * y + 0.1
    inner = (np.abs(x) < 0.88) & (np.abs(y) < 0.88)
    assert mask[0, 0][inner].all()
    np.testing.assert_allclose(depth[0, 0][inner], expected[inner], atol=2e-5)
    assert not mask[0, 0][(np.abs(x) > 0.92) | (np.abs(y) > 0.92)].any()


def test_sphere_depth_and_silhouette():
    trimesh = pytest.importorskip("trimesh")
    r = 0.8
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=r)
    scan = Scan(vertices=sphere.vertices, faces=sphere.faces)
    size, extent = 96, 1.0
    frags = rasterize(scan, views=[(0, 0), (37, -21)], size=size, extent=extent, pivot=(0, 0, 0))
    xs, ys = pixel_centers(size, extent)
    x, y = np.meshgrid(xs, ys)
    rho2 = x**2 + y**2
    for v in range(2):  # a sphere looks the same from every view
        mask = frags.mask[0, v].numpy()
        assert mask[rho2 < (r - 0.02) ** 2].all() and not mask[rho2 > (r + 0.01) ** 2].any()
        inner = rho2 < (0.9 * r) ** 2
        err = np.abs(frags.depth[0, v].numpy()[inner] - np.sqrt(r * r - rho2[inner]))
        assert err.max() < 2e-3  # the icosphere's chord error
        assert (frags.face[0, v].numpy()[mask] >= 0).all()


def test_no_pinholes_on_pixel_aligned_edges():
    # grid vertices on pixel centres and edges through pixel centres: the worst case for pinholes
    size, extent = 64, 1.0
    step = 2 * extent / size
    n = 41
    t = (np.arange(n) - n // 2) * step * 1.5 + step / 2
    plane = _grid_plane(2)  # replaced below
    x, y = np.meshgrid(t, t)
    verts = np.stack([x, y, 0.05 * np.sin(5 * x)], -1).reshape(-1, 3)
    plane = plane.replace(vertices=verts, faces=_grid_plane(n).faces)
    for view in [(0, 0), (10, 5)]:
        frags = rasterize(plane, views=[view], size=size, extent=extent, pivot=(0, 0, 0))
        mask = frags.mask[0, 0].numpy()
        rows, cols = np.nonzero(mask)
        inner = mask[rows.min() + 1 : rows.max(), cols.min() + 1 : cols.max()]
        assert inner.all(), f"{(~inner).sum()} pinholes in view {view}"


def test_mirror_symmetry(face):
    mirrored = Scan(vertices=face.vertices * np.array([-1, 1, 1], np.float32), faces=face.faces[:, ::-1])
    views = [(0.0, 0.0), (25.0, 10.0), (-25.0, 10.0)]
    for mode in ("normal", "depth"):
        a = render_views(face, views=views, size=96, mode=mode)[0].astype(int)
        b = render_views(mirrored, views=views, size=96, mode=mode)[0].astype(int)
        for va, vb in [(0, 0), (1, 2), (2, 1)]:  # left view of the mirror == mirrored right view
            diff = np.abs(b[va] - a[vb][:, ::-1])
            assert (diff > 2).mean() < 0.002, mode
            assert diff.mean() < 0.2, mode


def test_default_views_and_output(face):
    assert len(DEFAULT_VIEWS) == 3 and DEFAULT_VIEWS[0] == (0.0, 0.0)
    img = render_views(face)
    assert img.shape == (1, 3, 224, 224, 3) and img.dtype == np.uint8
    assert img[0, 0, 0, 0].tolist() == [0, 0, 0]  # black background
    cover = (img[0, :, :, :, 0] > 0).mean(axis=(1, 2))
    assert (cover > 0.3).all()  # the face fills the frame
    # left view (camera towards +x, the subject's left): the nose tip, the nearest point, moves to
    # the image's left; right view: to the right
    depth, _ = render_depth(face, size=224)
    cols = [np.unravel_index(np.argmax(depth[0, v]), depth[0, v].shape)[1] for v in range(3)]
    assert abs(cols[0] - 111.5) < 3 and cols[1] < 100 and cols[2] > 123
    again = render_views(face)
    np.testing.assert_array_equal(img, again)  # deterministic


@pytest.mark.parametrize("mode", ["depth", "normal", "normal_map", "shade_normal"])
def test_batch_equals_single(face, mode):
    other = normalize_scan(face.replace(vertices=face.vertices * np.array([1.1, 0.9, 1.0], np.float32)))
    both = render_views([face, other], size=64, mode=mode)
    np.testing.assert_array_equal(both[0], render_views(face, size=64, mode=mode)[0])
    np.testing.assert_array_equal(both[1], render_views(other, size=64, mode=mode)[0])


@pytest.mark.parametrize("mode", ["normal", "normal_map"])
def test_an_unwelded_mesh_is_shaded_as_the_surface_it_samples(face, mode):
    """Every triangle its own three vertices (an STL, a triangle soup, uv seams split per corner) draws the same
    smooth face as the welded mesh: the normals of vertices at one place are shared (they were each triangle's
    own, and a tenth of the face's pixels came out faceted)."""
    soup = face.replace(vertices=face.vertices[face.faces.reshape(-1)], faces=np.arange(3 * face.num_faces).reshape(-1, 3))
    welded, unwelded = (render_views(s, size=96, mode=mode)[0].astype(int) for s in (face, soup))
    assert (np.abs(welded - unwelded) > 10).mean() < 0.002


def test_modes_look_right(face):
    depth = render_views(face, views=[(0, 0)], size=128, mode="depth")[0, 0, :, :, 0].astype(int)
    assert depth[64, 64] > 240  # the nose tip is the nearest point: brightest
    nmap = render_views(face, views=[(0, 0)], size=128, mode="normal_map")[0, 0].astype(int)
    covered = nmap.sum(-1) > 0
    assert (nmap[covered][:, 2] >= 127).all()  # normals face the camera
    # the left half of the face leans left: negative x normals (red below 128) dominate there
    assert nmap[32:96, 20:50, 0][covered[32:96, 20:50]].mean() < 110
    with pytest.raises(ValueError, match="mode"):
        render_views(face, mode="wireframe")
    with pytest.raises(ScanError, match="texture"):
        render_views(face, mode="texture")


@pytest.mark.parametrize("cloud", [False, True])
def test_shade_normal_is_the_shade_and_the_normal(face, cloud):
    """shade_normal: red is exactly the "normal" mode's grey shade, green and blue exactly normal_map's x and y
    (meshes and surfel clouds alike); NORMAL_CHANNELS says where each mode keeps the normal's x and y."""
    scan = Scan(face.vertices) if cloud else face
    modes = ("normal", "normal_map", "shade_normal")
    grey, nmap, both = (render_views(scan, size=64, mode=m).astype(int) for m in modes)
    np.testing.assert_array_equal(both[..., 0], grey[..., 0])
    np.testing.assert_array_equal(both[..., 1:], nmap[..., :2])
    assert NORMAL_CHANNELS == {"normal_map": (0, 1), "shade_normal": (1, 2)}
    assert (both[..., 1] != both[..., 0]).mean() > 0.1  # the channels differ: not a grey image


def test_texture_and_vertex_colours():
    plane = _grid_plane(8, slope=(0, 0), offset=0)
    uv = (plane.vertices[:, :2] - plane.vertices[:, :2].min(0)) / np.ptp(plane.vertices[:, :2], 0)
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4, :, 0] = 200  # top half red (v near 1 is the top row of the image)
    tex[4:, :, 2] = 200  # bottom half blue
    img = render_views(
        plane.replace(uv=uv, texture=tex),
        views=[(0, 0)],
        size=32,
        mode="texture",
        extent=1.0,
        pivot=(0, 0, 0),
    )
    assert img[0, 0, 6, 16, 0] == 200 and img[0, 0, 6, 16, 2] == 0
    assert img[0, 0, 26, 16, 2] == 200 and img[0, 0, 26, 16, 0] == 0
    colours = np.zeros((plane.num_vertices, 3), np.uint8)
    colours[:, 1] = 123
    img = render_views(plane.replace(colors=colours), views=[(0, 0)], size=32, mode="texture", extent=1.0)
    assert img[0, 0, 16, 16].tolist() == [0, 123, 0]


def test_point_cloud_splatting_fills_holes():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.8, 0.8, size=(6000, 2))
    cloud = Scan(vertices=np.concatenate([pts, 0.2 * pts[:, :1]], 1))
    depth, mask = render_depth(cloud, views=[(0, 0)], size=96, extent=1.0, pivot=(0, 0, 0))
    xs, ys = pixel_centers(96, 1.0)
    x, y = np.meshgrid(xs, ys)
    inner = (np.abs(x) < 0.75) & (np.abs(y) < 0.75)
    assert mask[0, 0][inner].all()
    assert not mask[0, 0][(np.abs(x) > 0.9) | (np.abs(y) > 0.9)].any()
    assert np.abs(depth[0, 0][inner] - 0.2 * x[inner]).max() < 0.05
    img = render_views(cloud, size=96, extent=1.0)
    assert (img[0, 0, 20:76, 20:76, 0] > 0).all()


def test_mixed_batch_mesh_and_point_cloud(face):
    cloud = face.replace(faces=None)
    imgs = render_views([face, cloud], size=64)
    np.testing.assert_array_equal(imgs[0], render_views(face, size=64)[0])
    np.testing.assert_array_equal(imgs[1], render_views(cloud, size=64)[0])


def test_fragments_face_index_points_into_its_scan(face):
    frags = rasterize([face, face], views=[(0, 0)], size=48)
    f = frags.face[1, 0][frags.mask[1, 0]]
    assert f.min() >= 0 and f.max() < face.num_faces
    np.testing.assert_array_equal(frags.face[0].numpy(), frags.face[1].numpy())
    np.testing.assert_allclose(frags.bary.sum(-1)[frags.mask].numpy(), 1.0, atol=1e-5)


def test_tensor_output_and_device(face):
    out = render_views(face, size=32, as_tensor=True, device="cpu")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == (1, 3, 32, 32, 3)
    np.testing.assert_array_equal(out.numpy(), render_views(face, size=32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu(face):
    cpu = render_views([face] * 4, size=64).astype(int)
    gpu = render_views([face] * 4, size=64, device="cuda").astype(int)
    assert (np.abs(cpu - gpu) > 2).mean() < 0.001


def test_unrenderable_scans_raise(face):
    v = face.vertices.copy()
    v[0] = np.nan
    with pytest.raises(ScanError, match="NaN"):
        render_views(face.replace(vertices=v), size=16)
    with pytest.raises(TypeError):
        render_views([], size=16)
    with pytest.raises(ValueError, match="size"):
        render_views(face, size=1)
