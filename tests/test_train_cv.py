"""train/cross_validate.py end to end on a small render cache of synthetic views, and its report pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train.cross_validate import VARIANTS, markdown_table, plot_confusion, plot_curves, summarise
from train.data import CacheViews, ToyViews

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["anger", "happiness"]


def write_cache(folder: Path, num_subjects: int = 6) -> Path:
    """A render cache in the real shard/index format, holding ToyViews images (no rendering needed)."""
    from affectvlm.data.cache import _write_index, _write_shard, label_vocabulary

    toy = ToyViews(LABELS, num_subjects=num_subjects, image_size=32, intensities=2)
    batch = toy.__getitems__(list(range(len(toy))))
    entries = [
        {"key": f"synth3d/{s}/{i}", "label": LABELS[int(y)], "subject": s, "intensity": m["intensity"],
         "dataset": "synth3d", "sequence": False, "metadata": {"gender": m["gender"], "age_group": "30-39"},
         "shard": 0, "row": i}
        for i, (s, y, m) in enumerate(zip(toy.subjects, batch["labels"], batch["metadata"]))
    ]  # fmt: skip
    _write_shard(folder, 0, list(batch["views"].numpy()), entries, [])
    _write_index(folder, 1, label_vocabulary(LABELS))
    (folder / "cache.json").write_text(
        json.dumps({"settings": {"size": 32, "mode": "normal", "views": None}})
    )
    return folder


def test_cache_views_map_labels_and_select_views(tmp_path):
    cache = write_cache(tmp_path / "cache")
    ds = CacheViews(cache, LABELS, ["frontal"], datasets=["synth3d"])
    batch = ds.__getitems__([0, 3])
    assert batch["views"].shape == (2, 1, 32, 32, 3)
    assert set(np.unique(ds.labels_array())) == {0, 1}
    assert batch["metadata"][0]["intensity"] in (1, 2)
    with pytest.raises(ValueError, match="no cache entries"):
        CacheViews(cache, LABELS, datasets=["synth4d"])


def test_several_caches_train_as_one_with_distinct_subjects(tmp_path):
    from train.config import load_config
    from train.data import build_dataset, fold_of

    a, b = write_cache(tmp_path / "a" / "cache-a", 3), write_cache(tmp_path / "b" / "cache-b", 4)
    config = load_config("tiny", [
        "data.source=cache", f"data.labels={json.dumps(LABELS)}", f"data.cache_dir=[{a}, {b}]",
    ])  # fmt: skip
    ds = build_dataset(config)
    one, two = CacheViews(a, LABELS), CacheViews(b, LABELS)
    assert len(ds) == len(one) + len(two)
    # the same subject name in two caches is two people
    assert (
        ds.subjects[0] == f"cache-a/{one.subjects[0]}"
        and ds.subjects[len(one)] == f"cache-b/{two.subjects[0]}"
    )
    assert len(set(ds.subjects)) == len(set(one.subjects)) + len(set(two.subjects))
    # a mixed read returns each cache's own views, labels and metadata, in the order asked for
    ask = [len(one) + 2, 1, len(one), 0]
    got = ds.__getitems__(ask)
    want = [two.__getitems__([2]), one.__getitems__([1]), two.__getitems__([0]), one.__getitems__([0])]
    for i, w in enumerate(want):
        assert torch.equal(got["views"][i], w["views"][0]) and int(got["labels"][i]) == int(w["labels"][0])
        assert got["metadata"][i] == w["metadata"][0]
    assert np.array_equal(ds.labels_array(), np.concatenate([one.labels_array(), two.labels_array()]))
    # each cache keeps the split it has alone: adding a cache moves no subject between train, val and test
    config["data"].update(k=3, val_fraction=0.5)
    fold = fold_of(config, ds.subjects)
    alone = fold_of({**config, "data": {**config["data"], "cache_dir": str(a)}}, one.subjects)
    for side in ("train", "val", "test"):
        assert {s for s in getattr(fold, side) if s.startswith("cache-a/")} == {
            f"cache-a/{s}" for s in getattr(alone, side)
        }
    assert {s.split("/")[0] for s in fold.test} == {"cache-a", "cache-b"}
    # a cache rendered before `orient` was a setting trains with one that says "auto", which is what it was drawn with
    info = json.loads((b / "cache.json").read_text())
    (a / "cache.json").write_text(json.dumps({"settings": {**info["settings"], "orient": "auto"}}))
    (b / "cache.json").write_text(json.dumps({"settings": {k: v for k, v in info["settings"].items() if k != "orient"}}))
    assert len(build_dataset(config)) == len(one) + len(two)
    (a / "cache.json").write_text(json.dumps({"settings": {**info["settings"], "orient": "-z"}}))
    with pytest.raises(ValueError, match="rendered differently"):
        build_dataset(config)
    (a / "cache.json").write_text(json.dumps(info))
    # caches rendered at another size cannot train together
    (b / "cache.json").write_text(json.dumps({"settings": {**info["settings"], "size": 48}}))
    with pytest.raises(ValueError, match="rendered differently"):
        build_dataset(config)


def test_frames_separate_caches_only_where_frames_were_pooled(tmp_path):
    """A cache of 3D scans records the frame count it was prepared with but never pooled frames: it trains
    beside caches written with another count, and the run serves the frames of the cache that has sequences."""
    from train.config import load_config
    from train.data import build_dataset, run_settings

    a, b, c = (write_cache(tmp_path / n, 3) for n in ("scans-a", "scans-b", "seqs"))
    info = json.loads((a / "cache.json").read_text())
    for folder, frames in ((a, 12), (b, 8), (c, 8)):
        (folder / "cache.json").write_text(json.dumps({"settings": {**info["settings"], "frames": frames}}))
    index = json.loads((c / "index.json").read_text())
    for e in index["entries"]:
        e["sequence"] = True
    (c / "index.json").write_text(json.dumps(index))

    def run(*folders):
        config = load_config("tiny", ["data.source=cache", f"data.labels={json.dumps(LABELS)}",
                                      f"data.cache_dir=[{', '.join(map(str, folders))}]"])  # fmt: skip
        return build_dataset(config)

    assert len(run(a, b)) == 2 * len(CacheViews(a, LABELS))
    assert len(run(a, c)) == 2 * len(CacheViews(a, LABELS))
    assert run_settings([a, c])["frames"] == 8 and run_settings([a, b])["frames"] == 12
    # two caches of sequences pooled over different frame counts drew different dynamic images
    (b / "index.json").write_text(json.dumps(index))
    (b / "cache.json").write_text(json.dumps({"settings": {**info["settings"], "frames": 12}}))
    with pytest.raises(ValueError, match="rendered differently"):
        run(b, c)


def test_two_caches_of_one_name_train_as_different_people(tmp_path):
    """The same dataset rendered with the same settings from two roots gives two folders of one name
    (`a/bu4dfe-<key>`, `b/bu4dfe-<key>`): they train together, their subjects named by the paths' tails, and
    their "F001"s stay two people. The same cache given twice is still refused."""
    from train.config import load_config
    from train.data import build_dataset, cache_names, fold_of

    a, b = write_cache(tmp_path / "a" / "bu4dfe-k", 3), write_cache(tmp_path / "b" / "bu4dfe-k", 3)

    def run(*folders):
        config = load_config("tiny", ["data.source=cache", f"data.labels={json.dumps(LABELS)}",
                                      f"data.cache_dir=[{', '.join(map(str, folders))}]"])  # fmt: skip
        return build_dataset(config)

    one = CacheViews(a, LABELS)
    ds = run(a, b)
    assert cache_names([a, b, tmp_path / "c"]) == ["a/bu4dfe-k", "b/bu4dfe-k", "c"]
    assert ds.subjects[0] == f"a/bu4dfe-k/{one.subjects[0]}" and ds.subjects[len(one)] == f"b/bu4dfe-k/{one.subjects[0]}"
    assert len(set(ds.subjects)) == 2 * len(set(one.subjects))
    # each cache's subjects are split on their own, as any two caches' are (the run trains, validates and tests)
    config = load_config("tiny", ["data.source=cache", f"data.labels={json.dumps(LABELS)}", f"data.cache_dir=[{a}, {b}]",
                                  "data.k=3", "data.val_fraction=0.5"])  # fmt: skip
    fold = fold_of(config, ds.subjects)
    assert {s.rsplit("/", 1)[0] for s in fold.test} == {"a/bu4dfe-k", "b/bu4dfe-k"}
    assert sorted(fold.train + fold.val + fold.test) == sorted(set(ds.subjects))
    with pytest.raises(ValueError, match="must differ"):
        run(a, a)


def test_a_synthfer_person_keeps_scans_and_sequences_on_one_side(tmp_path):
    """F0001's 3D scans and F001's 4D sequences are one SynthFER-3D person: one side of the run's fold."""
    from train.config import load_config
    from train.data import fold_of

    cache = write_cache(tmp_path / "cache", 12)
    index = json.loads((cache / "index.json").read_text())
    for i, e in enumerate(index["entries"]):  # each toy subject's samples: half its scans, half its sequences
        n = int(e["subject"][1:]) + 1
        if i % 2:
            e.update(dataset="synth4d", subject=f"F{n:03d}")
        else:
            e.update(dataset="synth3d", subject=f"F{n:04d}")
    (cache / "index.json").write_text(json.dumps(index))
    ds = CacheViews(cache, LABELS)
    assert {len(s) for s in ds.subjects} == {4, 5} and len(set(ds.persons)) == len(set(ds.subjects)) // 2
    config = load_config("tiny", ["data.source=cache", f"data.cache_dir={cache}", "data.k=3"])
    for fold_index in range(3):
        config["data"]["fold"] = fold_index
        fold = fold_of(config, ds.subjects, ds.persons)
        for n in range(1, 13):
            assert fold.side(f"F{n:04d}") == fold.side(f"F{n:03d}") is not None
    config["data"]["group_persons"] = False  # the per-id split of earlier versions
    per_id = [
        fold_of({**config, "data": {**config["data"], "fold": i}}, ds.subjects, ds.persons) for i in range(3)
    ]
    assert any(f.side(f"F{n:04d}") != f.side(f"F{n:03d}") for f in per_id for n in range(1, 13))


@pytest.mark.slow  # two training subprocesses and two CV processes: ~15 s of CPU, minutes on a shared machine
def test_cross_validate_end_to_end(tmp_path):
    cache = write_cache(tmp_path / "cache")
    out = tmp_path / "cv"
    cmd = [
        sys.executable, str(ROOT / "train" / "cross_validate.py"), "--config", "tiny", "--output-dir", str(out),
        "--cache-dir", str(cache), "--k", "3", "--folds", "0", "--variants", "full,zero_shot",
        "--set", "data.source=cache", "--set", f"data.labels={json.dumps(LABELS)}", "--set", "train.max_steps=2", "--set", "train.batch_size=8",
        "--set", "train.eval_every=2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    assert report["folds_run"] == [0] and report["k"] == 3
    folds = report["fold_lists"]
    assert all(not set(f["test"]) & set(f["train"] + f["val"]) for f in folds)
    for variant in ("full", "zero_shot"):
        s = report["variants"][variant]
        assert len(s["accuracy_per_fold"]) == 1 and 0 <= s["accuracy_mean"] <= 1
        assert set(s["per_class_f1"]) == set(LABELS)
        # Every test sample of the two folds is scored exactly once.
        assert s["num_test_samples"] == len(folds[0]["test"]) * 2 * 2
    assert report["variants"]["zero_shot"]["selected_step_per_fold"] == [0]
    assert "| full |" in (out / "results.md").read_text()
    for name in ("confusion_full.png", "confusion_zero_shot.png", "curves.png"):
        assert (out / name).stat().st_size > 1000
    # Run again: the fold is done, nothing is retrained, and the report is the same.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0 and "full fold 0:" not in proc.stdout
    assert json.loads((out / "results.json").read_text())["variants"] == report["variants"]


def test_cross_validate_prepares_a_real_dataset_layout_and_reports_it(tmp_path):
    """--prepare bu3dfe --root: read the tree with the BU-3DFE reader, render it, make subject folds over its
    subjects, train and test, and title the report with the dataset. The tree is written by the SynthFER-3D
    writer in BU-3DFE's layout (F0001/F0001_AN01AE_F3D.wrl, ...), 4 subjects x 2 emotions x 2 intensities,
    from the stand-in face model: the pipeline is under test here, not the Surrey Face Model."""
    from affectvlm.data.synth import SynthConfig, write_synth_tree
    from affectvlm.testing import toy_face_model

    tree = tmp_path / "BU-3DFE"
    config = SynthConfig(seed=1, num_subjects=4, subdivision_prob=0.0)
    write_synth_tree(
        tree, "bu3dfe", config, toy_face_model(), labels=LABELS, intensities=(1, 4), progress=False
    )
    out = tmp_path / "cv"
    cmd = [
        sys.executable, str(ROOT / "train" / "cross_validate.py"), "--config", "tiny", "--output-dir", str(out),
        "--prepare", "bu3dfe", "--root", str(tree), "--k", "4", "--folds", "0", "--variants", "full",
        "--set", "data.source=cache", "--set", f"data.labels={json.dumps(LABELS)}", "--set", "train.max_steps=2",
        "--set", "train.batch_size=4", "--set", "train.eval_batch_size=4", "--set", "train.eval_every=2",
        "--set", "train.warmup_steps=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((out / "results.json").read_text())
    assert report["dataset"] == "bu3dfe" and report["task"] == "3d"
    assert [e["device"] for e in report["environments"]] == ["cpu"]
    caches = list((out / "cache" / "all").glob("bu3dfe-*"))
    assert len(caches) == 1 and report["cache_dir"] == str(caches[0])
    # The folds are over the tree's subjects (its folders), each tested in exactly one fold.
    tested = [s for f in report["fold_lists"] for s in f["test"]]
    assert sorted(tested) == sorted(p.name for p in tree.iterdir() if p.is_dir()) and len(tested) == 4
    run = report["variants"]["full"]
    assert run["num_test_samples"] == len(report["fold_lists"][0]["test"]) * len(LABELS) * 2
    assert (out / "results.md").read_text().startswith("BU-3DFE cross-validation: config `tiny`, task `3d`")
    # A BU-3DFE cache holds static scans only: asking for the 4D task is an error that says so.
    at = cmd.index("--prepare")
    bad = [*cmd[:at], "--cache-dir", str(caches[0]), "--task", "4d", *cmd[at + 4 :]]
    proc = subprocess.run(bad, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode != 0 and "BU-3DFE cache holds 3d data only" in proc.stderr
    # A folder that is not the dataset: one line naming the problem, no traceback.
    missing = [*cmd[:at], "--prepare", "bu3dfe", "--root", str(tmp_path / "nowhere"), *cmd[at + 4 :]]
    proc = subprocess.run(missing, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode != 0 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_report_pieces(tmp_path):
    def fake(index, preds, labels):
        acc = float(np.mean(np.asarray(preds) == np.asarray(labels)))
        return {"fold": {"index": index}, "selected": {"step": 5},
                "test": {"accuracy": acc, "macro_f1": acc, "predictions": preds, "labels": labels}}  # fmt: skip

    runs = {"full": [fake(0, [0, 1, 1], [0, 1, 1]), fake(1, [0, 0], [0, 1])]}
    summary = summarise(runs, LABELS)
    assert summary["full"]["accuracy_per_fold"] == [1.0, 0.5]
    assert summary["full"]["accuracy_mean"] == 0.75 and summary["full"]["pooled_accuracy"] == 0.8
    assert summary["full"]["confusion_matrix"] == [[2, 0], [1, 2]]
    assert "0.750 ± 0.354" in markdown_table(summary, LABELS)
    # A second variant on the same folds: its per-fold differences from the full model.
    runs["single_view"] = [fake(0, [0, 0, 1], [0, 1, 1]), fake(1, [0, 1], [0, 1])]
    paired = summarise(runs, LABELS)["single_view"]["vs_full"]
    assert paired["mean_difference"] == pytest.approx((-1 / 3 + 0.5) / 2)
    assert paired["folds_lower"] == 1 and paired["folds_higher"] == 1 and paired["folds"] == 2
    assert "+0.083 ± 0.589 (1/1)" in markdown_table(summarise(runs, LABELS), LABELS)
    plot_confusion(summary["full"]["confusion_matrix"], LABELS, "t", tmp_path / "c.png")
    plot_curves({"full": [tmp_path / "missing"]}, tmp_path / "curves.png")
    assert (tmp_path / "c.png").is_file() and (tmp_path / "curves.png").is_file()
    assert set(VARIANTS) >= {"full", "zero_shot", "single_view_clip", "no_triplet", "single_view"}
