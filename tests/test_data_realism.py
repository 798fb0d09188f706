"""Scanner realism (affectvlm.data.realism): seeded, switchable, each kind does what it says, and - the point of it
all - `normalize_scan` brings every kind back to the clean face's frame.

"Back to the clean frame" is measured without vertex correspondence (decimation, subdivision and point clouds
renumber vertices): both scans are normalised in millimetres (`fit=False`, so a crop that cuts inside 90 mm does
not change the scale), and each normalised vertex of the realistic scan within 25 mm of its nose tip (the nose)
or 60 mm (the face) is matched to the nearest vertex of the clean one; the median of those distances must stay
within 2.5 mm at the nose and 3 mm over the face (measured: 0 for holes, boundaries, spikes, point clouds, axes,
offsets and cm/m; up to 1.9 mm from the resampling of density and noise).
"""

import numpy as np
import pytest

from affectvlm.data.realism import (
    ADDED_LATER,
    KINDS,
    Z_UP,
    RealismConfig,
    apply_realism,
    cluster_vertices,
    sample_surface,
    stream_index,
    subdivide,
    vertex_normals,
)
from affectvlm.scan import Scan, normalize_scan
from affectvlm.testing import face_mesh


@pytest.fixture(scope="module")
def face() -> Scan:
    return face_mesh("happiness")


def landmarks_of(scan: Scan) -> dict[str, list[int]]:
    """face_mesh's eye, nostril, mouth and nose vertices (nearest to where its formula puts them)."""

    def near(*points):
        return [int(np.argmin(np.linalg.norm(scan.vertices[:, :2] - p, axis=1))) for p in points]

    return {
        "eyes": near((-32, 30), (32, 30)),
        "nostrils": near((-8, -10), (8, -10)),
        "mouth": near((0, -42)),
        "nose": [int(np.argmax(scan.vertices[:, 2]))],
    }


def realistic(face: Scan, seed: int, config: RealismConfig, **kwargs) -> tuple[Scan, list[str]]:
    return apply_realism(face, np.random.default_rng(seed), config, **kwargs)


def nearest(a: np.ndarray, b: np.ndarray, radius: float) -> float:
    """The median distance from the points of `a` within `radius` of the origin to the nearest point of `b`."""
    a = a[np.linalg.norm(a, axis=1) < radius].astype(np.float64)
    b = b.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return float(np.median(np.sqrt(np.maximum(d2.min(1), 0.0))))


# --- the API ----------------------------------------------------------------------------------------------------


def test_a_seed_fixes_the_result_and_kinds_are_listed_in_order(face):
    a, kinds_a = realistic(face, 7, RealismConfig())
    b, kinds_b = realistic(face, 7, RealismConfig())
    assert kinds_a == kinds_b and a.num_vertices == b.num_vertices
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert kinds_a == [k for k in KINDS if k in kinds_a]
    draws = {tuple(realistic(face, seed, RealismConfig())[1]) for seed in range(12)}
    assert len(draws) > 6  # different seeds, different kinds


def test_switched_off_nothing_changes(face):
    assert realistic(face, 0, RealismConfig(enabled=False)) == (face, [])
    assert realistic(face, 0, RealismConfig.only())[1] == []
    with pytest.raises(ValueError, match="unknown"):
        RealismConfig.only("glare")
    with pytest.raises(ValueError, match="p_noise"):
        RealismConfig(p_noise=1.5)


def test_a_kind_added_later_leaves_every_earlier_draw_alone(face, monkeypatch):
    """A scene (`ADDED_LATER`) takes no draw while it is off and comes last in the streams, and its settings stay out
    of the config's dict while it is off, so every cache rendered before it existed renders the same, under the
    same folder name."""
    import affectvlm.data.realism as realism

    on = RealismConfig(p_scene=0.5, wall=0.2)
    assert "p_scene" not in RealismConfig().to_dict() and RealismConfig(**on.to_dict()) == on

    assert [stream_index(k) for k in KINDS if k not in ADDED_LATER] == list(
        range(len(KINDS) - len(ADDED_LATER))
    )
    for seed in range(6):
        rng = np.random.default_rng(seed)
        now, kinds = apply_realism(face, rng, RealismConfig())
        with monkeypatch.context() as m:
            m.setattr(realism, "KINDS", tuple(k for k in KINDS if k not in ADDED_LATER))
            before_rng = np.random.default_rng(seed)
            before, before_kinds = apply_realism(face, before_rng, RealismConfig())
        assert kinds == before_kinds and rng.random() == before_rng.random()
        np.testing.assert_array_equal(now.vertices, before.vertices)


def test_a_scene_adds_a_body_below_the_face_and_sometimes_a_wall_behind_it(face):
    """The neck, shoulders and chest lie below the chin and behind the nose tip, of the scan's kind; a wall lies
    flat behind the head."""
    tip = face.vertices[np.argmax(face.vertices[:, 2])]
    for cloud, wall in ((False, 0.0), (True, 1.0)):
        clean = face.replace(faces=None, uv=None) if cloud else face
        scan, kinds = realistic(clean, 3, RealismConfig.only("scene", wall=wall))
        added = scan.vertices[face.num_vertices :]
        np.testing.assert_array_equal(scan.vertices[: face.num_vertices], face.vertices)
        assert (
            kinds == ["scene"]
            and scan.is_point_cloud == cloud
            and 3 * face.num_vertices < len(added) < 45_000
        )
        assert (added[:, 2] < tip[2] + 50).all()
        body = added[added[:, 2] > tip[2] - 140]  # the wall is at least 150 mm behind
        assert np.median(body[:, 1]) < tip[1] - 150 and (len(body) < len(added)) == wall
        if not cloud:
            assert scan.faces.max() == scan.num_vertices - 1 and len(scan.uv) == scan.num_vertices


# --- each kind does what it says ---------------------------------------------------------------------------------


def test_holes_remove_the_vertices_about_each_landmark(face):
    marks = landmarks_of(face)
    config = RealismConfig.only("holes", landmark_hole=1.0, random_holes=(0, 0))
    scan, kinds = realistic(face, 0, config, landmarks=marks)
    assert kinds == ["holes"] and scan.num_vertices < face.num_vertices
    for name in ("eyes", "nostrils", "mouth"):
        for index in marks[name]:
            assert (
                np.linalg.norm(scan.vertices - face.vertices[index], axis=1).min() > 2.9
            )  # smallest radius: 3 mm
    random_only, _ = realistic(
        face, 1, RealismConfig.only("holes", random_holes=(2, 2), hole_radius=(10, 10))
    )
    assert random_only.num_vertices < face.num_vertices - 20


def test_a_boundary_cuts_each_way_within_its_radii(face):
    config = RealismConfig.only("boundary", boundary_radius=(60.0, 80.0))
    scan, _ = realistic(face, 3, config)
    distance = np.linalg.norm(scan.vertices - face.vertices[np.argmax(face.vertices[:, 2])], axis=1)
    assert distance.max() <= 80.0 * 1.1 and scan.num_vertices < face.num_vertices


def test_density_clusters_down_and_subdivides_up(face):
    dense, _ = realistic(face, 0, RealismConfig.only("density", faces=(50_000, 50_000)))
    assert dense.num_faces >= 50_000 * 0.5 and dense.faces.max() < dense.num_vertices
    sparse, _ = realistic(dense, 0, RealismConfig.only("density", faces=(6_000, 6_000)))
    assert 2_000 < sparse.num_vertices < 4_500 and sparse.num_faces > 4_000
    assert subdivide(face).num_faces == 4 * face.num_faces
    cloud = cluster_vertices(face.replace(faces=None), 5.0)
    assert cloud.is_point_cloud and cloud.num_vertices < face.num_vertices / 2


def test_noise_and_spikes_move_vertices_along_the_line_of_sight(face):
    noisy, _ = realistic(face, 0, RealismConfig.only("noise", noise=(0.5, 0.5)))
    np.testing.assert_array_equal(noisy.vertices[:, :2], face.vertices[:, :2])
    assert 0.4 < np.std(noisy.vertices[:, 2] - face.vertices[:, 2]) < 0.6
    spiky, _ = realistic(face, 0, RealismConfig.only("spikes", spikes=(10, 10), spike_length=(20.0, 30.0)))
    moved = np.abs(spiky.vertices[:, 2] - face.vertices[:, 2])
    assert (moved > 0).sum() == 10 and moved[moved > 0].min() >= 20.0


def test_a_point_cloud_has_no_faces_and_a_partial_one_only_what_faces_the_scanner(face):
    head = Scan(
        np.concatenate([face.vertices, face.vertices * [1, 1, -1]]), None
    )  # a back: the mirrored face
    both = Scan(head.vertices, np.concatenate([face.faces, face.faces[:, ::-1] + face.num_vertices]))
    cloud, _ = realistic(both, 0, RealismConfig.only("point_cloud", partial=0.0))
    assert cloud.is_point_cloud and cloud.num_vertices == both.num_vertices
    front, _ = realistic(both, 0, RealismConfig.only("point_cloud", partial=1.0))
    assert front.is_point_cloud and front.num_vertices < 0.6 * both.num_vertices
    assert (vertex_normals(both)[:, 2] > 0).sum() == front.num_vertices


def test_a_sampled_cloud_is_uniform_over_the_surfaces_area_and_partial_keeps_what_faces_the_scanner(face):
    """`sampled`: points drawn over the triangles by area (a triangle three times as large gets three times the
    points), on the surface, with their colours; off by default and then out of the config's dict, so the caches
    rendered before it keep their folder names and their draws."""
    two = Scan(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]], np.float32),
               np.array([[0, 1, 2], [3, 4, 5]]), colors=np.repeat(np.array([[0], [0], [0], [200], [200], [200]],
               np.uint8), 3, 1))  # fmt: skip
    cloud, normals = sample_surface(two, 20_000, np.random.default_rng(0))
    second = cloud.vertices[:, 0] >= 2
    assert cloud.is_point_cloud and abs(second.mean() - 0.75) < 0.015
    assert (cloud.colors[second] == 200).all() and (cloud.colors[~second] == 0).all()
    assert np.abs(cloud.vertices[:, 2]).max() == 0 and np.allclose(np.abs(normals[:, 2]), 1)
    inside = cloud.vertices[~second]
    assert (inside[:, :2] >= 0).all() and (inside[:, 0] + inside[:, 1] <= 1 + 1e-5).all()

    head = Scan(np.concatenate([face.vertices, face.vertices * [1, 1, -1]]), np.concatenate(
        [face.faces, face.faces[:, ::-1] + face.num_vertices]))  # fmt: skip
    config = RealismConfig.only("point_cloud", sampled=1.0, sampled_points=(6000, 6000), partial=0.0)
    whole, _ = realistic(head, 0, config)
    front, _ = realistic(head, 0, config.replace(partial=1.0))
    assert abs(whole.num_vertices - 6000) <= 1 and 2400 < front.num_vertices < 3600
    back = face.vertices * [1, 1, -1]
    assert nearest(front.vertices, face.vertices, 1e9) < 2.0 < 10.0 < nearest(front.vertices, back, 1e9)
    assert "sampled" not in RealismConfig().to_dict() and RealismConfig(**config.to_dict()) == config


def test_a_sampled_cloud_keeps_a_spike_a_single_point_not_the_fin_of_triangles_it_pulls_out(face):
    """Spikes come before the cloud: a cloud drawn over the spiked mesh would hold fins of points along each
    spike's triangles (which threw the normaliser off half a face); it is drawn over the surface as it was,
    with the spiked vertices as single points, when the kinds run in one call or one call each (the generator's
    way, with one `notes` dict per scan)."""
    config = RealismConfig.only(
        "spikes", "point_cloud", spikes=(20, 20), spike_length=(30.0, 50.0), sampled=1.0, partial=0.0,
        sampled_points=(20_000, 20_000),
    )  # fmt: skip
    together, kinds = realistic(face, 0, config)
    notes = {}
    spiked, _ = realistic(face, 1, RealismConfig.only("spikes", spikes=(20, 20), spike_length=(30.0, 50.0)),
                          notes=notes)  # fmt: skip
    apart, _ = realistic(spiked, 2, config.replace(p_spikes=0.0), notes=notes)
    assert kinds == ["spikes", "point_cloud"]
    for cloud in (together, apart):
        assert abs(cloud.num_vertices - (20_000 + 20)) <= 1  # the count is the draw rounded down
        surface, spikes = cloud.vertices[:-20:4], cloud.vertices[-20:]
        assert distances(surface, face.vertices).max() < 4.0  # measured 3.2 without spikes; fins: 33, 13 % > 5 mm
        assert (distances(spikes, face.vertices) > 10.0).all()  # 30-50 mm along z, towards or away


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each point of `a`'s distance to the nearest point of `b`."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def test_the_files_frame_turns_moves_and_rescales(face):
    back, _ = realistic(face, 0, RealismConfig.only("turn", turn_back=1.0))
    np.testing.assert_allclose(back.vertices, face.vertices * [-1, 1, -1], atol=1e-4)
    z_up, _ = realistic(face, 0, RealismConfig.only("axes"))
    np.testing.assert_allclose(z_up.vertices, face.vertices @ Z_UP.T, atol=1e-4)
    assert np.ptp(z_up.vertices[:, 2]) == pytest.approx(np.ptp(face.vertices[:, 1]), rel=1e-5)
    moved, _ = realistic(face, 0, RealismConfig.only("offset", offset=500.0))
    shift = moved.vertices - face.vertices
    assert np.ptp(shift, axis=0).max() < 1e-3 and 0 < np.linalg.norm(shift[0]) <= 500.0
    for weights, factor in (((1, 0, 0), 0.1), ((0, 1, 0), 0.001)):
        scaled, _ = realistic(face, 0, RealismConfig.only("units", unit_weights=weights))
        np.testing.assert_allclose(
            np.ptp(scaled.vertices, axis=0), np.ptp(face.vertices, axis=0) * factor, rtol=1e-5
        )
    unitless, _ = realistic(
        face, 0, RealismConfig.only("units", unit_weights=(0, 0, 1), unitless_size=(3.0, 3.0))
    )
    assert np.ptp(unitless.vertices, axis=0).max() == pytest.approx(3.0, rel=1e-5)


# --- and normalize_scan brings each back ---------------------------------------------------------------------------

# kind -> config changes that make the comparison meaningful (a unitless model: 1 unit across, the size rule's case)
BACK = {
    "turn": dict(turn_back=1.0),
    "units": dict(unit_weights=(1, 1, 1), unitless_size=(1.0, 1.0)),
}


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_normalises_back_to_the_clean_frame(face, kind):
    want = normalize_scan(face, fit=False).vertices
    marks = landmarks_of(face)
    for seed in range(4):
        scan, kinds = realistic(face, seed, RealismConfig.only(kind, **BACK.get(kind, {})), landmarks=marks)
        assert kinds == [kind]
        got = normalize_scan(scan, fit=False).vertices
        assert nearest(got, want, 25.0) <= 2.5 and nearest(got, want, 60.0) <= 3.0, (kind, seed)


def test_a_face_turned_any_way_comes_back_nose_first(face):
    """Any turn: a face within 20 degrees of the file's axes keeps that pose, so only the nose is compared."""
    want = normalize_scan(face, fit=False).vertices
    for seed in range(8):
        scan, _ = realistic(face, seed, RealismConfig.only("turn", "axes", turn_back=0.0))
        assert nearest(normalize_scan(scan, fit=False).vertices, want, 25.0) <= 4.0, seed


def test_everything_at_once_still_finds_the_nose(face):
    config = RealismConfig(
        p_holes=0.6, p_boundary=0.6, p_density=0.4, p_noise=0.6, p_spikes=0.5, p_point_cloud=0.3,
        p_turn=0.6, p_axes=0.5, p_offset=0.5, p_units=0.5, unitless_size=(1.0, 1.0),
    )  # fmt: skip
    want = normalize_scan(face, fit=False).vertices
    for seed in range(10):
        scan, kinds = realistic(face, seed, config, landmarks=landmarks_of(face))
        assert nearest(normalize_scan(scan, fit=False).vertices, want, 25.0) <= 4.0, (seed, kinds)
