"""train/evaluate.py on a small render cache: its accuracy is the model's own `score` on the same views, each
face model and kind is counted apart, the AU and compound sections are filled, the model's views are picked
from the cache's. A real dataset's cache (no face models, AU records or compounds) is scored by its entries'
own kind, sections it cannot fill are left out with a reason, and `--subjects` / `--subjects-from` keep only
some subjects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectvlm import AffectVLMModel
from affectvlm.prompts import inference_prompts
from affectvlm.testing import tiny_config, tiny_processor
from train.data import ToyViews

LABELS = ["anger", "happiness", "neutral"]


def write_toy_cache(folder: Path, describe, alter=None) -> Path:
    """ToyViews images in the render-cache format; `describe(subjects, labels, levels)` gives the entries,
    `alter(views, entries)` (optional) changes the (N, V, H, W, 3) images in place."""
    from affectvlm.data.cache import _write_index, _write_shard, label_vocabulary

    folder.mkdir(parents=True)
    toy = ToyViews(LABELS, num_subjects=4, image_size=32, intensities=2)
    batch = toy.__getitems__(list(range(len(toy))))
    labels = [LABELS[int(y)] for y in batch["labels"]]
    entries = describe(toy.subjects, labels, [m["intensity"] for m in toy._metadata])
    for i, e in enumerate(entries):
        e.update(key=f"k{i}", shard=0, row=i)
    views = batch["views"].numpy().copy()
    if alter is not None:
        alter(views, entries)
    _write_shard(folder, 0, list(views), entries, [])
    _write_index(folder, 1, label_vocabulary({e["label"] for e in entries}))
    (folder / "cache.json").write_text(json.dumps({"settings": {"size": 32}, "views": None}))
    return folder


def write_cache(folder: Path) -> Path:
    """SFM and ICT subjects, scans and sequences, AU records on the ICT ones, one compound expression."""

    def describe(subjects, labels, levels):
        entries = []
        for i, (s, label) in enumerate(zip(subjects, labels)):
            ict = int(s[-1]) % 2 == 1
            meta = {"face_model": "ict" if ict else "sfm"}
            if ict:
                meta["aus"] = {"happiness": {"12": 0.8}, "anger": {"4": 0.7}}.get(label, {})
            entries.append({"label": label, "subject": s, "intensity": 1, "metadata": meta,
                            "dataset": "synth4d" if i % 3 == 0 else "synth3d", "sequence": i % 3 == 0})  # fmt: skip
        entries[-1]["label"] = "happily_surprised"
        return entries

    return write_toy_cache(folder, describe)


def write_real_cache(folder: Path) -> Path:
    """A BU-3DFE-like cache: scans at intensity levels (neutral at 0); no face model, AUs or compounds; the
    last sample has a label no model knows (a Bosphorus action-unit code)."""

    def describe(subjects, labels, levels):
        entries = [{"label": label, "subject": s, "intensity": 0 if label == "neutral" else level,
                    "metadata": {"gender": "female"}, "dataset": "bu3dfe", "sequence": False}
                   for s, label, level in zip(subjects, labels, levels)]  # fmt: skip
        entries[-1]["label"] = "LFAU_12"
        return entries

    return write_toy_cache(folder, describe)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(label_names=LABELS, au_logit_bias={"4": 0.0, "12": 0.0})).eval()
    model.save_pretrained(root / "model")
    tiny_processor().save_pretrained(root / "model")
    return root, write_cache(root / "cache")


def own_right(model_dir: Path, cache: Path, subjects=None) -> tuple[np.ndarray, list[int]]:
    """Whether the model's own `score` is right on each of the cache's samples of its labels (of `subjects`),
    and their rows."""
    from affectvlm.data.cache import RenderCacheDataset

    model = AffectVLMModel.from_pretrained(model_dir).eval()
    processor = tiny_processor()
    data = RenderCacheDataset(cache, labels=[*LABELS, "happily_surprised"])
    keep = [i for i, e in enumerate(data.entries)
            if e["label"] in LABELS and (subjects is None or e["subject"] in subjects)]  # fmt: skip
    views = torch.from_numpy(np.ascontiguousarray(data.read(np.asarray(keep))))
    embeds = model.encode_prompts(inference_prompts(LABELS), processor.tokenizer)
    probs = model.score(processor.normalize_views(views), embeds).probs
    truth = torch.tensor([LABELS.index(data.entries[i]["label"]) for i in keep])
    return (probs.argmax(-1) == truth).numpy(), keep


def own_accuracy(model_dir: Path, cache: Path, subjects=None) -> tuple[float, list[int]]:
    """Accuracy of the model's own `score` on the cache's samples of its labels (of `subjects`), and rows."""
    right, keep = own_right(model_dir, cache, subjects)
    return float(right.mean()), keep


def test_report_accuracy_is_the_models_own_score(setup):
    from train.evaluate import main

    root, cache = setup
    report = main(["--model", str(root / "model"), "--cache", f"held={cache}", "--dtype", "float32",
                   "--out", str(root / "report.json")])  # fmt: skip
    r = report["caches"]["held"]
    expected, keep = own_accuracy(root / "model", cache)
    assert r["emotions"]["both/all"]["accuracy"] == pytest.approx(expected)
    assert r["emotions"]["both/all"]["n"] == len(keep)
    n_sfm, n_ict = r["emotions"]["sfm/all"]["n"], r["emotions"]["ict/all"]["n"]
    assert n_sfm + n_ict == len(keep) and n_sfm and n_ict
    assert r["emotions"]["both/3d"]["n"] + r["emotions"]["both/4d"]["n"] == len(keep)
    assert set(r["action_units"]["per_au"]) <= {"AU4 brow lowerer", "AU12 lip corner puller"}
    assert r["compound"]["n"] == 1 and r["compound"]["chance"] == pytest.approx(1 / 15)
    assert 0 <= r["calibration"]["ece_before"] <= 1
    assert r["open_vocabulary"]["text_encoder_alone"] is None  # a CLIP text tower has no frozen own space
    assert json.loads((root / "report.json").read_text())["caches"]["held"]["emotions"] == r["emotions"]


def test_a_single_view_model_reads_its_view_of_the_cache(setup):
    from train.evaluate import Embedded

    root, cache = setup
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(label_names=LABELS, num_views=1, view_names=["left"])).eval()
    emb = Embedded(model, tiny_processor(view_names=["left"]), cache)
    from affectvlm.data.cache import RenderCacheDataset

    data = RenderCacheDataset(cache, labels=[*LABELS, "happily_surprised"])
    left = torch.from_numpy(np.ascontiguousarray(data.read(np.asarray([0]))[:, 1:2]))
    from train.evaluate import embed_views

    torch.testing.assert_close(emb.fused[0], embed_views(model, tiny_processor(view_names=["left"]), left)[0])


def test_validation_subjects_of_a_run_on_several_caches_are_found(setup):
    """A run on several caches names subjects "<cache folder>/<subject>": the temperature fit finds them."""
    from train.evaluate import Embedded

    root, cache = setup
    model = AffectVLMModel.from_pretrained(root / "model").eval()
    subject = sorted({e["subject"] for e in Embedded(model, tiny_processor(), cache).entries})[0]
    plain = Embedded(model, tiny_processor(), cache, {subject})
    named = Embedded(model, tiny_processor(), cache, {f"{cache.name}/{subject}", "other-cache/S999"})
    assert len(plain.entries) and [e["key"] for e in named.entries] == [e["key"] for e in plain.entries]
    assert not Embedded(model, tiny_processor(), cache, {f"other-cache/{subject}"}).entries
    both = Embedded.join([plain, named])
    assert len(both.entries) == 2 * len(plain.entries) and both.fused.shape[0] == 2 * len(plain.entries)


def test_the_subset_i_figure_counts_only_the_two_highest_intensities(setup):
    """Six emotions at intensity 3-4: scans placed on their own label at levels 3 and 4 and on the wrong one at
    levels 1 and 2 read 1.0 there, 0.5 over all levels; neutral is left out of both."""
    from train.evaluate import Embedded, emotion_report

    root, _ = setup
    model = AffectVLMModel.from_pretrained(root / "model").eval()
    processor = tiny_processor()
    embeds = model.encode_prompts(inference_prompts(LABELS), processor.tokenizer).float()
    emb = Embedded.__new__(Embedded)
    emb.entries, fused = [], []
    for label, wrong in (("anger", "happiness"), ("happiness", "anger")):
        for level in (1, 2, 3, 4):
            emb.entries.append(
                {"label": label, "intensity": level, "dataset": "synth3d", "metadata": {"face_model": "sfm"}}
            )
            fused.append(embeds[LABELS.index(label if level >= 3 else wrong)])
    emb.entries.append(
        {"label": "neutral", "intensity": 0, "dataset": "synth3d", "metadata": {"face_model": "sfm"}}
    )
    fused.append(embeds[LABELS.index("anger")])
    emb.fused, emb.scale = torch.stack(fused), 100.0
    e = emotion_report(emb, model, processor.tokenizer)["sfm/3d"]
    assert e["six_emotion_high_intensity"] == pytest.approx(1.0)
    assert e["six_emotion_accuracy"] == pytest.approx(0.5)


def known_embedding(model, scans: list[tuple]) -> object:
    """An Embedded whose every entry's embedding is its predicted label's prompt embedding: the answers are
    known. `scans`: (label, intensity, predicted, entry fields)."""
    from train.evaluate import Embedded

    embeds = model.encode_prompts(inference_prompts(LABELS), tiny_processor().tokenizer).float()
    emb = Embedded.__new__(Embedded)
    emb.entries = [{"label": label, "intensity": level, "subject": "F0001", "metadata": {}, **fields}
                   for label, level, _, fields in scans]  # fmt: skip
    emb.fused, emb.scale = torch.stack([embeds[LABELS.index(pred)] for _, _, pred, _ in scans]), 100.0
    return emb


def no_nan_or_empty(value, where="report") -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in {"action_units", "compound"}:  # left out (and said why) on a real dataset
                no_nan_or_empty(v, f"{where}.{k}")
    elif isinstance(value, list):
        for v in value:
            no_nan_or_empty(v, where)
    elif isinstance(value, float):
        assert value == value, f"{where} is nan"


def test_a_real_datasets_scans_and_sequences_are_scored_with_known_answers(setup):
    """BU-3DFE-like scans and BU-4DFE-like sequences (datasets that are no synth3d/synth4d, no face model):
    accuracy, per-class recall, the confusion matrix, six emotions, per intensity and neutral recall are those
    of the known predictions; what the caches lack is left out with a reason, nothing is nan."""
    from train.evaluate import emotion_report

    root, _ = setup
    model = AffectVLMModel.from_pretrained(root / "model").eval()
    scan = {"dataset": "bu3dfe", "sequence": False}
    bu3dfe = known_embedding(model, [
        ("anger", 1, "happiness", scan), ("anger", 2, "anger", scan), ("anger", 3, "anger", scan),
        ("anger", 4, "anger", scan), ("happiness", 1, "happiness", scan), ("happiness", 2, "anger", scan),
        ("happiness", 3, "happiness", scan), ("happiness", 4, "happiness", scan),
        ("neutral", 0, "neutral", scan), ("neutral", 0, "anger", scan),
    ])  # fmt: skip
    e = emotion_report(bu3dfe, model, tiny_processor().tokenizer)
    assert set(e) == {"both/3d", "both/all"} and e["both/3d"] == e["both/all"]
    g = e["both/3d"]
    assert g["n"] == 10 and g["accuracy"] == pytest.approx(0.7)
    assert g["per_class_recall"] == pytest.approx({"anger": 0.75, "happiness": 0.75, "neutral": 0.5})
    assert g["confusion_matrix"] == {"labels": LABELS, "counts": [[3, 1, 0], [1, 3, 0], [1, 0, 1]]}
    assert g["six_emotion_accuracy"] == pytest.approx(0.75) and g["six_emotion_high_intensity"] == 1.0
    assert g["by_intensity"] == pytest.approx({"0": 0.5, "1": 0.5, "2": 0.5, "3": 1.0, "4": 1.0})
    assert g["neutral_recall"] == pytest.approx(0.5)

    from train.evaluate import cache_report, summary

    r = cache_report(bu3dfe, None, model, tiny_processor().tokenizer)
    assert r["emotions"] == e and r["open_vocabulary"]["n"] == 10 and r["calibration"]["accuracy_at_coverage"]
    assert set(r["left_out"]) == {"by_face_model", "action_units", "compound"}
    no_nan_or_empty(r)

    seq = {"dataset": "bu4dfe", "sequence": True}
    bu4dfe = known_embedding(model, [("anger", None, "anger", seq), ("anger", None, "anger", seq),
                                     ("happiness", None, "anger", seq), ("happiness", None, "happiness", seq)])  # fmt: skip
    r = cache_report(bu4dfe, None, model, tiny_processor().tokenizer)
    assert set(r["emotions"]) == {"both/4d", "both/all"}
    g = r["emotions"]["both/4d"]
    assert g["n"] == 4 and g["accuracy"] == pytest.approx(0.75) == g["six_emotion_accuracy"]
    assert g["per_class_recall"] == pytest.approx({"anger": 1.0, "happiness": 0.5})
    assert g["by_intensity"] is g["neutral_recall"] is g["six_emotion_high_intensity"] is None
    assert {"by_intensity", "neutral_recall"} <= set(r["left_out"])
    text = summary({"caches": {"b4": r}})
    assert "nan" not in text and not any(line.rstrip().endswith(":") for line in text.splitlines())
    assert "[b4] left out: neutral recall: no neutral samples" in text


def test_a_real_dataset_cache_is_reported_and_drawn(setup):
    """evaluate.py on a BU-3DFE-like render cache: the model's own accuracy, filled sections, the confusion
    matrix drawn beside the JSON report."""
    from train.evaluate import main

    root, _ = setup
    cache = root / "bu3dfe-cache"
    if not cache.exists():
        write_real_cache(cache)
    out = root / "real" / "report.json"
    report = main(["--model", str(root / "model"), "--cache", f"b3={cache}", "--dtype", "float32",
                   "--out", str(out)])  # fmt: skip
    r = report["caches"]["b3"]
    expected, keep = own_accuracy(root / "model", cache)
    assert set(r["emotions"]) == {"both/3d", "both/all"}
    assert r["emotions"]["both/all"]["n"] == len(keep) == 23
    assert r["emotions"]["both/all"]["accuracy"] == pytest.approx(expected)
    assert set(r["emotions"]["both/all"]["per_class_recall"]) == set(LABELS)
    assert r["open_vocabulary"]["n"] == len(keep) and r["scored"] == {"samples": 23, "subjects": 4}
    assert set(r["left_out"]) == {"by_face_model", "action_units", "compound", "other_labels"}
    assert r["left_out"]["other_labels"] == "samples of labels the model has no class for: LFAU_12 (1)"
    no_nan_or_empty(r)
    assert Path(r["confusion_png"]) == out.with_name("report-confusion-b3.png")
    assert Path(r["confusion_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(out.read_text())["caches"]["b3"]["confusion_png"] == r["confusion_png"]


def test_only_the_given_subjects_are_scored(setup, tmp_path):
    """--subjects, and --subjects-from a folds file with --fold (its test subjects) or a run's results.json"""
    from affectvlm.data.folds import save_folds, subject_folds
    from train.evaluate import main

    root, _ = setup
    cache = root / "bu3dfe-cache"
    if not cache.exists():
        write_real_cache(cache)
    args = ["--model", str(root / "model"), "--cache", f"b3={cache}", "--dtype", "float32"]
    r = main([*args, "--subjects", "S000,S002"])["caches"]["b3"]
    expected, keep = own_accuracy(root / "model", cache, {"S000", "S002"})
    assert r["emotions"]["both/all"]["n"] == len(keep) == 12 and r["scored"]["subjects"] == 2
    assert r["emotions"]["both/all"]["accuracy"] == pytest.approx(expected)

    folds = subject_folds(["S000", "S001", "S002", "S003"], k=2, seed=0)
    save_folds(tmp_path / "folds.json", folds, k=2)
    report = main([*args, "--subjects-from", str(tmp_path / "folds.json"), "--fold", "1"])
    assert report["subjects"] == list(folds[1].test)
    n = report["caches"]["b3"]["emotions"]["both/all"]["n"]
    assert n == len(own_accuracy(root / "model", cache, set(folds[1].test))[1])
    (tmp_path / "results.json").write_text(json.dumps({"fold": folds[0].to_dict()}))
    report = main([*args, "--subjects-from", str(tmp_path / "results.json"), "--side", "val"])
    n = report["caches"]["b3"]["emotions"]["both/all"]["n"]
    assert n == len(own_accuracy(root / "model", cache, set(folds[0].val))[1])
    with pytest.raises(SystemExit):  # a folds file needs --fold
        main([*args, "--subjects-from", str(tmp_path / "folds.json")])
    with pytest.raises(SystemExit):  # no sample of these subjects
        main([*args, "--subjects", "F9999"])


EFFECTS = [("holes",), ("noise",), ("holes", "noise"), ()]


def write_twins(root: Path) -> tuple[Path, Path]:
    """The same samples twice: clean, and with recorded scanner effects that change their images (a hole: every
    view blanked; noise: every pixel shaken hard)."""

    def clean(subjects, labels, levels):
        return [{"label": label, "subject": s, "intensity": 1, "metadata": {"face_model": "sfm"},
                 "dataset": "synth3d", "sequence": False} for s, label in zip(subjects, labels)]  # fmt: skip

    def realistic(subjects, labels, levels):
        entries = clean(subjects, labels, levels)
        for i, e in enumerate(entries):
            e["realism"] = list(EFFECTS[i % len(EFFECTS)])
        return entries

    def scanner(views, entries):
        shake = np.random.default_rng(0).integers(-255, 255, views.shape[1:])
        for i, e in enumerate(entries):
            if "holes" in e["realism"]:
                views[i] = 0
            if "noise" in e["realism"]:
                views[i] = np.clip(views[i].astype(int) + shake, 0, 255)

    return write_toy_cache(root / "clean", clean), write_toy_cache(root / "realistic", realistic, scanner)


def toy_reader(folder: Path) -> Path:
    """A tiny model taught the toy views' labels (30 steps, about a second): a random one gives every image the
    same answer, so no effect could change one."""
    from train.data import ToyViews

    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(label_names=LABELS, au_logit_bias={"4": 0.0, "12": 0.0}))
    processor = tiny_processor()
    batch = ToyViews(LABELS, num_subjects=4, image_size=32, intensities=2).__getitems__(list(range(24)))
    views, score = processor.normalize_views(batch["views"]), AffectVLMModel.score.__wrapped__  # with gradients
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        embeds = model.encode_prompts(inference_prompts(LABELS), processor.tokenizer)
        loss = torch.nn.functional.cross_entropy(score(model, views, embeds).logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_each_scanner_effect_is_costed_on_the_same_samples_without_it(tmp_path):
    """A realistic cache and its clean twin (the same samples, keys in order, no effect): each effect's accuracy,
    and its cost, are the model's own scores on those samples in each cache; the answers the effects changed are
    counted. Without the twin only the accuracies are given; a cache with no effects has no such section."""
    from train.evaluate import main

    model = toy_reader(tmp_path / "model")
    clean, realistic = write_twins(tmp_path)
    report = main(["--model", str(model), "--cache", f"real={realistic}", "--cache", f"clean={clean}"])
    sc = report["caches"]["real"]["scanner"]
    right, _ = own_right(model, realistic)
    before, _ = own_right(model, clean)
    assert sc["twin"]["cache"] == "clean" and sc["accuracy"] == pytest.approx(right.mean())
    assert sc["twin"]["broken"] == int((before & ~right).sum()) and sc["twin"]["fixed"] == int((~before & right).sum())
    assert sc["twin"]["broken"] + sc["twin"]["fixed"] > 0  # the effects changed answers: the pairing is tested
    for kind in ("holes", "noise"):
        has = np.asarray([kind in EFFECTS[i % len(EFFECTS)] for i in range(len(right))])
        got = sc["kinds"][kind]
        assert got["n"] == has.sum() and got["accuracy"] == pytest.approx(right[has].mean())
        assert got["accuracy_without"] == pytest.approx(right[~has].mean())
        assert got["cost"] == pytest.approx(before[has].mean() - right[has].mean())
    assert sc["no_effect"] == len(right) // len(EFFECTS)
    assert report["caches"]["clean"]["scanner"] is None
    alone = main(["--model", str(model), "--cache", f"real={realistic}"])["caches"]["real"]["scanner"]
    assert "twin" not in alone and "cost" not in alone["kinds"]["holes"]
