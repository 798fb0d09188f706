"""Answers of the shipped models beyond the six plain words: never-trained words, action units, what the model
makes of a label, the MIT-clean model by name, where on the face the answer came from (library and CLI).

Faces: the committed examples (SynthFER-3D faces of identities no shipped model trained on; the expression is in
the file name) and, when the ICT FaceKit is installed, ICT faces built from known action units.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from faces import KNOWN_WRONG_HELD_OUT_WORDS, marked_known

from affectvlm.predictor import CHECKPOINTS, DEFAULT_MODEL, AffectVLMPredictor, shipped_models
from affectvlm.vocabulary import HELD_OUT_VOCABULARY

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
EXAMPLE_SCANS = sorted(EXAMPLES.glob("scan_*.ply"))
MIT_MODEL = "affectvlm-ict"

pytestmark = pytest.mark.skipif(
    not (CHECKPOINTS / DEFAULT_MODEL / "config.json").is_file(), reason="no shipped default checkpoint"
)


def truth_of(path: Path) -> str:
    return next(e for e in EMOTIONS if e in path.stem)


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


def test_the_shipped_checkpoints_are_listed_default_first():
    names = shipped_models()
    assert names[0] == DEFAULT_MODEL and MIT_MODEL in names


@pytest.mark.parametrize("path", marked_known(EXAMPLE_SCANS, KNOWN_WRONG_HELD_OUT_WORDS), ids=lambda p: p.stem)
def test_never_trained_words_name_the_expression(predictor, path):
    """Each class described only by words no training prompt contains (all of its held-out words)."""
    labels = {e: list(HELD_OUT_VOCABULARY[e]) for e in EMOTIONS}
    result = predictor(scan=path, labels=labels)
    assert result.label == truth_of(path), result.scores()


@pytest.mark.parametrize("path", EXAMPLE_SCANS, ids=lambda p: p.stem)
def test_the_mit_model_by_name_names_the_expression(path):
    mit = AffectVLMPredictor.from_pretrained(MIT_MODEL)
    assert Path(mit.source).name == MIT_MODEL and mit.card.get("license") == "mit"
    assert mit(scan=path, labels=EMOTIONS).label == truth_of(path)


def test_action_units_of_a_smile_and_of_surprise(predictor):
    """A smile raises the lip corners (AU12); surprise raises the brows (AU1, AU2) and drops the jaw (AU26)."""
    happy = predictor(scan=next(p for p in EXAMPLE_SCANS if "happiness" in p.stem))
    surprised = predictor(scan=next(p for p in EXAMPLE_SCANS if "surprise" in p.stem))
    assert happy.action_units is not None and len(happy.action_units) >= 20
    au = {name.split()[0]: p for name, p in happy.action_units.items()}
    su = {name.split()[0]: p for name, p in surprised.action_units.items()}
    assert au["AU12"] > su["AU12"] and au["AU12"] > 0.5
    assert su["AU2"] > au["AU2"] and su["AU26"] > au["AU26"]


def test_what_the_model_makes_of_labels(predictor):
    """Paraphrases land on their emotion, a plain-words AU description on its AU, unrelated words are flagged."""
    labels = ["heartbroken", "scared stiff", "grossed out", "a person in pain", "brows lowered", "spreadsheet",
              "a parking lot"]  # fmt: skip
    checks = {c.label: c for c in predictor.check_labels(labels)}
    for label, nearest in [("heartbroken", "sadness"), ("scared stiff", "fear"), ("grossed out", "disgust"),
                           ("brows lowered", "AU4 brow lowerer")]:  # fmt: skip
        assert checks[label].nearest == nearest and checks[label].understood, checks[label].note
    # Pain is no one basic emotion (its face lowers the brows, tightens the lids and raises the upper lip): it must
    # be understood as a negative emotion, not flagged as unrelated (it once scored 0.000); all-mpnet-base-v2
    # places it between anger and sadness (0.486 / 0.483), MiniLM by sadness.
    pain = checks["a person in pain"]
    assert pain.understood and pain.nearest in ("anger", "sadness", "fear", "disgust"), pain.note
    assert not checks["spreadsheet"].understood and not checks["a parking lot"].understood
    # words the tokenizer reads as several [UNK]s (Chinese for happiness, sadness, anger) tie exactly in the scores:
    # they were once reported understood, each by AU6
    for check in predictor.check_labels(["快乐", "悲伤", "愤怒", "😀 joy"]):
        assert not check.understood and check.unknown_words and "does not know" in check.note, check


def test_label_check_on_words_it_was_not_tuned_on(predictor):
    """The panel's floor is set from the validation words and `UNRELATED_WORDS`; on the held-out words (idioms
    included) and on other unrelated things it must still tell them apart. (The comparison served before, a bare
    word against "a face showing <emotion>.", understood 0.80 of the held-out words and put "frown" by disgust
    and "gasp" by AU28 lip suck.)"""
    from affectvlm.vocabulary import HELD_OUT_VOCABULARY

    held_out = [w for words in HELD_OUT_VOCABULARY.values() for w in words]
    objects = ["a wooden chair", "lawnmower", "photosynthesis", "the weather forecast", "spaghetti",
               "a red bicycle helmet", "income statement", "granite", "a cup of coffee", "the moon landing",
               "laptop charger", "tuesday", "orange juice", "a mountain range", "the periodic table", "basketball",
               "umbrella", "a traffic light", "screwdriver", "elephant"]  # fmt: skip
    understood = {c.label: c.understood for part in (held_out, objects) for c in predictor.check_labels(part)}
    assert np.mean([understood[w] for w in held_out]) >= 0.9
    assert not any(understood[w] for w in objects), [w for w in objects if understood[w]]
    faces = {c.label: c for c in predictor.check_labels(["smile", "frown", "scowl", "gasp", "raised eyebrows"])}
    assert [faces[w].nearest for w in ("smile", "frown", "scowl", "gasp")] == [
        "happiness", "sadness", "anger", "surprise"]  # fmt: skip
    assert faces["raised eyebrows"].nearest.startswith(("AU1 ", "AU2 ")) and all(c.understood for c in faces.values())


@pytest.mark.parametrize("name", [DEFAULT_MODEL, MIT_MODEL])
def test_never_trained_words_land_by_their_trained_class(name):
    """Each held-out word's class embedding (what a face is scored against) lies by its own class's trained
    embedding: the shipped models draw it towards the trained classes whose words it resembles
    (`text_anchor_weight`, chosen on the validation words). With the projection alone the mean cosine is 0.83
    (default) and 0.85 (MIT model); anchored, 0.92 and 0.93."""
    from affectvlm.prompts import inference_prompts

    model = AffectVLMPredictor.from_pretrained(name)
    assert model.model.config.text_anchor_weight > 0
    labels = list(model.model.config.label_names)
    trained = model.model.encode_prompts(inference_prompts(labels), model.processor.tokenizer).float()
    own = {True: [], False: []}
    for anchored in own:
        for label, words in HELD_OUT_VOCABULARY.items():
            embeds = model.model.encode_prompts(inference_prompts(list(words)), model.processor.tokenizer,
                                                anchored=anchored)  # fmt: skip
            own[anchored] += (embeds.float() @ trained[labels.index(label)]).tolist()
    assert np.mean(own[True]) >= 0.9 and np.mean(own[True]) >= np.mean(own[False]) + 0.06, {
        k: np.mean(v) for k, v in own.items()}  # fmt: skip


def test_explanation_from_the_library_and_the_cli(predictor, tmp_path):
    path = next(p for p in EXAMPLE_SCANS if "happiness" in p.stem)
    result = predictor(scan=path, explain=True)
    rel = result.relevance
    assert rel.label == result.label and rel.vertex_relevance.shape == (len(result.scan.vertices),)
    # A smile: the explanation points at the mouth. Of the most relevant vertices (the top 5 %, what the
    # overlay paints red), at least half lie in the mouth band (20 % of the vertices) and at most a quarter on
    # the forehead (15 %). (A band's mean relevance says less: the chin and jaw in the mouth band carry none.)
    v = result.scan.vertices
    mouth = (v[:, 1] < np.percentile(v[:, 1], 30)) & (v[:, 1] > np.percentile(v[:, 1], 10))
    forehead = v[:, 1] > np.percentile(v[:, 1], 85)
    top = rel.vertex_relevance >= np.percentile(rel.vertex_relevance, 95)
    assert mouth[top].mean() >= 0.5 and forehead[top].mean() <= 0.25, (
        mouth[top].mean(),
        forehead[top].mean(),
    )
    out = tmp_path / "relevance.glb"
    run = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(path), "--explain", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["label"] == result.label and out.stat().st_size > 1000


def test_the_surface_explanation_reaches_the_cli(predictor, tmp_path):
    """`--explain-hide surface` paints what the library's `explain_hide="surface"` computes, not the default's.
    The library side is a fresh predictor, as the CLI's process has: a predictor that has encoded other prompts
    first (the module's, after the never-trained words) can differ in the last bit of a text feature (the frozen
    encoder's memo keeps each prompt as first batched), and a colour of the file by one level."""
    path = next(p for p in EXAMPLE_SCANS if "anger" in p.stem)
    surface = AffectVLMPredictor.from_pretrained()(scan=path, explain=True, explain_hide="surface")
    default = predictor(scan=path, explain=True)
    assert surface.label == default.label == truth_of(path)
    assert not np.allclose(surface.relevance.vertex_relevance, default.relevance.vertex_relevance, atol=1e-3)
    surface.relevance.write_glb(tmp_path / "library.glb")
    out = tmp_path / "cli.glb"
    run = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(path), "--explain", str(out), "--explain-hide", "surface"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_bytes() == (tmp_path / "library.glb").read_bytes()


def test_after_warm_up_the_first_request_waits_for_no_text_encoding(monkeypatch):
    """The app warms its predictor at start: a scan scored on the default labels, its action units and the label
    check then need no prompt encoded (with all-mpnet-base-v2 on a CPU that took seconds on the first request)."""
    fresh = AffectVLMPredictor.from_pretrained()
    fresh.warm_up()
    monkeypatch.setattr(fresh.model, "encode_prompts", lambda *a, **k: pytest.fail("a prompt encoded after warm_up"))
    result = fresh(scan=EXAMPLE_SCANS[0])
    assert result.label == truth_of(EXAMPLE_SCANS[0]) and result.action_units
    assert [c.label for c in fresh.check_labels()] == fresh.default_labels
