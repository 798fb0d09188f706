"""The face distance (`affectvlm.face_distance`): how far a scan's embedding lies from the validation faces of the
nearest expression, and the note it gives beyond its ceiling.

What it must do: measure the distance in the covariance the faces have (a step along a direction in which faces
never vary counts more than the same step along one in which they do), set the ceiling from identities the fit did
not see, survive a save and a load, pass over a damaged or foreign file, and, where a checkpoint carries it, decide
the predictor's "looks like none of the faces" note in place of the familiarity floor, for scans and sequences. What
the shipped fits note (shapes that pass the face tests, and no example face) is asserted in tests/test_hostile.py."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_familiarity import EXAMPLES, SCAN, SEQUENCE, noted

from affectvlm import AffectVLMModel, face_distance
from affectvlm.predictor import AffectVLMPredictor
from affectvlm.testing import tiny_config, tiny_processor
from hub.common import FACE_DISTANCE


def faces(n_people: int = 20, per: int = 30, seed: int = 0):
    """Two expressions in 8 dimensions; faces vary widely along the first four and hardly along the last four."""
    rng = np.random.default_rng(seed)
    labels = np.array(["happiness", "sadness"] * (n_people * per // 2))
    groups = np.repeat(np.arange(n_people), per)
    spread = np.r_[np.full(4, 1.0), np.full(4, 0.05)]
    means = {"happiness": np.r_[5.0, np.zeros(7)], "sadness": np.r_[-5.0, np.zeros(7)]}
    embeds = np.stack([means[x] for x in labels]) + rng.normal(size=(len(labels), 8)) * spread
    return embeds, labels, groups, means


def test_a_step_along_which_faces_never_vary_is_far_and_the_ceiling_is_set_on_unseen_identities():
    embeds, labels, groups, means = faces()
    fitted = face_distance.fit(embeds, labels, groups, percentile=97.5)
    assert fitted.labels == ["happiness", "sadness"]
    np.testing.assert_allclose(fitted.means, np.stack([means["happiness"], means["sadness"]]), atol=0.2)
    along_wide, along_thin = means["happiness"].copy(), means["happiness"].copy()
    along_wide[1] += 2.0
    along_thin[6] += 2.0
    near, far = fitted(np.stack([along_wide, along_thin]))
    assert near < fitted.ceiling < far and far > 2.5 * near
    # the ceiling: the 97.5th percentile of the identities the means and covariance were not fitted on
    held = np.isin(groups, np.arange(1, 20, 2))
    assert fitted.ceiling == pytest.approx(np.percentile(fitted(embeds[held]), 97.5), abs=1e-4)
    assert fitted.record["faces"] == fitted.record["ceiling_faces"] == 300 and fitted.record["identities"] == 20
    # a sample is as far as its nearest expression: the sad mean is 0 from sadness
    assert fitted(means["sadness"][None])[0] < 1.0


def test_too_few_faces_or_identities_cannot_be_fitted():
    embeds, labels, groups, _ = faces(n_people=3, per=30)
    with pytest.raises(ValueError, match="4 identities"):
        face_distance.fit(embeds, labels, groups)
    embeds, labels, groups, _ = faces(n_people=4, per=3)
    with pytest.raises(ValueError, match="twice as many"):
        face_distance.fit(embeds, labels, groups)


def test_a_saved_fit_loads_as_it_was_and_a_damaged_or_foreign_one_is_passed_over(tmp_path):
    embeds, labels, groups, _ = faces()
    fitted = face_distance.fit(embeds, labels, groups, record={"fitted_on": "test"})
    assert face_distance.save(fitted, tmp_path).name == FACE_DISTANCE == face_distance.FILENAME
    loaded = face_distance.load(tmp_path, dim=8)
    assert loaded.labels == fitted.labels and loaded.ceiling == fitted.ceiling and loaded.record == fitted.record
    np.testing.assert_allclose(loaded(embeds[:50]), fitted(embeds[:50]), rtol=1e-5)
    with pytest.warns(UserWarning, match="8-dimensional embeddings, not this model's 16"):
        assert face_distance.load(tmp_path, dim=16) is None
    (tmp_path / FACE_DISTANCE).write_bytes(b"\x00" * 64)
    with pytest.warns(UserWarning, match=f"{FACE_DISTANCE} passed over") as caught:
        assert face_distance.load(tmp_path, dim=8) is None
    assert str(tmp_path) not in str(caught[0].message)
    face_distance.remove(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert face_distance.load(tmp_path, dim=8) is None


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    AffectVLMModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return AffectVLMPredictor.from_pretrained(folder)


def around(embeds: torch.Tensor, ceiling: float) -> face_distance.FaceDistance:
    """A fit whose one class mean is `embeds`' (the identity covariance), so a sample's distance is known."""
    mean = embeds.float().numpy().mean(axis=0, keepdims=True)
    return face_distance.FaceDistance(mean, np.eye(mean.shape[1]), ["happiness"], ceiling)


@pytest.mark.parametrize("kind, sample", [("scan", SCAN), ("sequence", SEQUENCE)])
def test_where_a_checkpoint_has_the_fit_the_distance_decides_the_note_not_the_floor(predictor, kind, sample):
    predictor.face_distance = None
    plain = predictor(**{kind: sample})
    assert plain.face_distance is None and "face_distance" not in plain.to_dict()
    if kind == "scan":
        embeds = predictor.model.score(
            predictor.processor(images=predictor.render_scan(SCAN)[None])["pixel_values"],
            predictor.class_embeddings(None)[1],
        ).embeds
    else:  # a sequence is judged by its nearest pooled frame; frame 0 here
        frames = predictor.prepare_sequence(SEQUENCE)[2]
        embeds = predictor.frame_scores(frames, predictor.class_embeddings(None)[1])[2][:1]
    try:
        for ceiling, expected in ((0.5, False), (-0.5, True)):
            predictor.face_distance = around(embeds, ceiling)
            predictor.model.config.familiarity_floor = -1.0 if expected else 1.0  # the floor would say the opposite
            result = predictor(**{kind: sample})
            assert result.face_distance == pytest.approx(0.0, abs=1e-3)
            assert noted(result) is expected, (ceiling, result.notes)
            assert result.to_dict()["face_distance"] == result.face_distance
        assert "distance 0.0 from its validation faces, over -0.5" in " ".join(result.notes)
    finally:
        predictor.face_distance, predictor.model.config.familiarity_floor = None, None


def test_given_views_get_no_distance(predictor):
    predictor.face_distance = face_distance.FaceDistance(np.zeros((1, 32)), np.eye(32), ["happiness"], -1.0)
    try:
        views = sorted(EXAMPLES.glob("views_subject1_disgust_*.png"))
        result = predictor(images=views)
        assert result.face_distance is None and not noted(result)
    finally:
        predictor.face_distance = None


@pytest.mark.parametrize("name", ["affectvlm-cpu", "affectvlm-ict"])
def test_each_shipped_model_carries_a_fit_of_its_own_validation_faces(name):
    predictor = AffectVLMPredictor.from_pretrained(name)
    fitted = predictor.face_distance
    assert fitted is not None and fitted.record["fitted_on"] == {"seed": 13, "subjects": 160}
    assert fitted.labels == sorted(predictor.default_labels)
