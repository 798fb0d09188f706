"""train/evaluate.py on a small render cache: its accuracy is the model's own `score` on the same views, each
face model and kind is counted apart, the AU and compound sections are filled, the model's views are picked
from the cache's."""

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


def write_cache(folder: Path) -> Path:
    """ToyViews images in the render-cache format, as SFM and ICT subjects, scans and sequences, with AU
    records on the ICT ones and one compound expression."""
    from affectvlm.data.cache import _write_index, _write_shard, label_vocabulary

    folder.mkdir(parents=True)
    toy = ToyViews(LABELS, num_subjects=4, image_size=32, intensities=2)
    batch = toy.__getitems__(list(range(len(toy))))
    entries = []
    for i, (s, y) in enumerate(zip(toy.subjects, batch["labels"])):
        ict = int(s[-1]) % 2 == 1
        label = LABELS[int(y)]
        meta = {"face_model": "ict" if ict else "sfm"}
        if ict:
            meta["aus"] = {"12": 0.8} if label == "happiness" else ({"4": 0.7} if label == "anger" else {})
        entries.append({"key": f"k{i}", "label": label, "subject": s, "intensity": 1, "metadata": meta,
                        "dataset": "synth4d" if i % 3 == 0 else "synth3d", "sequence": i % 3 == 0,
                        "shard": 0, "row": i})  # fmt: skip
    entries[-1]["label"] = "happily_surprised"
    _write_shard(folder, 0, list(batch["views"].numpy()), entries, [])
    _write_index(folder, 1, label_vocabulary([*LABELS, "happily_surprised"]))
    (folder / "cache.json").write_text(json.dumps({"settings": {"size": 32}, "views": None}))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    model = AffectVLMModel(tiny_config(label_names=LABELS, au_logit_bias={"4": 0.0, "12": 0.0})).eval()
    model.save_pretrained(root / "model")
    tiny_processor().save_pretrained(root / "model")
    return root, write_cache(root / "cache")


def test_report_accuracy_is_the_models_own_score(setup):
    from affectvlm.data.cache import RenderCacheDataset
    from train.evaluate import main

    root, cache = setup
    report = main(["--model", str(root / "model"), "--cache", f"held={cache}", "--dtype", "float32",
                   "--out", str(root / "report.json")])  # fmt: skip
    r = report["caches"]["held"]
    model = AffectVLMModel.from_pretrained(root / "model").eval()
    processor = tiny_processor()
    data = RenderCacheDataset(cache, labels=[*LABELS, "happily_surprised"])
    keep = [i for i, e in enumerate(data.entries) if e["label"] in LABELS]
    views = torch.from_numpy(np.ascontiguousarray(data.read(np.asarray(keep))))
    embeds = model.encode_prompts(inference_prompts(LABELS), processor.tokenizer)
    probs = model.score(processor.normalize_views(views), embeds).probs
    truth = torch.tensor([LABELS.index(data.entries[i]["label"]) for i in keep])
    expected = float((probs.argmax(-1) == truth).float().mean())
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
