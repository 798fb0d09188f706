"""A checkpoint's companion (`affectvlm.companion`): a normal-map model whose reading of the same normalised scan is
mixed into the main model's answer, for scans and sequences only, through every door that loads a checkpoint."""

import json
import shutil

import numpy as np
import pytest
from faces import example_face

from affectvlm.companion import FILENAME, pool, read_settings
from affectvlm.predictor import AffectVLMPredictor, InputError, random_demo_model
from affectvlm.scan import Scan


def _save(folder, seed, mode):
    model, processor = random_demo_model(seed)
    model.config.au_logit_bias = {"4": -0.5, "12": 0.3}  # reads two action units
    processor.render_settings = {"size": 64, "mode": mode, "crop_radius": 90.0, "frames": 4}
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A grey main model with a normal-map companion in its subfolder `normal_maps`, weight 0.4."""
    folder = _save(tmp_path_factory.mktemp("ckpt"), 0, "normal")
    _save(folder / "normal_maps", 1, "normal_map")
    (folder / FILENAME).write_text(json.dumps({"folder": "normal_maps", "weight": 0.4}))
    return folder


@pytest.fixture(scope="module")
def face():
    mean, faces, expressions = example_face()
    return Scan(mean + expressions, faces)


def test_pooling_is_the_weighted_geometric_mean():
    main, other = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    assert pool(main, other, 0.0) == pytest.approx(main, abs=1e-6)
    assert pool(main, other, 1.0) == pytest.approx(other, abs=1e-6)
    mixed = np.sqrt(main * other)
    assert pool(main, other, 0.5) == pytest.approx(mixed / mixed.sum(), abs=1e-6)


def test_a_scan_is_answered_by_both_models_reading_the_same_face(checkpoint, face):
    both = AffectVLMPredictor.from_pretrained(checkpoint)
    alone = AffectVLMPredictor.from_pretrained(checkpoint, companion=False)
    companion = AffectVLMPredictor.from_pretrained(checkpoint / "normal_maps")
    assert both.companion is not None and alone.companion is None
    assert both.companion.predictor.recipe.mode == "normal_map" and both.recipe.mode == "normal"
    labels = ["happiness", "sadness", "a person in pain"]
    main = alone(scan=face, labels=labels).probs
    # the companion draws the scan the main model normalised: the same as it drawing the file on its own
    other = companion(scan=face, labels=labels).probs
    assert not np.allclose(main, other, atol=1e-3)
    assert both(scan=face, labels=labels).probs == pytest.approx(pool(main, other, 0.4), abs=1e-4)


def test_each_views_reading_is_pooled_so_the_bars_agree_with_the_answer(checkpoint, face):
    """The per-view bars (app, CLI table, to_dict) show the pooled reading: each view's contributions are the two
    models' weighted, summing to the pooled answer's logits, and each view's probabilities are its two readings
    pooled, not the main model's alone."""
    both = AffectVLMPredictor.from_pretrained(checkpoint)
    alone = AffectVLMPredictor.from_pretrained(checkpoint, companion=False)(scan=face)
    other = AffectVLMPredictor.from_pretrained(checkpoint / "normal_maps")(scan=face)
    served = both(scan=face)
    mixed = 0.6 * alone.view_contributions + 0.4 * other.view_contributions
    assert served.view_contributions == pytest.approx(mixed, abs=1e-4)
    logits = served.view_contributions.sum(axis=0)
    assert np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum() == pytest.approx(served.probs, abs=1e-4)
    assert not np.allclose(served.view_probs, alone.view_probs, atol=1e-3)
    for v in range(len(served.view_names)):
        assert served.view_probs[v] == pytest.approx(pool(alone.view_probs[v], other.view_probs[v], 0.4), abs=1e-4)


def test_a_sequence_is_answered_by_both_and_given_images_by_the_main_model_alone(checkpoint):
    mean, faces, expressions = example_face()
    frames = [Scan(mean + w * expressions, faces) for w in np.linspace(0, 1, 5)]
    both = AffectVLMPredictor.from_pretrained(checkpoint)
    alone = AffectVLMPredictor.from_pretrained(checkpoint, companion=False)
    companion = AffectVLMPredictor.from_pretrained(checkpoint / "normal_maps")
    main, other = alone(sequence=frames).probs, companion(sequence=frames).probs
    assert both(sequence=frames).probs == pytest.approx(pool(main, other, 0.4), abs=1e-4)
    views = alone.render_scan(Scan(mean + expressions, faces))
    images = list(views)  # a user's own grey renders: the companion does not read them
    assert both(images=images).probs == pytest.approx(alone(images=images).probs, abs=1e-6)


def test_action_units_are_pooled_in_log_odds(checkpoint, face):
    both = AffectVLMPredictor.from_pretrained(checkpoint)
    alone = AffectVLMPredictor.from_pretrained(checkpoint, companion=False)(scan=face).action_units
    other = AffectVLMPredictor.from_pretrained(checkpoint / "normal_maps")(scan=face).action_units
    served = both(scan=face).action_units
    assert len(served) == 2 and served.keys() == alone.keys() == other.keys()
    assert not np.allclose(list(alone.values()), list(other.values()), atol=1e-3)
    for au, p in served.items():
        odds = 0.6 * np.log(alone[au] / (1 - alone[au])) + 0.4 * np.log(other[au] / (1 - other[au]))
        assert p == pytest.approx(1 / (1 + np.exp(-odds)), abs=1e-4)


def test_an_explanation_explains_the_pooled_answer(checkpoint, face):
    """Each occlusion window hides the same pixels of both models' views, and the logit explained is the pooled
    one, `(1 - w) main + w companion`: the relevance is the two models' own relevances so weighted, and the
    explanation's probabilities are the answer as served."""
    from affectvlm.explain import explain, explain_views

    both = AffectVLMPredictor.from_pretrained(checkpoint)
    served = explain(both, face, label="sadness")
    assert served.probs == pytest.approx(both(scan=face).probs, abs=1e-5)
    maps = []
    for predictor in (both, both.companion.predictor):
        names, embeds = predictor.class_embeddings(None)
        views = predictor.recipe.views_of([served.scan])[0]
        maps.append(explain_views(predictor.model, predictor.processor, views, embeds, names.index("sadness")))
    assert not np.allclose(maps[0], maps[1], atol=1e-3)
    assert served.view_maps == pytest.approx((0.6 * maps[0] + 0.4 * maps[1]).numpy(), abs=1e-4)
    through_call = both(scan=face, explain="sadness").relevance
    assert through_call.view_maps == pytest.approx(served.view_maps, abs=1e-4)


def test_each_frame_of_a_sequence_is_read_by_both_as_the_scan_door_would_read_it(checkpoint):
    """The frame-by-frame plot pools each frame's two readings, as the frame given alone as a scan is answered, and
    draws the frames with the sequence's facing (before, the frames were drawn with the face found anew)."""
    mean, faces, expressions = example_face()
    frames = [Scan(mean + w * expressions, faces) for w in np.linspace(0, 1, 5)]
    both = AffectVLMPredictor.from_pretrained(checkpoint)
    alone = AffectVLMPredictor.from_pretrained(checkpoint, companion=False)(sequence=frames)
    other = AffectVLMPredictor.from_pretrained(checkpoint / "normal_maps")(sequence=frames)
    served = both(sequence=frames)
    assert not np.allclose(alone.frame_probs, other.frame_probs, atol=1e-3)
    for frame, main, own, number in zip(served.frame_probs, alone.frame_probs, other.frame_probs, served.frame_numbers):
        assert frame == pytest.approx(pool(main, own, 0.4), abs=1e-4)
        assert frame == pytest.approx(both(scan=frames[number - 1]).probs, abs=1e-4)
    turned = both(sequence=frames, facing="-z")  # drawn from behind, as the user said
    picked = [frames[n - 1] for n in turned.frame_numbers]
    want = both.recipe_facing("-z").views_of(picked)[:, 0].numpy()
    assert not np.array_equal(want, served.frames) and np.array_equal(turned.frames, want)


def test_the_pipeline_answers_as_the_predictor_with_its_companion(checkpoint, face):
    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=str(checkpoint), trust_remote_code=True)
    rows = classifier(scan=face, candidate_labels=["happiness", "sadness"])
    assert classifier._affectvlm_predictor().companion is not None
    both = AffectVLMPredictor.from_pretrained(checkpoint, dtype=classifier.model.dtype)
    expected = both(scan=face, labels=["happiness", "sadness"]).scores()
    assert {row["label"]: row["score"] for row in rows} == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("settings", "fault"),
    [
        ({"folder": "../elsewhere", "weight": 0.5}, "subfolder"),
        ({"folder": "/abs", "weight": 0.5}, "subfolder"),
        ({"folder": "normal_maps", "weight": 1.5}, "weight"),
        ({"folder": "normal_maps", "weight": True}, "weight"),
    ],
)
def test_a_companion_file_that_points_outside_or_weighs_wrongly_is_refused(tmp_path, settings, fault):
    (tmp_path / FILENAME).write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=fault):
        read_settings(tmp_path)


def test_a_companion_that_draws_scans_otherwise_is_refused(tmp_path):
    folder = _save(tmp_path / "main", 0, "normal")
    companion = _save(folder / "normal_maps", 1, "normal_map")
    settings = json.loads((companion / "processor_config.json").read_text())
    settings["render_settings"]["crop_radius"] = 60.0  # another crop: it would read another face
    (companion / "processor_config.json").write_text(json.dumps(settings))
    (folder / FILENAME).write_text(json.dumps({"folder": "normal_maps", "weight": 0.5}))
    with pytest.raises(ValueError, match="draws scans"):
        AffectVLMPredictor.from_pretrained(folder)


def test_a_missing_companion_folder_is_named(tmp_path):
    folder = _save(tmp_path / "main", 0, "normal")
    (folder / FILENAME).write_text(json.dumps({"folder": "normal_maps", "weight": 0.5}))
    with pytest.raises(InputError, match="normal_maps"):
        AffectVLMPredictor.from_pretrained(folder)


def test_a_checkpoint_is_published_with_its_companion(checkpoint, tmp_path, face):
    """`hub/push.py` and `hub/space.py` copy the companion settings and the subfolder's weights, processor and
    tokenizer (never its pickles or logs); the published folder answers as the checkpoint does."""
    from hub.common import COMPANION, copy_checkpoint

    assert COMPANION == FILENAME
    source = tmp_path / "ckpt"
    shutil.copytree(checkpoint, source)
    (source / "normal_maps" / "optimizer.bin").write_bytes(b"\x00")
    left_out = copy_checkpoint(source, tmp_path / "out")
    published = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {FILENAME, "normal_maps/config.json", "normal_maps/model.safetensors",
            "normal_maps/processor_config.json", "normal_maps/tokenizer.json"} <= published  # fmt: skip
    assert "normal_maps/optimizer.bin" not in published and "normal_maps/" not in left_out
    labels = ["happiness", "sadness"]
    served = AffectVLMPredictor.from_pretrained(tmp_path / "out")
    assert served.companion is not None
    expected = AffectVLMPredictor.from_pretrained(checkpoint)(scan=face, labels=labels).probs
    assert served(scan=face, labels=labels).probs == pytest.approx(expected, abs=1e-5)


def test_the_fit_and_report_tool_weighs_the_companion_by_its_validation_answers(tmp_path):
    """train/companion.py on a toy cache given as both renders: the companion's temperature is the one that fits its
    own validation NLL, the weight one of its grid, and the report's figures are the pooled argmax of the two
    models' served probabilities."""
    import torch
    from test_evaluate import LABELS, write_cache

    from affectvlm import AffectVLMModel
    from affectvlm.testing import tiny_config, tiny_processor
    from train import companion as tool
    from train.metrics_calibration import fit_temperature, softmax

    for seed, name in ((0, "main"), (1, "other")):
        torch.manual_seed(seed)
        model = AffectVLMModel(tiny_config(label_names=LABELS)).eval()
        model.save_pretrained(tmp_path / name)
        tiny_processor().save_pretrained(tmp_path / name)
    cache = write_cache(tmp_path / "cache")
    pair = f"{cache}={cache}"
    fitted = tool.main(["--model", str(tmp_path / "main"), "--companion", str(tmp_path / "other"), "--fit", pair,
                        "--out", str(tmp_path / "served")])  # fmt: skip
    predictors = [AffectVLMPredictor.from_pretrained(tmp_path / n, companion=False) for n in ("main", "other")]
    pair_embedded = tool.Pair(*predictors, str(cache), str(cache))
    rows = pair_embedded.where(LABELS)
    main, other = pair_embedded.logits(predictors, rows)
    y = pair_embedded.truth(LABELS, rows)
    assert fitted["temperature"] == pytest.approx(fit_temperature(other, y), abs=1e-3)
    assert fitted["weight"] in tool.WEIGHTS
    settings = json.loads((tmp_path / "served" / FILENAME).read_text())
    assert settings["weight"] == fitted["weight"] and (tmp_path / "served" / "normal_maps" / "model.safetensors").is_file()
    report = tool.main(["--model", str(tmp_path / "served"), "--report", f"set={pair}", "--out", str(tmp_path / "r.json")])
    pooled = pool(softmax(main), softmax(other, fitted["temperature"]), fitted["weight"])
    assert report["set"]["served"]["all"] == pytest.approx(float((pooled.argmax(-1) == y).mean()), abs=1e-4)
    assert report["set"]["main"]["all"] == pytest.approx(float((main.argmax(-1) == y).mean()), abs=1e-4)
    assert report["set"]["compound_samples"] == 1 and "compound_times_chance" in report["set"]["served"]


def test_a_hub_companion_that_cannot_be_fetched_leaves_the_main_model_answering(monkeypatch):
    """Offline, with the subfolder not in the local cache: a warning naming it, and no companion (no network here:
    the fetch is made to fail as huggingface_hub fails offline)."""
    import huggingface_hub

    from affectvlm import companion
    from affectvlm.scan.recipe import ScanRecipe

    monkeypatch.setattr(companion, "read_settings", lambda source: {"folder": "normal_maps", "weight": 0.5})

    def offline(*args, **kwargs):
        raise OSError("cannot reach the Hub and the files are not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.warns(UserWarning, match="normal_maps/.*the main model answers alone"):
        assert companion.load("someone/affectvlm", ScanRecipe()) is None


def test_the_shipped_default_answers_through_pipeline_with_its_companion():
    """The shipped default through `pipeline()` on the committed example scans: each reads its truth, the sad ICT
    face among them, which the main model alone reads as fear: the pipeline's answer depends on its companion."""
    from pathlib import Path

    from transformers import pipeline

    from affectvlm.predictor import DEMO_CHECKPOINT

    emotions = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    sad = Path(__file__).resolve().parents[1] / "examples" / "scan_ict_subject5_sadness.ply"
    assert AffectVLMPredictor.from_pretrained(companion=False)(scan=sad, labels=emotions).label == "fear"
    classifier = pipeline("zero-shot-image-classification", model=str(DEMO_CHECKPOINT), trust_remote_code=True)
    for path in sorted(sad.parent.glob("scan_*.ply")):
        rows = classifier(scan=str(path), candidate_labels=emotions)
        assert rows[0]["label"] == path.stem.rsplit("_", 1)[1], (path.name, rows[:2])
