"""Action units: the catalogue, the emotion recipes, the ICT and SFM bindings and the sampler.

Geometry checks load the ICT FaceKit file (../shared/ict/ict_facekit.npz) directly with numpy and are skipped
without it; the SFM premise check also needs the Surrey Face Model and scipy.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from affectvlm.data.aus import (
    AU_CATALOGUE,
    AU_NUMBERS,
    BASIC_LABELS,
    COMPOUND_LABELS,
    ICT_AU_SHAPES,
    ICT_BINDING,
    LABELS,
    NEUTRAL,
    PROTOTYPES,
    SFM_BINDING,
    SOURCES,
    AUSampleConfig,
    au_description,
    is_evaluation_only,
    parse_au_code,
    sample_expression,
)
from affectvlm.data.sfm import EXPRESSION_NAMES

ROOT = Path(__file__).resolve().parents[1]
# $AFFECTVLM_ICT_DIR when set (as affectvlm.data.ict reads it), else ../shared/ict beside the checkout
ICT_NPZ = (
    Path(os.environ.get("AFFECTVLM_ICT_DIR") or ROOT.parent / "shared" / "ict").expanduser()
    / "ict_facekit.npz"
)
DU_COMPOUNDS = {
    "happily_surprised", "happily_disgusted", "sadly_fearful", "sadly_angry", "sadly_surprised",
    "sadly_disgusted", "fearfully_angry", "fearfully_surprised", "fearfully_disgusted", "angrily_surprised",
    "angrily_disgusted", "disgustedly_surprised", "appalled", "hatred", "awed",
}  # fmt: skip
# Multi-PIE 68-landmark indices (0-based); the subject's left is +x in the ICT model
BROW_R, BROW_L, INNER_BROWS = list(range(17, 22)), list(range(22, 27)), [21, 22]
CORNER_R, CORNER_L, CHIN = 48, 54, 8


@pytest.fixture(scope="module")
def ict():
    """The ICT FaceKit arrays, in mm: neutral (N, 3), expressions (53, N, 3), names, landmarks68, and where
    the face region's vertices stop."""
    if not ICT_NPZ.is_file():
        pytest.skip(f"no {ICT_NPZ}: the ICT FaceKit npz (../shared/ict/README.md says how it is built)")
    d = np.load(ICT_NPZ)
    to_mm = float(d["to_mm"])
    return {
        "neutral": d["neutral"].astype(np.float64) * to_mm,
        "expressions": d["expressions"].astype(np.float64) * to_mm,
        "names": [str(n) for n in d["expression_names"]],
        "lm": d["landmarks68"],
        "face_stop": int(d["region_ranges"][list(d["region_names"]).index("face")][1]),
    }


def ict_face(ict, au_weights, asymmetry=0.0) -> np.ndarray:
    """Vertices (mm) of the ICT neutral face showing `au_weights`: neutral + sum w * expressions."""
    w = ICT_BINDING.weight_vector(ict["names"], au_weights, asymmetry)
    return ict["neutral"] + np.tensordot(w.astype(np.float64), ict["expressions"], axes=1)


def landmark_motion(ict, au_weights, asymmetry=0.0) -> np.ndarray:
    """(68, 3) landmark displacement (mm) of `au_weights` from the neutral face."""
    return (ict_face(ict, au_weights, asymmetry) - ict["neutral"])[ict["lm"]]


# --- catalogue and recipes -------------------------------------------------------------------------------


def test_catalogue_numbers_names_and_descriptions_are_unique():
    assert all(number == au.number for number, au in AU_CATALOGUE.items())
    assert AU_NUMBERS == tuple(sorted(AU_CATALOGUE))
    for attr in ("name", "description"):
        values = [getattr(au, attr).strip().lower() for au in AU_CATALOGUE.values()]
        assert all(values) and len(set(values)) == len(values), attr
    assert au_description(4) == "brows lowered and drawn together"
    with pytest.raises(KeyError):
        au_description(3)


def test_parse_au_code():
    assert parse_au_code("1+2+5B+R20+26") == (
        (1, 1.0, ""),
        (2, 1.0, ""),
        (5, 0.4, ""),
        (20, 1.0, "R"),
        (26, 1.0, ""),
    )
    assert parse_au_code("") == ()
    for bad in ("1+x", "1+3", "12+12", "5F"):
        with pytest.raises(ValueError):
            parse_au_code(bad)


def test_every_recipe_uses_catalogue_aus_and_cites_a_source():
    assert set(LABELS) == set(PROTOTYPES) and len(LABELS) == len(set(LABELS))
    for label, proto in PROTOTYPES.items():
        codes = [v.code for v in proto.variants]
        assert len(set(codes)) == len(codes), f"{label}: repeated variant"
        assert len({frozenset(v.aus) for v in proto.variants}) == len(codes), f"{label}: two equal variants"
        for v in proto.variants:
            assert v.au_set <= set(AU_CATALOGUE), (label, v.code)
            assert v.source in SOURCES, (label, v.source)


def test_basic_emotions_have_several_literature_variants():
    assert BASIC_LABELS == EXPRESSION_NAMES
    for label in BASIC_LABELS:
        variants = PROTOTYPES[label].variants
        assert len(variants) >= 4, label
        assert any(v.source == "EFH2002" for v in variants), f"{label}: no EMFACS prototype"
    codes = {label: {v.code for v in PROTOTYPES[label].variants} for label in BASIC_LABELS}
    assert {"6+12"} <= codes["happiness"]
    assert {"1+4+15", "1+4+15B+17", "6+15"} <= codes["sadness"]
    assert {"1+2+5B+26", "1+2+5B+27", "1+2+5B", "1+2+26"} <= codes["surprise"]
    assert {"1+2+4+5+7+20+26", "1+2+4+5+20+25"} <= codes["fear"]
    assert {"4+5+7+10+22+23+25", "4+5+7+17+24", "4+5+7+23"} <= codes["anger"]
    assert {"9", "10", "9+17"} <= codes["disgust"]


def test_compound_labels_are_evaluation_only_and_basic_ones_are_not():
    assert set(COMPOUND_LABELS) == DU_COMPOUNDS
    assert all(is_evaluation_only(label) for label in COMPOUND_LABELS)
    assert not any(is_evaluation_only(label) for label in (*BASIC_LABELS, NEUTRAL))
    assert {v.code for v in PROTOTYPES["happily_surprised"].variants} >= {"1+2+12+25"}
    assert {v.code for v in PROTOTYPES["fearfully_surprised"].variants} == {"1+2+5+20+25"}
    assert all(
        v.source.startswith("DTM2014") for label in COMPOUND_LABELS for v in PROTOTYPES[label].variants
    )
    with pytest.raises(ValueError, match="unknown label"):
        is_evaluation_only("contempt")


# --- the ICT binding -------------------------------------------------------------------------------------


def test_ict_binding_covers_the_catalogue_and_names_real_shapes(ict):
    assert set(ICT_AU_SHAPES) == set(AU_CATALOGUE)
    missing = sorted(set(ICT_BINDING.shape_names) - set(ict["names"]))
    assert not missing, f"bound shapes not in the ICT model: {missing}"
    assert ICT_BINDING.shape_weights({28: 1.0}) == {"mouthRollLower": 1.0, "mouthRollUpper": 1.0}


def test_ict_shape_weights_split_sides_and_clip():
    assert ICT_BINDING.shape_weights({12: 0.5}) == {"mouthSmile_L": 0.5, "mouthSmile_R": 0.5}
    assert ICT_BINDING.shape_weights({12: 0.5}, asymmetry=1.0) == {"mouthSmile_L": 1.0}
    assert ICT_BINDING.shape_weights({12: 0.5}, asymmetry={12: -0.5}) == {
        "mouthSmile_L": 0.25,
        "mouthSmile_R": 0.75,
    }
    # a midline shape takes the mean of the sides; contributions add up and clip at 1
    assert ICT_BINDING.shape_weights({26: 0.5}, asymmetry=1.0) == {"jawOpen": pytest.approx(0.35 * 0.5)}
    assert ICT_BINDING.shape_weights({25: 1.0, 26: 1.0, 27: 1.0})["jawOpen"] == 1.0
    # a shape the table drives above 1 (AU4's browDown at 2x) clips at its gain instead
    assert ICT_BINDING.shape_weights({4: 0.75}) == {"browDown_L": 1.5, "browDown_R": 1.5}
    assert ICT_BINDING.shape_weights({4: 1.0}, asymmetry=1.0) == {"browDown_L": 2.0}
    with pytest.raises(KeyError):
        ICT_BINDING.shape_weights({3: 1.0})


def test_ict_au12_pulls_the_mouth_corners_up_and_out(ict):
    d = landmark_motion(ict, {12: 1.0})
    for corner, outwards in ((CORNER_L, 1.0), (CORNER_R, -1.0)):
        assert 5.0 < d[corner, 1] < 20.0, d[corner]  # up by several mm
        assert 3.0 < outwards * d[corner, 0] < 15.0, d[corner]  # and outwards
    assert np.abs(d[BROW_L + BROW_R]).max() < 0.5  # brows stay put


def test_ict_brow_aus_move_the_brows(ict):
    lowered = landmark_motion(ict, {4: 1.0})
    assert (lowered[BROW_L + BROW_R, 1] < -0.5).all() and lowered[INNER_BROWS, 1].mean() < -2.0, lowered
    assert lowered[BROW_L, 0].mean() < -1.0 < 1.0 < lowered[BROW_R, 0].mean()  # drawn together
    raised = landmark_motion(ict, {1: 1.0})
    assert (raised[INNER_BROWS, 1] > 2.0).all(), raised[INNER_BROWS]
    assert np.abs(raised[[CORNER_L, CORNER_R, CHIN]]).max() < 0.5


def test_ict_jaw_aus_open_the_mouth_in_increasing_steps(ict):
    drops = [-landmark_motion(ict, {au: 1.0})[CHIN, 1] for au in (25, 26, 27)]
    assert 1.0 < drops[0] < drops[1] < drops[2], drops
    assert 5.0 < drops[1] < 20.0 and drops[2] > 20.0, drops
    frown = landmark_motion(ict, {15: 1.0})
    assert (frown[[CORNER_L, CORNER_R], 1] < -3.0).all()


def test_ict_asymmetry_moves_one_side(ict):
    d = landmark_motion(ict, {12: 1.0}, asymmetry=1.0)  # the subject's left only
    assert d[CORNER_L, 1] > 5.0 and abs(d[CORNER_R, 1]) < 0.5


# --- the SFM binding -------------------------------------------------------------------------------------


def test_sfm_binding_gives_each_basic_variant_its_own_emotion():
    for label in BASIC_LABELS:
        for v in PROTOTYPES[label].variants:
            weights = SFM_BINDING.shape_weights({au: level for au, level, _ in v.aus})
            assert max(weights, key=weights.get) == label, (label, v.code, weights)
            assert all(0 < w <= 1 for w in weights.values()) and set(weights) <= set(EXPRESSION_NAMES)
    assert SFM_BINDING.shape_weights({}) == {}
    assert SFM_BINDING.shape_weights({6: 1.0, 12: 1.0}, asymmetry=1.0) == SFM_BINDING.shape_weights(
        {6: 1.0, 12: 1.0}
    )


def test_sfm_binding_mixes_the_components_of_a_compound():
    weights = SFM_BINDING.shape_weights({1: 1.0, 2: 1.0, 12: 1.0, 25: 1.0})  # happily surprised
    top2 = sorted(weights, key=weights.get)[-2:]
    assert set(top2) == {"happiness", "surprise"}, weights
    realised = SFM_BINDING.realised_aus(weights)
    assert {1, 2, 12} <= set(realised) and 45 not in realised


def _fit_nonnegative(a, b):
    from scipy.optimize import nnls

    return nnls(a, b)[0]


def test_sfm_blendshapes_measured_au_content_is_nearest_their_own_emotion(sfm_dir, ict):
    """The SFM binding's premise, measured as its docstring says: ICT neutral aligned to the SFM mean on the
    iBUG landmarks, nearest-vertex correspondence, each SFM blendshape fitted with the ICT AU shapes."""
    pytest.importorskip("scipy")
    sfm = np.load(sfm_dir / "sfm_3448.npz")
    text = (sfm_dir / "ibug_to_sfm.txt").read_text()
    pairs = np.array([[int(a) - 1, int(b)] for a, b in re.findall(r"^\s*(\d+)\s*=\s*(\d+)", text, re.M)])
    p, q = ict["neutral"][ict["lm"][pairs[:, 0]]], sfm["mean"][pairs[:, 1]].astype(np.float64)
    u, s, vt = np.linalg.svd((p - p.mean(0)).T @ (q - q.mean(0)))
    rot, scale = u @ vt, s.sum() / ((p - p.mean(0)) ** 2).sum()
    face_stop = ict["face_stop"]
    face = ict["neutral"][:face_stop]  # the ICT face region
    aligned = (face - p.mean(0)) @ rot * scale + q.mean(0)
    nearest = np.array([np.argmin(((aligned - x) ** 2).sum(1)) for x in sfm["mean"]])
    keep = np.linalg.norm(aligned[nearest] - sfm["mean"], axis=1) < 3.0
    deltas = [
        (ict_face(ict, {au: 1.0}) - ict["neutral"])[:face_stop][nearest[keep]] @ rot * scale
        for au in AU_NUMBERS
    ]
    basis = np.stack([d.ravel() for d in deltas], 1)
    measured = np.stack([_fit_nonnegative(basis, sfm["expressions"][k][keep].ravel()) for k in range(6)])
    assumed = SFM_BINDING.content.T  # (6, AUs)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    cos = unit(measured) @ unit(assumed).T
    own = np.diag(cos)
    print("cosine(measured, assumed):\n", cos.round(2))
    assert (cos.argmax(1) == np.arange(6)).sum() >= 5, cos.round(2)
    assert own.mean() > cos[~np.eye(6, dtype=bool)].mean() + 0.2, cos.round(2)


# --- the sampler -----------------------------------------------------------------------------------------


def test_sampling_is_deterministic_from_the_generator():
    for label in ("anger", "fear", "happily_surprised", NEUTRAL):
        a = sample_expression(label, np.random.default_rng([7, 1]), 0.8)
        b = sample_expression(label, np.random.default_rng([7, 1]), 0.8)
        assert a == b and a.to_dict() == b.to_dict()
    draws = {tuple(sample_expression("fear", np.random.default_rng(s)).au_vector()) for s in range(10)}
    assert len(draws) == 10


def test_variants_differ_and_all_get_drawn():
    proto = PROTOTYPES["surprise"]
    rng = np.random.default_rng(0)
    seen = {sample_expression("surprise", rng).variant for _ in range(300)}
    assert seen == set(range(len(proto.variants)))
    quiet = AUSampleConfig(distractors=0.0, blink_prob=0.0)
    sets = [
        frozenset(sample_expression("surprise", rng, config=quiet, variant=i).au_weights)
        for i in range(len(proto.variants))
    ]
    assert len(set(sets)) == len(sets)
    assert sets[0] == {1, 2, 5, 26}


def test_sample_weights_follow_the_recipe():
    cfg = AUSampleConfig(distractors=0.0, blink_prob=0.0)
    rng = np.random.default_rng(3)
    for _ in range(50):
        s = sample_expression("surprise", rng, intensity=0.8, config=cfg, variant=0)  # 1+2+5B+26
        w = s.au_weights
        assert set(w) == {1, 2, 5, 26} == s.recipe_aus
        assert 0.8 * 0.5 < w[1] <= 1.0 and 0.4 * 0.8 * 0.5 < w[5] < 0.4 * 0.8 * 2.0
        assert all(abs(a) < 0.6 for a in s.asymmetry.values())  # mild
        assert s.source == "EFH2002" and s.code == "1+2+5B+26" and not s.evaluation_only
    assert sample_expression("sadly_angry", rng).evaluation_only


def test_sides_round_trip_and_vectors():
    s = sample_expression("happiness", np.random.default_rng(5), config=AUSampleConfig(asymmetry=0.3))
    for au, w in s.au_weights.items():
        a = s.asymmetry[au]
        assert w * (1 + a) == pytest.approx(s.left.get(au, 0.0)) and w * (1 - a) == pytest.approx(
            s.right.get(au, 0.0)
        )
    vec = s.au_vector()
    assert vec.shape == (len(AU_NUMBERS),) and vec[AU_NUMBERS.index(12)] == pytest.approx(s.au_weights[12])
    assert s.shape_weights(ICT_BINDING) == ICT_BINDING.shape_weights(s.au_weights, s.asymmetry)


def test_unilateral_aus_stay_on_one_side():
    fear = [v.code for v in PROTOTYPES["fear"].variants].index("1+2+4+5+R20+25")
    sides = set()
    for seed in range(20):
        s = sample_expression(
            "fear", np.random.default_rng(seed), config=AUSampleConfig(distractors=0.0), variant=fear
        )
        assert (20 in s.left) != (20 in s.right)
        sides.add(20 in s.left)
    assert sides == {True, False}  # mirrored in some samples


def test_neutral_has_near_zero_weights():
    cfg = AUSampleConfig(blink_prob=0.0)
    for seed in range(30):
        s = sample_expression(NEUTRAL, np.random.default_rng(seed), config=cfg)
        assert not s.recipe_aus
        assert all(w <= cfg.distractor_weight for w in s.au_weights.values()), s
        assert all(w < 0.25 for w in (*s.left.values(), *s.right.values())), s
    quiet = sample_expression(NEUTRAL, np.random.default_rng(0), config=cfg.replace(distractors=0.0))
    assert quiet.au_weights == {}


def test_blinks_sometimes_but_not_with_raised_lids():
    always = AUSampleConfig(blink_prob=1.0)
    assert 45 in sample_expression("happiness", np.random.default_rng(0), config=always).au_weights
    assert (
        45 not in sample_expression("surprise", np.random.default_rng(0), config=always, variant=0).au_weights
    )
    blinks = [45 in sample_expression("sadness", np.random.default_rng(s)).au_weights for s in range(400)]
    assert 0 < sum(blinks) < 100


def test_bad_arguments_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown label"):
        sample_expression("contempt", rng)
    with pytest.raises(IndexError):
        sample_expression("happiness", rng, variant=99)
    with pytest.raises(ValueError):
        sample_expression("happiness", rng, intensity=-1)
    with pytest.raises(ValueError):
        AUSampleConfig(blink_prob=2.0)


def test_recorded_aus_reads_real_records_only():
    from affectvlm.data.aus import recorded_aus

    assert recorded_aus({"aus": {"12": 0.8, 4: 0.2, "AU45": 1.0}}) == {12: 0.8, 4: 0.2, 45: 1.0}
    assert recorded_aus({"aus": {}}) == {}  # neutral: no AU active, still a record
    assert recorded_aus({"aus": {12: 0.8}, "aus_nominal": True}) is None  # the SFM blend binding's
    assert recorded_aus({"blendshapes": {"anger": 1.0}}) is None and recorded_aus(None) is None
