"""A scan's familiarity (`Prediction.familiarity`) and the floor under which it is noted (train/familiarity.py).

What it must do: measure a scan's cosine similarity to the nearest of the model's own labels whatever labels it is
scored against, note a scan (and a sequence, by its frames) under `config.familiarity_floor` and no other, and the
tool must write a percentile of validation scans' familiarity into a copy of a checkpoint. What the shipped floors
note (shapes that pass the face tests, and no example face) is asserted in tests/test_hostile.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from affectvlm import AffectVLMModel
from affectvlm.predictor import UNFAMILIAR_NOTE, AffectVLMPredictor
from affectvlm.testing import tiny_config, tiny_processor
from train import familiarity

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCAN = EXAMPLES / "scan_subject0_happiness.ply"
SEQUENCE = EXAMPLES / "sequence_subject3_happiness.zip"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    AffectVLMModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


def noted(result) -> bool:
    return any(note.startswith(UNFAMILIAR_NOTE.split("(")[0]) for note in result.notes)


def test_familiarity_is_the_similarity_to_the_nearest_trained_label_whatever_the_labels(checkpoint):
    predictor = AffectVLMPredictor.from_pretrained(checkpoint)
    result = predictor(scan=SCAN, labels=["a person in pain", "calm"])
    views = predictor.processor(images=predictor.render_scan(SCAN)[None])["pixel_values"]
    _, trained = predictor.class_embeddings(None)
    embeds = predictor.model.score(views, trained).embeds
    expected = float((embeds.float() @ trained.float().T).max())
    assert result.familiarity == pytest.approx(expected, abs=1e-5)
    assert predictor(scan=SCAN).familiarity == pytest.approx(result.familiarity, abs=1e-6)
    assert result.to_dict()["familiarity"] == result.familiarity


@pytest.mark.parametrize("kind, sample", [("scan", SCAN), ("sequence", SEQUENCE)])
def test_a_sample_is_noted_only_under_the_floor(checkpoint, kind, sample):
    predictor = AffectVLMPredictor.from_pretrained(checkpoint)
    config = predictor.model.config
    found = predictor(**{kind: sample}).familiarity
    for floor, expected in ((None, False), (found - 0.01, False), (found + 0.01, True)):
        config.familiarity_floor = floor
        result = predictor(**{kind: sample})
        assert noted(result) is expected, (floor, found, result.notes)


def test_given_views_get_no_familiarity(checkpoint):
    predictor = AffectVLMPredictor.from_pretrained(checkpoint)
    predictor.model.config.familiarity_floor = 1.0
    views = sorted(EXAMPLES.glob("views_subject1_disgust_*.png"))
    result = predictor(images=[views[0], views[1], views[2]])
    assert result.familiarity is None and not noted(result)


def test_floor_report_counts_the_scans_under_the_floor_and_the_accuracy_either_side():
    familiar = np.array([0.05, 0.2, 0.3, 0.08])
    right = np.array([False, True, True, True])
    assert familiarity.floor_report(familiar, right, 0.1) == {
        "scans": 4, "under_floor": 2, "accuracy_under": 0.5, "accuracy_rest": 1.0, "accuracy_all": 0.75,
    }  # fmt: skip


def served_faces(config, identities: int = 10, per: int = 10, seed: int = 0) -> familiarity.Served:
    """What `measure` returns for `identities` x `per` validation faces of a model with `config`: familiarity
    spread evenly, the first ten wrong, embeddings about one point per label."""
    rng = np.random.default_rng(seed)
    n, labels = identities * per, list(config.label_names)
    label = np.array([labels[i % len(labels)] for i in range(n)])
    centres = rng.normal(size=(len(labels), config.projection_dim))
    embeds = centres[[labels.index(x) for x in label]] + 0.3 * rng.normal(size=(n, config.projection_dim))
    return familiarity.Served(
        np.linspace(0.0, 0.99, n), np.arange(n) >= 10, embeds, label, np.repeat(np.arange(identities), per)
    )


def test_the_tool_writes_the_percentile_into_a_copy_that_loads(checkpoint, tmp_path, monkeypatch):
    measured = served_faces(tiny_config())
    monkeypatch.setattr(familiarity, "measure", lambda predictor, seed, subjects: measured)
    out = tmp_path / "floored"
    result = familiarity.main(["--model", str(checkpoint), "--out", str(out), "--percentile", "10"])
    assert result["floor"] == pytest.approx(np.percentile(measured.familiar, 10), abs=1e-4)
    assert result["under_floor"] == 10 and result["accuracy_under"] == 0.0 and result["accuracy_rest"] == 1.0
    assert json.loads((out / "config.json").read_text())["familiarity_floor"] == result["floor"]
    assert json.loads((checkpoint / "config.json").read_text()).get("familiarity_floor") is None  # kept as it was
    loaded = AffectVLMPredictor.from_pretrained(out)
    assert loaded.model.config.familiarity_floor == result["floor"]
    # and the face distance beside it, its ceiling the 97.5th percentile of the left-out identities' distances
    distance = result["face_distance"]
    assert distance["ceiling"] == loaded.face_distance.ceiling and distance["percentile"] == 97.5
    assert distance["identities"] == 10 and distance["faces"] + distance["ceiling_faces"] == 100
    assert AffectVLMPredictor.from_pretrained(checkpoint).face_distance is None  # kept as it was
    with pytest.raises(SystemExit, match="differ"):
        familiarity.main(["--model", str(checkpoint), "--out", str(checkpoint)])
    # with no distance percentile, a copy of a checkpoint that had one carries none
    again = familiarity.main(["--model", str(out), "--out", str(tmp_path / "again"), "--distance-percentile", "0"])
    assert again["face_distance"]["ceiling"] is None
    assert AffectVLMPredictor.from_pretrained(tmp_path / "again").face_distance is None
