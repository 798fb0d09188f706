"""train/train.py's end of run: what the saved model is served with beyond its weights, written into its config.

What it must do: write the text anchors with train/text_anchors.py's defaults where they fit the model (a
pretrained text encoder) and say why not elsewhere; write a familiarity floor that is `train.familiarity_percentile`
of the familiarity of the run's validation samples (never the test ones) exactly as `AffectVLMPredictor` computes
it for those views (its serving dtype, mirror-image averaging), none at 0; record both in results.json. And
train/familiarity.py `--cache` fits the floor on a render cache's samples (a run's validation subjects with
`--run`) the same way. The runs are the `tiny` config's, 3 steps, as real subprocesses (as tests/test_train.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_cv import LABELS, write_cache
from transformers import AutoTokenizer

from affectvlm import AffectVLMConfig, AffectVLMModel, face_distance
from affectvlm.predictor import AffectVLMPredictor
from affectvlm.prompt_features import FILENAME
from affectvlm.prompts import inference_prompts
from affectvlm.testing import tiny_config, tiny_processor, tiny_text_encoder
from train import familiarity
from train.config import load_config
from train.data import ToyViews, build_dataset, fold_of, split_dataset
from train.evaluate import Embedded, embed_views
from train.text_anchors import DEFAULT_TEMPERATURE, DEFAULT_WEIGHT, anchor_groups

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT / "examples" / "scan_subject0_happiness.ply"


def run_train(out: Path, *settings: str) -> dict:
    """A 3-step tiny run as a user runs train/train.py; its results.json."""
    cmd = [sys.executable, str(ROOT / "train" / "train.py"), "--config", "tiny", "--output-dir", str(out),
           "--no-progress", "--set", "train.max_steps=3", "--set", "train.eval_every=3"]  # fmt: skip
    for setting in settings:
        cmd += ["--set", setting]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def floored(tmp_path_factory) -> Path:
    """A run of the tiny CLIP (its text tower trained from scratch) with mirror-image averaging on."""
    out = tmp_path_factory.mktemp("floored")
    run_train(out, "model.affectvlm.mirror_average=true")
    return out


def validation_samples(run: Path):
    """The run's validation samples, rebuilt from its config.yaml, and checked against its results.json's fold."""
    config = load_config(str(run / "config.yaml"))
    dataset = build_dataset(config)
    fold = fold_of(config, dataset.subjects, dataset.persons)
    _, val, test = split_dataset(dataset, fold)
    result = json.loads((run / "results.json").read_text())
    assert sorted(set(val.subjects)) == sorted(result["fold"]["val"]) and not set(val.subjects) & set(test.subjects)
    return val


def familiarity_as_served(predictor: AffectVLMPredictor, views: torch.Tensor) -> np.ndarray:
    """Familiarity of views through train/evaluate.py's `embed_views` (the model's own fusion, not `score`) on the
    predictor's model as served, and the predictor's own familiarity function."""
    return predictor.familiarity(embed_views(predictor.model, predictor.processor, views))


def test_the_floor_is_the_percentile_of_the_validation_samples_familiarity_as_served(floored):
    result = json.loads((floored / "results.json").read_text())
    val = validation_samples(floored)
    predictor = AffectVLMPredictor.from_pretrained(floored / "model")  # the serving dtype of this machine
    assert predictor.model.config.mirror_average
    views = val.__getitems__(list(range(len(val))))["views"]
    familiar = familiarity_as_served(predictor, views)
    floor = predictor.model.config.familiarity_floor
    assert floor == pytest.approx(np.percentile(familiar, 5), abs=1e-3)
    served = result["served"]["familiarity"]
    assert served["floor"] == floor and served["percentile"] == 5 and served["validation_samples"] == len(val) == 12
    assert served["under_floor"] == int((familiar < floor).sum())
    # the mirror images count: without them the validation samples read otherwise (so the match above means it)
    predictor.model.config.mirror_average = False
    assert np.abs(familiarity_as_served(predictor, views) - familiar).max() > 1e-3
    # the floor is written as saved (the config.json of the checkpoint)
    assert json.loads((floored / "model" / "config.json").read_text())["familiarity_floor"] == floor
    # 12 validation samples are too few for a face distance in 32 dimensions: the run says so and writes none
    assert "twice as many as the 32 dimensions" in served["face_distance"]["skipped"]
    assert not (floored / "model" / face_distance.FILENAME).exists() and predictor.face_distance is None


def test_with_enough_validation_faces_the_run_writes_a_face_distance_of_its_own_model(floored, tmp_path):
    """`fit_floor` on 20 persons' samples (240) writes the face distance beside the weights: fitted on the
    embeddings the predictor serves, it puts those samples within reach of its ceiling and a sample that is no face
    of these (all black views) far beyond it; with no percentile it takes any fit away."""
    folder = tmp_path / "model"
    shutil.copytree(floored / "model", folder)
    config = AffectVLMConfig.from_pretrained(folder)
    data = ToyViews(config.label_names, config.view_names, num_subjects=20, image_size=32, seed=3)
    record = familiarity.fit_floor(folder, data, 5, distance_percentile=97.5, progress=False)
    distance = record["face_distance"]
    assert (folder / face_distance.FILENAME).is_file() and distance["identities"] == 20
    predictor = AffectVLMPredictor.from_pretrained(folder)
    assert predictor.face_distance.ceiling == distance["ceiling"]
    assert predictor.face_distance.labels == sorted(config.label_names)
    items = data.__getitems__(list(range(len(data))))
    embeds, _ = familiarity.served_embeddings(predictor, items["views"])
    within = predictor.face_distance(embeds) <= distance["ceiling"]
    assert within.mean() > 0.9 and distance["noted"] == int((~within).sum())
    black, _ = familiarity.served_embeddings(predictor, np.zeros_like(items["views"][:1]))
    assert predictor.face_distance(black)[0] > 2 * distance["ceiling"]
    assert familiarity.fit_floor(folder, data, 5, distance_percentile=0, progress=False)["face_distance"]["skipped"]
    assert not (folder / face_distance.FILENAME).exists()


def test_the_train_side_embedding_is_the_predictors_for_a_scan(floored):
    """train/familiarity.py `served_embeddings` on a scan's rendered views gives the familiarity that the predictor
    gives that scan, in its serving dtype and with its mirror images."""
    predictor = AffectVLMPredictor.from_pretrained(floored / "model")
    expected = predictor(scan=SCAN).familiarity
    views = torch.as_tensor(predictor.render_scan(SCAN))[None]
    embeds, probs = familiarity.served_embeddings(predictor, views)
    assert float(predictor.familiarity(embeds)[0]) == pytest.approx(expected, abs=1e-3)
    assert float(familiarity_as_served(predictor, views)[0]) == pytest.approx(expected, abs=1e-3)
    assert probs.shape == (1, len(predictor.default_labels))


def test_a_model_with_a_clip_text_tower_gets_no_anchors_and_the_run_says_why(floored):
    result = json.loads((floored / "results.json").read_text())
    assert "text tower is 'clip'" in result["served"]["text_anchors"]["skipped"]
    config = AffectVLMConfig.from_pretrained(floored / "model")
    assert config.text_anchors is None and config.text_anchor_weight == 0.0
    assert result["served"]["prompt_features"] == 0 and not (floored / "model" / FILENAME).exists()


def test_a_pretrained_text_encoder_gets_the_default_anchors_and_percentile_0_no_floor(tmp_path):
    encoder = tiny_text_encoder(tmp_path / "text", hidden_size=32)
    out = tmp_path / "run"
    result = run_train(
        out, "model.affectvlm.text_backbone=pretrained", f"model.affectvlm.text_model_name_or_path={encoder}",
        "train.familiarity_percentile=0",
    )  # fmt: skip
    config = AffectVLMConfig.from_pretrained(out / "model")
    labels = list(config.label_names)
    assert config.text_anchors == anchor_groups(labels)
    assert (config.text_anchor_weight, config.text_anchor_temperature) == (DEFAULT_WEIGHT, DEFAULT_TEMPERATURE)
    anchors = result["served"]["text_anchors"]
    assert anchors["classes"] == len(anchor_groups(labels)) and anchors["weight"] == DEFAULT_WEIGHT
    assert anchors["groups"] == sum(len(g) for g in anchor_groups(labels).values())
    assert config.familiarity_floor is None
    # the prompts served by default are encoded once, here, not at every start of the CLI or the app
    assert result["served"]["prompt_features"] > len(labels) and (out / "model" / FILENAME).is_file()
    assert result["served"]["familiarity"]["floor"] is None and result["served"]["familiarity"]["percentile"] == 0
    # the saved model loads with its anchors on: a never-trained word moves, a trained label does not
    model = AffectVLMModel.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    word = ["facial expression: livid."]
    assert not torch.allclose(model.encode_prompts(word, tok), model.encode_prompts(word, tok, anchored=False))
    own = inference_prompts(labels)
    torch.testing.assert_close(model.encode_prompts(own, tok), model.encode_prompts(own, tok, anchored=False))


def test_percentile_0_removes_a_floor_fitted_on_other_weights(floored, tmp_path):
    """A fine-tuned checkpoint carries its floor; with no percentile the run leaves none."""
    folder = tmp_path / "model"
    shutil.copytree(floored / "model", folder)
    assert AffectVLMConfig.from_pretrained(folder).familiarity_floor is not None
    val = validation_samples(floored)
    for percentile in (0, None):
        record = familiarity.fit_floor(folder, val, percentile, progress=False)
        assert record["floor"] is None and "skipped" in record
        assert AffectVLMConfig.from_pretrained(folder).familiarity_floor is None


def test_config_knobs_are_checked():
    assert load_config("tiny")["train"]["familiarity_percentile"] == 5
    assert load_config("tiny")["train"]["text_anchors"] is True
    for bad in ("train.familiarity_percentile=50", "train.familiarity_percentile=-1", "train.text_anchors=1"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            load_config("tiny", [bad])
    assert load_config("tiny", ["train.familiarity_percentile=null"])["train"]["familiarity_percentile"] is None


@pytest.fixture(scope="module")
def cache_checkpoint(tmp_path_factory):
    """A tiny checkpoint over test_train_cv's labels, with mirror images, and a render cache of 6 subjects."""
    folder = tmp_path_factory.mktemp("tiny")
    AffectVLMModel(tiny_config(label_names=LABELS, mirror_average=True)).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder, write_cache(tmp_path_factory.mktemp("cache") / "cache", 6)


def test_familiarity_cache_fits_the_floor_on_a_caches_samples(cache_checkpoint, tmp_path):
    checkpoint, cache = cache_checkpoint
    out = tmp_path / "floored"
    result = familiarity.main(["--model", str(checkpoint), "--out", str(out), "--cache", str(cache),
                               "--percentile", "10"])  # fmt: skip
    predictor = AffectVLMPredictor.from_pretrained(checkpoint)
    every = Embedded(predictor.model, predictor.processor, cache)  # train/evaluate.py's own reading of a cache
    familiar = predictor.familiarity(every.fused)
    assert result["scans"] == len(familiar) == len(every.entries) and result["caches"] == [str(cache)]
    assert result["floor"] == pytest.approx(np.percentile(familiar, 10), abs=1e-3)
    assert AffectVLMConfig.from_pretrained(out).familiarity_floor == result["floor"]
    assert AffectVLMConfig.from_pretrained(checkpoint).familiarity_floor is None  # the original is kept
    # --run: only the run's validation subjects
    run = tmp_path / "results.json"
    run.write_text(json.dumps({"fold": {"val": ["S001", "S004"], "train": [], "test": []}}))
    result = familiarity.main(["--model", str(checkpoint), "--out", str(out), "--cache", str(cache),
                               "--run", str(run), "--percentile", "10"])  # fmt: skip
    mine = [i for i, e in enumerate(every.entries) if e["subject"] in ("S001", "S004")]
    assert result["scans"] == len(mine) > 0
    assert result["floor"] == pytest.approx(np.percentile(familiar[mine], 10), abs=1e-3)
    with pytest.raises(SystemExit, match="needs --cache"):
        familiarity.main(["--model", str(checkpoint), "--out", str(out), "--run", str(run)])
