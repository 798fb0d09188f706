import os
import subprocess
import sys

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


# --- SynthFER-3D v2: face models, action units, labels, realism --------------------------------------------

# The v1 generator's output (recorded before v2 was written): vertex and face counts, sha256 of the faces,
# the vertex sums and the colour sum of a few scans and one 6-frame sequence. v2 must not change a thing.
V1_FINGERPRINTS = {
    ("default", "scan", 0, "neutral", 0): (
        2333,
        4479,
        "ddd610b7fccf",
        (6214.39, -20269.71, -17555.92),
        1255748,
    ),
    ("default", "scan", 1, "happiness", 4): (
        2421,
        4634,
        "a8f2ba36ce47",
        (-39161.59, -54992.88, 22705.67),
        1257072,
    ),
    ("default", "scan", 2, "fear", 2): (
        12635,
        24851,
        "3f58942a6f0d",
        (-584328.09, -225914.18, -499783.04),
        7385258,
    ),
    ("default", "seq", 1, "surprise", 6): (
        2584,
        4989,
        "f4b364b1c975",
        (-86051.93, -680435.77, 166558.74),
        1342178,
    ),
    ("hard", "scan", 1, "happiness", 4): (
        7497,
        14453,
        "bd643d84a7cb",
        (101456.17, -92139.17, -341742.44),
        3929357,
    ),
    ("hard", "seq", 1, "surprise", 6): (
        2646,
        5099,
        "63117e07fc14",
        (527767.83, -471323.7, -1025792.52),
        1387100,
    ),
}
V1_CONFIGS = {
    "default": SynthConfig(seed=0, num_subjects=4),
    "hard": SynthConfig.preset("hard", seed=7, num_subjects=3),
}


def _fingerprint(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> tuple:
    import hashlib

    n = vertices.shape[-2]
    sums = vertices.astype(np.float64).reshape(-1, 3).sum(0)
    return (
        n,
        len(faces),
        hashlib.sha256(faces.tobytes()).hexdigest()[:12],
        sums,
        int(colors.astype(np.int64).sum()),
    )


def test_sfm_defaults_generate_what_v1_generated(model):
    gens = {name: SynthFER3D(cfg, model) for name, cfg in V1_CONFIGS.items()}
    for (name, what, subject, label, n), expected in V1_FINGERPRINTS.items():
        if what == "scan":
            s = gens[name].scan(subject, label, n)
            got = _fingerprint(s.vertices, s.faces, s.colors)
        else:
            q = gens[name].sequence(subject, label, num_frames=n)
            got = _fingerprint(q.frames, q.faces, q.colors)
        assert got[:3] == expected[:3] and got[4] == expected[4], (name, what, subject, label)
        assert np.allclose(got[3], expected[3], rtol=1e-6, atol=0.05), (name, what, subject, label)
    # the config's dict (cache folder names, tree READMEs) and the listings are v1's
    assert (
        set(SynthConfig().to_dict()) == set(V1_CONFIGS["default"].to_dict())
        and "face_model" not in SynthConfig().to_dict()
    )
    assert SynthConfig.preset("easy").to_dict().keys() == SynthConfig().to_dict().keys()
    gen = gens["default"]
    assert len(gen.static_items()) == 4 * 25 and len(gen.sequence_items()) == 4 * 6
    meta = gen.scan(0, "anger", 3).metadata
    assert meta["face_model"] == "sfm" and "non-commercial" in meta["licence"] and "aus" not in meta


@pytest.fixture(scope="module")
def ict_model():
    from test_data_ict import ICT_HOW_TO, ict_folder

    from affectvlm.data.ict import ICT_NPZ, load_ict

    if not (ict_folder() / ICT_NPZ).is_file():
        pytest.skip(f"no {ICT_NPZ} in {ict_folder()}: {ICT_HOW_TO}")
    return load_ict(ict_folder())


def test_v2_config_round_trips_and_validates():
    from affectvlm.data.aus import AUSampleConfig

    cfg = SynthConfig(
        face_model="both",
        expressions="aus",
        neutral=True,
        compound=True,
        au_sampling=AUSampleConfig(distractors=0.0),
    )
    assert (
        SynthConfig(**cfg.to_dict()) == cfg
        and cfg.face_model_of(0) == "sfm"
        and cfg.face_model_of(3) == "ict"
    )
    for bad in (dict(face_model="flame"), dict(expressions="shapes"), dict(blink_rate=-1.0)):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


def test_ict_and_both_are_deterministic_and_consistent(model, ict_model):
    both = SynthConfig(seed=5, num_subjects=4, face_model="both")
    a, b = SynthFER3D(both, model, ict_model), SynthFER3D(both, model, ict_model)
    b.scan(3, "fear", 2)  # something else first changes nothing
    s1, s2 = a.scan(1, "happiness", 3), b.scan(1, "happiness", 3)
    assert (
        s1.subject.face_model == "ict"
        and np.array_equal(s1.vertices, s2.vertices)
        and np.array_equal(s1.faces, s2.faces)
    )
    assert s1.metadata == s2.metadata == a.sample_metadata(1, "happiness", 3)
    q1, q2 = a.sequence(1, "surprise", num_frames=6), b.sequence(1, "surprise")
    assert np.array_equal(q1.frames, q2.frames[q1.frame_indices])
    # a subject's data depends on its index and face model, not on the rest of the set
    ict_only = SynthFER3D(both.replace(face_model="ict", num_subjects=2), None, ict_model).scan(
        1, "happiness", 3
    )
    sfm_only = SynthFER3D(both.replace(face_model="sfm"), model).scan(0, "sadness", 4)
    assert np.array_equal(ict_only.vertices, s1.vertices)
    assert np.array_equal(sfm_only.vertices, a.scan(0, "sadness", 4).vertices)
    c = SynthFER3D(both.replace(seed=6), model, ict_model).scan(1, "happiness", 3)
    assert c.vertices.shape != s1.vertices.shape or not np.allclose(c.vertices, s1.vertices)


_HASH_FACES = """
import hashlib, sys
from affectvlm.data.synth import SynthConfig, SynthFER3D
gen = SynthFER3D(SynthConfig(seed=5, num_subjects=6, face_model="both", neutral=True), sys.argv[1], sys.argv[2])
digest = hashlib.sha256()
for s in range(6):
    for label in ("neutral", "happiness"):
        digest.update(gen.scan(s, label, 3).vertices.tobytes())
print(digest.hexdigest())
"""


def test_generated_faces_do_not_depend_on_the_thread_count(sfm_dir, ict_model):
    """BLAS shares a long sum out differently on more threads, and the faces came out different in their last bits
    (now and then enough to tip a face's normalisation: a training cache's pixels depended on the machine). The
    same faces, to the bit, on one thread and on two."""
    from test_data_ict import ict_folder

    digests = set()
    for threads in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        argv = [sys.executable, "-c", _HASH_FACES, str(sfm_dir), str(ict_folder())]
        digests.add(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)
    assert len(digests) == 1


def test_metadata_records_face_model_licence_and_aus(model, ict_model):
    gen = SynthFER3D(
        SynthConfig(seed=2, num_subjects=2, face_model="both", expressions="aus"), model, ict_model
    )
    ict = gen.scan(1, "surprise", 4).metadata
    assert ict["face_model"] == "ict" and ict["licence"].startswith("MIT") and ict["expressions"] == "aus"
    assert ict["aus"] and all(isinstance(au, int) and 0 < w <= 1 for au, w in ict["aus"].items())
    assert (
        set(ict["aus"]) == set(ict["au_left"]) | set(ict["au_right"]) and ict["au_code"] and "variant" in ict
    )
    sfm = gen.scan(0, "happiness", 4).metadata
    assert sfm["face_model"] == "sfm" and sfm["aus_nominal"] and sfm["blendshapes"]["happiness"] > 0.5
    assert all(0 < w <= 1 for w in sfm["aus"].values()) and 12 in sfm["aus"] and sfm["aus_requested"]


def test_neutral_and_compound_options(model, ict_model, sfm_dir):
    from affectvlm.data.aus import COMPOUND_LABELS
    from affectvlm.data.cache import plan_synth

    cfg = SynthConfig(seed=1, num_subjects=2, face_model="both", neutral=True, compound=True)
    gen = SynthFER3D(cfg, model, ict_model)
    assert len(gen.static_items()) == 2 * (25 + len(COMPOUND_LABELS))
    assert len(gen.sequence_items()) == 2 * (6 + 1 + len(COMPOUND_LABELS))
    compound = [it for it in gen.static_items() if it["evaluation_only"]]
    assert {it["label"] for it in compound} == set(COMPOUND_LABELS) and all(
        it["intensity"] == 4 for it in compound
    )
    scan = gen.scan(0, "happily_surprised", 4)  # an SFM subject: a compound goes through action units
    assert scan.metadata["evaluation_only"] and scan.metadata["expressions"] == "aus"
    seq = gen.sequence(1, "neutral", num_frames=4)
    assert seq.frames.shape[0] == 4 and not seq.metadata["evaluation_only"]
    items = plan_synth(cfg, "both", sfm_dir, ict_model.source)
    assert {it.metadata["face_model"] for it in items} == {"sfm", "ict"}
    assert sum(it.metadata["evaluation_only"] for it in items) == 2 * 2 * len(COMPOUND_LABELS)
    assert all("aus" in it.metadata for it in items if it.metadata["face_model"] == "ict")


def test_ict_sequence_moves_with_staggered_aus(ict_model):
    cfg = SynthConfig.preset(
        "easy", seed=3, num_subjects=1, face_model="ict", noise=0.0, head_motion=0.0, blink_rate=0.0
    )
    gen = SynthFER3D(cfg, None, ict_model)
    seq = gen.sequence(0, "happiness")
    apex = seq.phases["apex"]
    move = np.linalg.norm(seq.frames - seq.frames[0], axis=2).max(axis=1)  # (T,) largest vertex motion
    assert move[apex] > 5.0  # a smile moves the lip corners by several millimetres
    onset = move[seq.phases["onset"] : apex + 1]
    assert np.mean(np.diff(onset) >= -0.05) > 0.9 and onset[-1] > onset[0]  # rises through the onset
    shifts = seq.metadata["au_shift_s"]
    assert shifts and len(set(shifts.values())) == len(shifts)  # each AU on its own time
    blinking = SynthFER3D(cfg.replace(blink_rate=3.0), None, ict_model).sequence(0, "neutral")
    assert blinking.metadata["blinks"] >= 1


def test_realism_is_seeded_and_counted(tmp_path, model, ict_model, sfm_dir):
    realism = pytest.importorskip("affectvlm.data.realism")
    from affectvlm.data.cache import RenderCacheDataset, RenderSettings, prepare_cache

    cfg = SynthConfig(
        seed=4,
        num_subjects=2,
        face_model="both",
        realism=realism.RealismConfig.only("holes", "noise", "offset"),
    )
    gen = SynthFER3D(cfg, model, ict_model)
    a, b = gen.scan(1, "anger", 2), SynthFER3D(cfg, model, ict_model).scan(1, "anger", 2)
    assert a.realism == ("holes", "noise", "offset") and np.array_equal(a.vertices, b.vertices)
    clean = SynthFER3D(cfg.replace(realism=None), model, ict_model).scan(1, "anger", 2)
    assert len(a.vertices) < len(clean.vertices)
    frames = gen.sequence(0, "fear", num_frames=3).to_scans()
    shift = [f.vertices.mean(0) for f in frames]  # one offset for the whole take
    assert np.allclose(shift[0], shift[2], atol=5.0)
    small = cfg.replace(realism=realism.RealismConfig.only("holes"))
    folder = prepare_cache("synth", out=tmp_path, settings=RenderSettings(size=16, batch=50), synth_config=small,
                           synth_kind="4d", sfm_dir=sfm_dir, ict_dir=ict_model.source, progress=False)  # fmt: skip
    counts = RenderCacheDataset(folder).report()["counts"]
    assert counts["face_model"] == {"ict": 6, "sfm": 6} and counts["realism"] == {"holes": 12}


def test_identity_and_expression_warps_are_smooth_bounded_and_off_by_default(model):
    still = dict(
        seed=4, num_subjects=2, noise=0.0, outlier_fraction=0.0, holes_per_scan=0.0, missing_patch_prob=0.0,
        pose_jitter=(0.0, 0.0, 0.0), translation_jitter=0.0, subdivision_prob=0.0, crop_radius=(300.0, 300.0),
        crop_offset=0.0,
    )  # fmt: skip
    plain = SynthFER3D(SynthConfig(**still), model)
    assert "identity_warp" not in SynthConfig().to_dict()  # off: cache names and v1's data stay as they were
    shaped = SynthFER3D(SynthConfig(**still, identity_warp=3.0), model)
    moved = SynthFER3D(SynthConfig(**still, expression_warp=0.25), model)
    assert SynthConfig(**shaped.config.to_dict()) == shaped.config
    # the identity warp: one smooth deformation of the subject, whatever its expression
    a, b = (shaped.scan(1, label, 4).vertices - plain.scan(1, label, 4).vertices for label in ("neutral", "anger"))
    assert np.allclose(a, b, atol=1e-3) and 1.0 < np.abs(a).max() < 25.0
    # the expression warp: the same displacement, each vertex's times a gain within exp(-0.5)..exp(0.5)
    neutral = plain.identity_shape(0)
    d = plain.scan(0, "happiness", 4).vertices - neutral
    g = moved.scan(0, "happiness", 4).vertices - neutral
    big = np.linalg.norm(d, axis=1) > 1.0
    ratio = np.linalg.norm(g[big], axis=1) / np.linalg.norm(d[big], axis=1)
    assert ratio.min() > np.exp(-0.5) - 1e-3 and ratio.max() < np.exp(0.5) + 1e-3 and ratio.std() > 0.02
    q, r = plain.sequence(0, "surprise", num_frames=6), moved.sequence(0, "surprise", num_frames=6)
    assert np.allclose(q.frames[0], r.frames[0], atol=1e-3) and not np.allclose(q.frames, r.frames, atol=0.1)


def test_a_scans_shape_is_its_face_before_the_scanner(model, ict_model):
    """`SynthFER3D.shape` is the face `scan` captures: with a scanner that changes nothing (no pose, offset, noise,
    crop, holes or subdivision) the scan's vertices are the shape's, vertex by vertex, for both face models."""
    still = SynthConfig(
        seed=4, num_subjects=2, face_model="both", pose_jitter=(0.0, 0.0, 0.0), translation_jitter=0.0,
        subject_offset=0.0, noise=0.0, outlier_fraction=0.0, holes_per_scan=0.0, missing_patch_prob=0.0,
        subdivision_prob=0.0, crop_radius=(1e4, 1e4), crop_offset=0.0,
    )  # fmt: skip
    data = SynthFER3D(still, model, ict_model)
    for subject in range(2):
        for label, level in [("anger", 1), ("happiness", 4)]:
            shape = data.shape(subject, label, level)
            np.testing.assert_allclose(data.scan(subject, label, level).vertices, shape, atol=1e-4)
        moved = np.linalg.norm(data.shape(subject, "happiness", 4) - data.identity_shape(subject), axis=1)
        assert moved.max() > 5.0  # an expression, not the neutral face


def test_only_some_labels_list_the_same_samples_and_another_cache(model):
    """`only_labels` keeps the labels it names, each sample the one the full list has (more identities' neutral
    faces beside a full training set); the cache it renders gets its own folder, not the full set's."""
    from affectvlm.data.cache import RenderSettings, _folder_name

    full = SynthConfig(seed=5, num_subjects=3, neutral=True)
    only = full.replace(only_labels=["neutral"])  # a list, as --set only_labels='["neutral"]' gives it
    gen, few = SynthFER3D(full, model), SynthFER3D(only, model)
    assert only.only_labels == ("neutral",) and SynthConfig(**only.to_dict()) == only
    assert few.static_items() == [it for it in gen.static_items() if it["label"] == "neutral"]
    assert few.sequence_items() == [it for it in gen.sequence_items() if it["label"] == "neutral"]
    assert len(few.static_items()) == 3 and np.array_equal(few.scan(1, "neutral").vertices, gen.scan(1, "neutral").vertices)
    settings = RenderSettings(size=32)
    assert _folder_name("synth", settings, only, "3d", None) != _folder_name("synth", settings, full, "3d", None)
    assert "only_labels" not in full.to_dict()  # every cache made before the field keeps its folder
    with pytest.raises(ValueError, match="only_labels"):
        SynthConfig(only_labels=["calm"])
