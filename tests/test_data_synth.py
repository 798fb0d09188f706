import numpy as np
import pytest

from affectvlm.data.sfm import load_sfm
from affectvlm.data.synth import EMOTIONS, PRESETS, SynthConfig, SynthFER3D


@pytest.fixture(scope="module")
def model(sfm_dir):
    return load_sfm(sfm_dir)


def test_deterministic_from_seed_and_order_independent(model):
    cfg = SynthConfig(seed=3, num_subjects=6)
    a = SynthFER3D(cfg, model)
    b = SynthFER3D(cfg, model)
    s1 = a.scan(4, "fear", 2)
    b.scan(0, "anger", 1)  # drawing something else first must not change anything
    s2 = b.scan(4, "fear", 2)
    assert np.array_equal(s1.vertices, s2.vertices) and np.array_equal(s1.faces, s2.faces)
    c = SynthFER3D(cfg.replace(seed=4), model).scan(4, "fear", 2)
    assert c.vertices.shape != s1.vertices.shape or not np.allclose(c.vertices, s1.vertices)
    q1 = a.sequence(1, "surprise", num_frames=8)
    q2 = b.sequence(1, "surprise")
    assert np.array_equal(q1.frames, q2.frames[q1.frame_indices])  # subsampling draws the same frames


def test_scan_shapes_and_metadata(model):
    gen = SynthFER3D(SynthConfig(seed=0, num_subjects=8), model)
    scan = gen.scan(0, "happiness", 4)
    assert scan.vertices.dtype == np.float32 and scan.vertices.shape[1] == 3
    assert scan.faces.max() < len(scan.vertices) and scan.colors.shape == (len(scan.vertices), 3)
    assert scan.uv.shape == (len(scan.vertices), 2)
    ids = [s.subject_id for s in gen.subjects]
    assert len(set(ids)) == 8 and all(i[0] in "FM" and len(i) == 5 for i in ids)
    assert all((s.gender == "female") == s.subject_id.startswith("F") for s in gen.subjects)
    meta = gen.subject(0).metadata
    assert meta["synthetic_metadata"] and meta["ethnicity"] in ("WH", "AE", "BL", "LA", "IN", "AM")
    items = gen.static_items()
    assert len(items) == 8 * 25 and items[0]["label"] == "neutral" and items[0]["intensity"] == 0
    assert len(gen.sequence_items()) == 8 * 6
    with pytest.raises(ValueError):
        gen.scan(0, "contempt", 1)
    with pytest.raises(ValueError):
        gen.scan(0, "anger", 5)


def test_expression_and_intensity_move_the_face(model):
    gen = SynthFER3D(SynthConfig.preset("easy", num_subjects=2), model)
    neutral = gen.identity_shape(0)
    d = {}
    for label in EMOTIONS:
        w = gen.expression_weights(gen.subject(0), label, 1.0, np.random.default_rng(0))
        d[label] = np.linalg.norm(gen._displacement(w, 0.0), axis=1).mean()
    assert all(v > 0.5 for v in d.values())
    assert np.isfinite(neutral).all()
    low = gen.expression_weights(gen.subject(0), "anger", 0.3, np.random.default_rng(0))
    high = gen.expression_weights(gen.subject(0), "anger", 1.0, np.random.default_rng(0))
    assert np.abs(high).sum() > np.abs(low).sum()


def test_asymmetry_uses_symmetry_pairs(model):
    gen = SynthFER3D(SynthConfig(num_subjects=1), model)
    w = np.eye(6, dtype=np.float32)[3]
    sym = gen._displacement(w, 0.0)
    assert np.allclose(sym, gen._mirror(sym), atol=1e-4)  # symmetric without asymmetry
    asym = gen._displacement(w, 0.5)
    assert not np.allclose(asym, gen._mirror(asym), atol=1e-2)


def test_presets_and_validation():
    assert set(PRESETS) == {"easy", "medium", "hard"}
    hard = SynthConfig.preset("hard", seed=9)
    assert hard.seed == 9 and hard.noise > SynthConfig().noise > SynthConfig.preset("easy").noise
    with pytest.raises(ValueError):
        SynthConfig(noise=-1)
    with pytest.raises(ValueError):
        SynthConfig(confusable_pairs=(("fear", "contempt"),))
    with pytest.raises(ValueError):
        SynthConfig.preset("impossible")


def test_sequence_timing(model):
    gen = SynthFER3D(SynthConfig(seed=1, num_subjects=4), model)
    weights, phases = gen.sequence_timing(2, "happiness")
    assert len(weights) == phases["frames"] and 40 < len(weights) < 200  # 25 fps, a few seconds
    assert weights[0] == 0 and weights[-1] == 0  # neutral -> ... -> neutral
    apex = weights[phases["apex"] : phases["offset"]]
    assert apex.min() > 0.6 * weights.max()
    onset = weights[phases["onset"] : phases["apex"]]
    assert np.all(np.diff(onset) >= 0)
    # subject-specific timing: subjects differ in tempo
    lengths = {len(gen.sequence_timing(i, "happiness")[0]) for i in range(4)}
    assert len(lengths) > 1
    seq = gen.sequence(2, "happiness", num_frames=10)
    assert seq.frames.shape[0] == 10 and seq.num_frames_total == len(weights) and seq.fps == 25.0
    # small head motion: the nose moves a little between frames, not a lot
    assert len(seq.to_scans()) == 10


def test_nuisances_vary_mesh(model):
    gen = SynthFER3D(SynthConfig.preset("hard", num_subjects=3), model)
    counts = {len(gen.scan(i % 3, "sadness", 1 + i % 4).vertices) for i in range(8)}
    assert len(counts) > 2  # crop, holes and density change the vertex count
    easy = SynthFER3D(SynthConfig.preset("easy", num_subjects=1), model).scan(0, "sadness", 3)
    assert easy.faces.shape[0] > 3000


def test_head_motion_is_small_and_smooth(model):
    gen = SynthFER3D(SynthConfig(seed=4, num_subjects=1, noise=0.0, outlier_fraction=0.0), model)
    seq = gen.sequence(0, "happiness")
    centre = seq.frames.mean(axis=1)  # (T, 3)
    step = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    assert 0 < step.max() < 2.0  # moves, but a little per frame at 25 fps
    assert np.ptp(centre, axis=0).max() < 15.0


def test_range_grid_rasterises_a_plane():
    from affectvlm.data.synth import range_grid

    v = np.array([[0, 0, 0], [20, 0, 20], [20, 10, 20], [0, 10, 0]], np.float32)  # z = x
    g = range_grid(v, np.array([[0, 1, 2], [0, 2, 3]]), spacing=1.0)
    ok = ~np.isnan(g["z"])
    assert ok.sum() >= 19 * 9 and np.allclose(g["z"][ok], g["x"][ok], atol=1e-6)
    assert g["y"][0, 0] < g["y"][-1, 0]  # row 0 is the lowest y (the chin), as in Bosphorus


def test_bnt_tree_loads_as_the_face(tmp_path, model):
    from affectvlm.data.synth import write_synth_tree
    from affectvlm.scan import load_scan

    cfg = SynthConfig.preset("easy", seed=1, num_subjects=1)
    write_synth_tree(tmp_path, "bosphorus", cfg, model, labels=("surprise",), progress=False)
    scan = load_scan(next(tmp_path.glob("bs000/bs000_E_SURPRISE_0.bnt")))
    ref = SynthFER3D(cfg, model).scan(0, "surprise", 4)
    assert scan.num_vertices > 5000 and scan.texture is not None
    # the nose tip survives rasterising
    assert abs(scan.vertices[:, 2].max() - ref.vertices[:, 2].max()) < 1.0
