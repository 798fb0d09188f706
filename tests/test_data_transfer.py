"""The ICT FaceKit's AU shapes carried onto the Surrey Face Model (affectvlm.data.transfer, ``sfm_binding``), and
the SFM's whole-emotion blendshapes onto the kit (``ict_binding="blend"``).

The geometry helpers are checked on their own (closest points against brute force, the similarity and the
thin-plate spline against known maps, a correspondence against a mesh whose answer is known); the transfer
itself on the two face models (skipped without them): a known AU moves the SFM's landmarks the way it moves
the kit's, by about as much; the generator renders and records real AUs on SFM subjects with it.
"""

import numpy as np
import pytest
from test_data_ict import ICT_HOW_TO, ict_folder

from affectvlm.data.transfer import (
    SFM_IBUG_LANDMARKS,
    closest_on_triangles,
    correspond,
    harmonic_fill,
    ict_to_sfm,
    similarity,
    thin_plate_warp,
)


def _rotation(rng) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_closest_points_match_brute_force():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 3))
    points = rng.normal(size=(300, 3)) * 2
    dist, bary = closest_on_triangles(points, a, b, c)
    uv = rng.random((200_000, 2))
    uv = uv[uv.sum(1) <= 1]
    samples = a + uv[:, :1] * (b - a) + uv[:, 1:] * (c - a)
    brute = np.sqrt(((points[:, None] - samples[None]) ** 2).sum(-1)).min(1)
    assert np.abs(brute - dist).max() < 0.01  # sampling resolution
    assert (bary >= -1e-9).all() and np.allclose(bary.sum(1), 1)
    on_triangle = bary @ np.stack([a, b, c])
    assert np.allclose(np.linalg.norm(on_triangle - points, axis=1), dist)


def test_similarity_and_thin_plate_spline_recover_known_maps():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(40, 3)) * 30
    rot, scale, shift = _rotation(rng), 1.3, np.array([5.0, -2.0, 7.0])
    target = scale * source @ rot + shift
    s, r, t = similarity(source, target)
    assert s == pytest.approx(scale) and np.allclose(r, rot) and np.allclose(t, shift)
    bent = target + np.sin(target / 40.0) * 3  # a smooth non-rigid bend
    points = rng.normal(size=(100, 3)) * 30
    assert np.allclose(thin_plate_warp(target, bent, target), bent, atol=1e-6)  # interpolates its controls
    affine = thin_plate_warp(source, target, points)  # and reproduces an affine map everywhere
    assert np.allclose(affine, scale * points @ rot + shift, atol=1e-6)


def _grid_mesh(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A curved n x n sheet (mm) and its triangles."""
    x, y = np.meshgrid(np.linspace(-50, 50, n), np.linspace(-50, 50, n))
    v = np.stack([x.ravel(), y.ravel(), 0.004 * (x**2 + y**2).ravel()], 1)
    i = np.arange(n * n).reshape(n, n)
    quads = np.stack([i[:-1, :-1], i[:-1, 1:], i[1:, 1:], i[1:, :-1]], -1).reshape(-1, 4)
    return v, np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])


def test_correspondence_carries_motion_through_a_similarity():
    """Target = the source sheet turned, scaled and moved; a displacement on the source arrives turned and
    scaled at the corresponding target vertices; vertices off the surface fade out."""
    rng = np.random.default_rng(2)
    source, faces = _grid_mesh()
    rot, scale = _rotation(rng), 1.1
    target = scale * source @ rot + np.array([3.0, 1.0, -4.0])
    marks = rng.choice(len(source), 20, replace=False)
    corr = correspond(target, marks, source, faces, marks)
    assert corr.distance.max() < 1e-6 and (corr.weight == 1).all()
    motion = np.tile([0.0, 2.0, 0.0], (len(source), 1)) * (source[:, :1] > 0)  # the +x half moves up 2 mm
    moved = corr.transfer(faces, motion)
    assert np.allclose(moved, motion @ (scale * rot), atol=1e-5)
    far = np.vstack([target, target[:1] + 100.0])  # one vertex 100+ mm from the surface
    corr = correspond(far, marks, source, faces, marks)
    assert corr.weight[-1] == 0 and (corr.transfer(faces, motion)[-1] == 0).all()


# --- on the two face models ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(sfm_dir):
    from affectvlm.data.ict import ICT_NPZ, load_ict
    from affectvlm.data.sfm import load_sfm

    if not (ict_folder() / ICT_NPZ).is_file():
        pytest.skip(f"no {ICT_NPZ} in {ict_folder()}: {ICT_HOW_TO}")
    sfm, ict = load_sfm(sfm_dir, download=False), load_ict(ict_folder())
    faces = ict.triangles_for()
    return sfm, ict, faces, ict_to_sfm(sfm.mean, ict.neutral, faces, ict.landmarks68)


def _ict_motion(ict, au_weights, asymmetry=0.0) -> np.ndarray:
    from affectvlm.data.synth import _au_displacement

    return _au_displacement(ict.expression_names, ict.expressions, au_weights, asymmetry)


def test_the_sfm_lies_on_the_warped_kit(models):
    *_, corr = models
    assert np.median(corr.distance) < 1.5 and np.percentile(corr.distance, 95) < 4.0
    assert corr.weight.mean() > 0.95  # only the closed eyes and the mouth line fade out
    landmarks = np.array(list(SFM_IBUG_LANDMARKS.values()))
    assert np.percentile(corr.distance[landmarks], 90) < 1.0  # the warp puts the landmarks on the surface


@pytest.mark.parametrize(
    "au, ibug, axis, sign, minimum",
    [
        (12, (49, 55), 1, +1, 2.0),  # lip corners pulled up
        (4, (22, 23), 1, -1, 1.0),  # inner brows lowered
        (1, (22, 23), 1, +1, 1.0),  # inner brows raised
        (26, (9,), 1, -1, 5.0),  # jaw drop: the chin goes down
        (15, (49, 55), 1, -1, 1.0),  # lip corners pulled down
    ],
)
def test_a_known_au_moves_the_sfm_like_the_kit(models, au, ibug, axis, sign, minimum):
    """The transferred AU moves the SFM's landmarks the right way, by at least `minimum` mm and within 35 % of
    what it does to the kit's own landmarks (turned into the SFM's frame)."""
    sfm, ict, faces, corr = models
    sfm_motion = corr.transfer(faces, _ict_motion(ict, {au: 1.0}))
    ict_motion = _ict_motion(ict, {au: 1.0}) @ corr.linear
    for mark in ibug:
        ours, theirs = sfm_motion[SFM_IBUG_LANDMARKS[mark], axis], ict_motion[ict.landmarks68[mark - 1], axis]
        assert sign * ours > minimum, (au, mark, ours)
        assert ours == pytest.approx(theirs, rel=0.35), (au, mark, ours, theirs)


def test_one_sided_au_moves_one_side(models):
    """AU12 on the subject's left only (+x) lifts the left lip corner and leaves the right one."""
    sfm, ict, faces, corr = models
    left, right = SFM_IBUG_LANDMARKS[55], SFM_IBUG_LANDMARKS[49]
    assert sfm.mean[left, 0] > 0 > sfm.mean[right, 0]
    motion = corr.transfer(faces, _ict_motion(ict, {12: 1.0}, asymmetry=1.0))
    assert motion[left, 1] > 2.0 and abs(motion[right, 1]) < 0.3


def test_generator_renders_real_aus_on_sfm_subjects(models, sfm_dir):
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    sfm, ict, *_ = models
    cfg = SynthConfig(num_subjects=2, expressions="aus", sfm_binding="transfer")
    gen = SynthFER3D(cfg, sfm, ict)
    scan = gen.scan(0, "happiness", 4)
    meta = scan.metadata
    assert meta["face_model"] == "sfm" and meta["au_binding"] == "transfer" and "aus_nominal" not in meta
    assert meta["aus"][12] > 0.3 and meta["au_left"] and meta["au_right"]
    again = SynthFER3D(cfg, sfm, ict).scan(0, "happiness", 4)
    assert np.array_equal(scan.vertices, again.vertices)  # deterministic from the seed
    blend = SynthFER3D(cfg.replace(sfm_binding="blend"), sfm, ict).scan(0, "happiness", 4)
    assert blend.metadata["aus_nominal"] and not np.array_equal(scan.vertices, blend.vertices)
    assert "sfm_binding" not in SynthConfig(num_subjects=2).to_dict()  # a v1 config's dict is unchanged
    assert cfg.to_dict()["sfm_binding"] == "transfer"
    seq = gen.sequence(0, "surprise", num_frames=6)
    assert seq.metadata["au_binding"] == "transfer" and len(seq.frames) == 6


def test_mixed_expressions_split_the_sfm_subjects_between_two_recipes(models):
    """`expressions="mixed"`: each SFM subject is exactly its `blendshapes` or its `aus` self, about half each;
    ICT subjects are untouched."""
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    sfm, ict, *_ = models
    kw = dict(num_subjects=16, face_model="both", sfm_binding="transfer")
    mixed, aus, shapes = (
        SynthFER3D(SynthConfig(expressions=e, **kw), sfm, ict) for e in ("mixed", "aus", "blendshapes")
    )
    kinds = []
    for i in range(16):
        scan = mixed.scan(i, "anger", 3)
        kinds.append(scan.metadata["expressions"])
        same = aus if kinds[-1] == "aus" else shapes
        assert np.array_equal(scan.vertices, same.scan(i, "anger", 3).vertices)
    sfm_kinds = kinds[0::2]
    assert set(kinds[1::2]) == {"aus"} and 2 <= sfm_kinds.count("aus") <= 6, kinds


def test_harmonic_fill_solves_for_the_free_vertices():
    """A fan of triangles: the free vertices 1-3 of the path 0-4 (both held, at 0 and 4 mm) also touch the hub 5
    (held at 2 mm); each free value is the mean of its neighbours: 4/3, 2, 8/3."""
    faces = np.array([[0, 1, 5], [1, 2, 5], [2, 3, 5], [3, 4, 5]])
    d = np.zeros((6, 3))
    d[4, 0], d[5, 0] = 4.0, 2.0
    free = np.array([0, 1, 1, 1, 0, 0], bool)
    out = harmonic_fill(np.stack([d, 2 * d]), faces, free, iterations=500)
    np.testing.assert_allclose(out[0, :, 0], [0, 4 / 3, 2, 8 / 3, 4, 2], atol=1e-4)
    np.testing.assert_allclose(out[1], 2 * out[0], atol=1e-4)  # each leading slice on its own
    np.testing.assert_array_equal(out[0, ~free], d[~free])  # held vertices untouched


def test_the_sfm_blendshapes_on_ict_faces(models):
    """``ict_binding="blend"``: ICT identities show the SFM's whole-emotion shapes (a third expression recipe). A
    smile lifts the kit's lip corners, surprise drops its chin and raises its brows, neighbouring face vertices
    move alike (the lips do not tear), no AUs are recorded, and the default recipe is unchanged."""
    from affectvlm.data.aus import recorded_aus
    from affectvlm.data.synth import EMOTIONS, SynthConfig, SynthFER3D

    sfm, ict, *_ = models
    cfg = SynthConfig(face_model="ict", ict_binding="blend", num_subjects=2)
    gen = SynthFER3D(cfg, sfm, ict)
    shapes, marks = gen._ict_blend_shapes, ict.landmarks68
    happy, surprise = shapes[EMOTIONS.index("happiness")], shapes[EMOTIONS.index("surprise")]
    assert happy[[marks[48], marks[54]], 1].min() > 3.0
    assert surprise[marks[8], 1] < -10.0 and surprise[[marks[19], marks[24]], 1].min() > 3.0
    tri, stop = gen._ict_face.parts.triangles, ict.regions["face"].vertices.stop
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    edges = edges[(edges < stop).all(1)]
    for shape in (happy, surprise):  # without the fill at the lip line the jumps reach 14 and 30 mm
        assert np.linalg.norm(shape[edges[:, 0]] - shape[edges[:, 1]], axis=1).max() < 6.0
    scan = gen.scan(0, "happiness", 4)
    meta = scan.metadata
    assert meta["expressions"] == "blendshapes" and meta["blend_binding"] == "transfer"
    assert recorded_aus(meta) is None  # the blend's AUs are not rendered AUs
    aus = SynthFER3D(cfg.replace(ict_binding="aus"), sfm, ict).scan(0, "happiness", 4)
    assert aus.metadata["expressions"] == "aus" and not np.array_equal(scan.vertices, aus.vertices)
    assert (
        "ict_binding" not in SynthConfig(face_model="ict").to_dict()
        and cfg.to_dict()["ict_binding"] == "blend"
    )
    assert gen.scan(1, "happily_surprised", 4).metadata["expressions"] == "aus"  # compounds stay AUs
    seq = gen.sequence(0, "surprise", num_frames=4)
    assert len(seq.frames) == 4 and seq.metadata["blend_binding"] == "transfer"
