"""`affectvlm.scan.denoise`: noise is measured, a scan as quiet as the training scans is left as it is, a noisier
one is smoothed towards its surface; and a noisy face is read as its expression (in tests/test_answers.py)."""

from pathlib import Path

import numpy as np
import pytest
import trimesh

from affectvlm.scan import Scan, load_scan, normalize_scan
from affectvlm.scan.denoise import QUIET_MM, denoise, seen_vertices, surface_noise
from affectvlm.testing import surface_sample, with_inside

EXAMPLE_SCANS = sorted((Path(__file__).resolve().parents[1] / "examples").glob("scan_*.ply"))


def bowl(n: int = 8000, seed: int = 0) -> np.ndarray:
    """(n, 3) points (mm) of a bowl curved about as a cheek is (radius of curvature 125 mm), 120 mm across."""
    xy = np.random.default_rng(seed).uniform(-60.0, 60.0, (n, 2))
    return np.c_[xy, 0.004 * (xy**2).sum(1)].astype(np.float32)


def depth_error(points: np.ndarray) -> float:
    """RMS distance (mm) of `bowl` points from the bowl, along z."""
    return float(np.sqrt(np.mean((points[:, 2] - 0.004 * (points[:, :2] ** 2).sum(1)) ** 2)))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_noise_is_measured_as_added(sigma):
    noisy = bowl() + np.random.default_rng(1).normal(0.0, sigma, (8000, 3)).astype(np.float32)
    assert surface_noise(Scan(noisy)) == pytest.approx(sigma, rel=0.3)


def test_a_noiseless_surface_measures_quiet():
    assert surface_noise(Scan(bowl())) < 0.05


@pytest.mark.parametrize("path", EXAMPLE_SCANS, ids=lambda p: p.stem)
def test_a_scan_as_quiet_as_the_training_scans_is_left_as_it_is(path):
    face = normalize_scan(load_scan(path), fit=False)  # mm, cropped: what `normalize_scan` denoises
    assert surface_noise(face) < QUIET_MM
    assert denoise(face) is face


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_a_noisy_surface_is_brought_back_towards_itself(sigma):
    rng = np.random.default_rng(2)
    noisy = bowl() + rng.normal(0.0, sigma, (8000, 3)).astype(np.float32)
    smoothed = denoise(Scan(noisy)).vertices
    assert depth_error(smoothed) < 0.5 * depth_error(noisy)
    assert np.abs(smoothed - noisy).max() <= 4.0 * 1.3 * sigma + 1e-3  # no point thrown far


def test_denoise_keeps_a_meshs_topology_and_everything_but_the_vertices():
    face = normalize_scan(load_scan(EXAMPLE_SCANS[0]), fit=False)
    rng = np.random.default_rng(3)
    noisy = face.replace(
        vertices=face.vertices + rng.normal(0.0, 2.0, face.vertices.shape).astype(np.float32)
    )
    out = denoise(noisy)
    assert out is not noisy
    assert out.vertices.shape == noisy.vertices.shape and out.vertices.dtype == np.float32
    assert np.array_equal(out.faces, noisy.faces)
    assert (out.colors is None) == (noisy.colors is None)


@pytest.mark.parametrize("path", EXAMPLE_SCANS, ids=lambda p: p.stem)
def test_a_sparse_cloud_is_left_to_the_renderer(path):
    """800 points spread over a face: what the quadrics miss between them is shape as much as noise."""
    cloud = surface_sample(normalize_scan(load_scan(path), fit=False), 800, 4)
    assert denoise(cloud) is cloud


def test_a_sparse_noisy_cloud_is_smoothed():
    """3,000 points with 1 mm of noise (a depth camera at a metre or two): their noise is more than 0.4 of
    their spacing (`_SPARSE_SHAPE`; at 0.6 most such clouds were left as they were), and smoothing reads them
    better (docs/scan.md, "Noise")."""
    rng = np.random.default_rng(6)
    smoothed = 0
    for path in EXAMPLE_SCANS:
        cloud = surface_sample(normalize_scan(load_scan(path), fit=False), 3000, 6)
        noisy = Scan(cloud.vertices + rng.normal(0.0, 1.0, cloud.vertices.shape).astype(np.float32))
        out = denoise(noisy)
        smoothed += out is not noisy and surface_noise(out) < 0.5 * surface_noise(noisy)
    assert smoothed == len(EXAMPLE_SCANS)


@pytest.mark.parametrize(
    "points",
    [
        np.zeros((500, 3), np.float32),
        np.c_[np.arange(500), np.zeros(500), np.zeros(500)].astype(np.float32),
        np.random.default_rng(5).normal(0.0, 30.0, (500, 3)).astype(np.float32),
        np.zeros((10, 3), np.float32),
    ],
    ids=["one point 500 times", "a line", "a ball of scatter", "ten points"],
)
def test_degenerate_clouds_come_back_finite(points):
    out = denoise(Scan(points)).vertices
    assert out.shape == points.shape and np.isfinite(out).all()


def test_a_dense_scan_costs_what_its_voxels_do():
    """300,000 points (a dense structured-light capture) are averaged into at most `_MAX_SUPPORT` voxels first;
    this checks it runs and smooths, not how fast (bench/render.py times it)."""
    rng = np.random.default_rng(6)
    noisy = bowl(300_000, seed=6) + rng.normal(0.0, 1.0, (300_000, 3)).astype(np.float32)
    smoothed = denoise(Scan(noisy)).vertices
    assert depth_error(smoothed) < 0.5 * depth_error(noisy)


@pytest.mark.parametrize("path", EXAMPLE_SCANS[:1] + EXAMPLE_SCANS[-1:], ids=lambda p: p.stem)
def test_a_surface_the_views_cannot_see_is_not_noise(path):
    """Measured with the face, a surface 6 mm behind it read as 2.4 mm of noise, and smoothing pulled the face
    towards it."""
    face = normalize_scan(load_scan(path), fit=False)
    both = with_inside(face)
    assert not seen_vertices(both)[len(face.vertices) :].mean() > 0.35  # the inside's rim shows in side views
    assert surface_noise(both) < QUIET_MM
    assert np.array_equal(denoise(both).vertices, both.vertices)


def test_a_dense_mesh_is_tested_on_its_vertices_clustered(monkeypatch):
    """Past `_SEEN_MAX_FACES` triangles the visibility test runs on the mesh clustered to about that many (a clean
    1.7-million-triangle face with an inside: 1.7 s against 5.5 s); each vertex takes its cluster's answer."""
    import affectvlm.scan.denoise as d

    face = normalize_scan(load_scan(EXAMPLE_SCANS[-1]), fit=False)
    dense = trimesh.Trimesh(face.vertices, face.faces, process=False).subdivide().subdivide()  # edges under 1 mm
    face = Scan(np.asarray(dense.vertices, np.float32), np.asarray(dense.faces))
    both = with_inside(face)
    full = seen_vertices(both)
    monkeypatch.setattr(d, "_SEEN_MAX_FACES", both.num_faces // 8)
    coarse = seen_vertices(both)
    n = face.num_vertices
    assert coarse[:n].mean() > 0.95 and coarse[n:].mean() < 0.35
    assert (coarse == full).mean() > 0.9


def test_a_noisy_face_is_smoothed_without_what_lies_behind_it():
    """Smoothed with the surface behind it, a face with 2 mm of noise came out 2.4-2.6 mm off itself along its
    normals (2.0 before smoothing); alone, 0.9-1.6."""
    for path in EXAMPLE_SCANS:
        face = normalize_scan(load_scan(path), fit=False)
        n = len(face.vertices)
        rng = np.random.default_rng(7)
        noisy = with_inside(face.replace(vertices=face.vertices + rng.normal(0.0, 2.0, (n, 3)).astype(np.float32)))
        out = denoise(noisy).vertices
        hidden = ~seen_vertices(noisy)
        assert np.array_equal(out[hidden], noisy.vertices[hidden])  # what the views cannot see stays as it is
        normals = trimesh.Trimesh(face.vertices, face.faces, process=False).vertex_normals
        off = [np.sqrt(np.mean(np.einsum("ij,ij->i", v[:n] - face.vertices, normals) ** 2)) for v in (out, noisy.vertices)]
        assert off[0] < 0.8 * off[1]  # along the normals, where smoothing moves them
