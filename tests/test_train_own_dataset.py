"""Training on your own dataset's cache: the folds, the runs and the errors that `folds`, train/train.py and
train/cross_validate.py give on the way (a probe of that door found each of these going silently wrong).

The caches are written in the real shard/index format from in-memory toy views (`test_train_cv.write_cache`)
and relabelled where a test needs a real dataset's entries; the dataset trees are empty files in the real
layouts (the readers index names, they do not open the scans). Training is faked where only the bookkeeping
around it is under test; one test runs train/train.py as a user does.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_train_cv import LABELS, write_cache

import train.cross_validate as cv
from affectvlm.data.__main__ import main as data_main
from affectvlm.data.datasets import read_dataset, select_protocol
from affectvlm.data.folds import Fold, load_folds, save_folds, subject_folds
from train.config import dump_config, load_config
from train.data import CacheViews, build_dataset, fold_of

ROOT = Path(__file__).resolve().parents[1]


def relabel(cache: Path, subjects=(), label: str | None = None, dataset: str | None = None) -> Path:
    """Give the entries of `subjects` (all entries when empty) another label and/or dataset."""
    index = json.loads((cache / "index.json").read_text())
    for e in index["entries"]:
        if not subjects or e["subject"] in subjects:
            e.update({k: v for k, v in (("label", label), ("dataset", dataset)) if v is not None})
    (cache / "index.json").write_text(json.dumps(index))
    return cache


def tiny_cache_config(cache: Path, *extra: str) -> dict:
    return load_config(
        "tiny", ["data.source=cache", f"data.cache_dir={cache}", f"data.labels={json.dumps(LABELS)}", *extra]
    )


# --- 1. cross_validate.py reuses a folder's folds and runs only with the settings they were made with ---


def fake_training(calls: list):
    """`subprocess.call` for train/cross_validate.py: writes the run's config.yaml and a results.json as
    train/train.py does (the fold's subjects, a test score), without training."""

    def call(cmd, stdout=None, stderr=None) -> int:
        sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
        run_dir = Path(cmd[cmd.index("--output-dir") + 1])
        config = load_config(cmd[cmd.index("--config") + 1], sets)
        dump_config(config, run_dir / "config.yaml")
        fold = load_folds(config["data"]["folds_file"])[config["data"]["fold"]]
        test = {"accuracy": 0.5, "macro_f1": 0.5, "predictions": [0, 1], "labels": [0, 0]}
        result = {"fold": fold.to_dict(), "selected": {"step": 2}, "test": test}
        (run_dir / "results.json").write_text(json.dumps(result))
        calls.append(run_dir)
        return 0

    return call


def test_cross_validate_refuses_folds_and_runs_made_with_other_settings(tmp_path, monkeypatch):
    a, b = write_cache(tmp_path / "a" / "cache", 6), write_cache(tmp_path / "b" / "cache", 7)
    calls: list = []
    monkeypatch.setattr(cv.subprocess, "call", fake_training(calls))
    out = tmp_path / "cv"

    def run(*extra: str, cache: Path = a) -> dict:
        return cv.main([
            "--config", "tiny", "--output-dir", str(out), "--cache-dir", str(cache), "--k", "3",
            "--folds", "0", "--variants", "full", "--set", "data.source=cache",
            "--set", f"data.labels={json.dumps(LABELS)}", *extra,
        ])  # fmt: skip

    first = run()
    assert len(calls) == 1
    # The same settings: the finished run is reused, an interrupted one (no results.json) resumes.
    assert run()["variants"] == first["variants"] and len(calls) == 1
    (out / "full" / "fold_00" / "results.json").unlink()
    assert run()["fold_lists"] == first["fold_lists"] and len(calls) == 2
    report = (out / "results.json").read_text()
    # Another cache, k or partition seed: the saved folds are not these settings' folds.
    differ = (((), b, f"cache={a} \\(this run: cache={b}\\)"), (("--k", "2"), a, r"k=3 \(this run: k=2\)"),
              (("--fold-seed", "1"), a, r"seed=0 \(this run: seed=1\)"))  # fmt: skip
    refusal = ".*use a new --output-dir or remove"
    for extra, cache, what in differ:
        with pytest.raises(SystemExit, match=f"{out / 'folds.json'}.*{what}{refusal}"):
            run(*extra, cache=cache)
    # The same folds but another training setting: the run folder was made with other settings.
    changed = r"train.max_steps=6 \(this run: train.max_steps=3\)"
    with pytest.raises(SystemExit, match=f"fold_00.*{changed}{refusal}"):
        run("--set", "train.max_steps=3")
    assert len(calls) == 2 and (out / "results.json").read_text() == report  # nothing was trained or reported
    # Runs whose folds.json was removed were made on folds that are gone.
    (out / "folds.json").unlink()
    with pytest.raises(SystemExit, match=f"no folds.json{refusal}"):
        run()


# --- 2. `folds --protocol --seed` takes prepare's subjects; train.py checks a folds file's subjects ---


def write_bu3dfe_names(root: Path, subjects: int) -> Path:
    """A BU-3DFE tree of empty files: anger and happiness at intensities 3-4 and neutral per subject."""
    for i in range(subjects):
        sid = f"{'FM'[i % 2]}{i // 2 + 1:04d}"
        (root / sid).mkdir(parents=True)
        for code in ("AN03", "AN04", "HA03", "HA04", "NE00"):
            (root / sid / f"{sid}_{code}WH_F3D.wrl").write_text("")
    return root


def test_folds_seed_changes_the_partition_not_the_protocols_subjects(tmp_path):
    tree = write_bu3dfe_names(tmp_path / "BU-3DFE", 70)
    # What `prepare --protocol bu3dfe-subset1` renders (and train/cross_validate.py --prepare): 60 of the 70.
    rendered = {s.subject for s in select_protocol(read_dataset("bu3dfe", tree), "bu3dfe-subset1")}
    tested = {}
    for seed in (0, 5):
        out = tmp_path / f"folds-{seed}.json"
        argv = ["folds", "--dataset", "bu3dfe", "--root", str(tree), "--protocol", "bu3dfe-subset1",
                "--seed", str(seed), "--k", "10", "--out", str(out)]  # fmt: skip
        assert data_main(argv) == 0
        folds = load_folds(out)
        assert {s for f in folds for s in f.test} == rendered and len(rendered) == 60
        tested[seed] = [f.test for f in folds]
    assert tested[0] != tested[5]  # the seed is the partition's


def test_train_refuses_a_folds_file_naming_subjects_the_cache_lacks(tmp_path):
    cache = write_cache(tmp_path / "cache", 6)
    ds = CacheViews(cache, LABELS)
    subjects = [f"S{i:03d}" for i in range(9)]  # three the cache does not hold
    save_folds(tmp_path / "folds.json", subject_folds(subjects, k=3, val_fraction=0.2))
    config = tiny_cache_config(cache, f"data.folds_file={tmp_path / 'folds.json'}")
    with pytest.raises(ValueError, match=r"fold 0 names 3 subject\(s\).*S006, S007, S008"):
        fold_of(config, ds.subjects, ds.persons)
    # a folds file over the cache's own subjects is used as it is
    save_folds(tmp_path / "folds.json", subject_folds(subjects[:6], k=3, val_fraction=0.2))
    assert fold_of(config, ds.subjects, ds.persons) == load_folds(tmp_path / "folds.json")[0]


# --- 3. folds count only the subjects that have samples of the training labels ---


def test_folds_from_a_cache_or_a_tree_leave_out_subjects_without_the_labels(tmp_path):
    cache = relabel(write_cache(tmp_path / "cache", 6), {"S003", "S004", "S005"}, label="neutral")
    labelled = ["S000", "S001", "S002"]
    out = tmp_path / "folds.json"
    for labels in ([], ["--labels", ",".join(LABELS)]):
        argv = ["folds", "--cache", str(cache), "--k", "3", "--val-fraction", "0.15", "--out", str(out)]
        assert data_main([*argv, *labels]) == 0
        assert sorted(s for f in load_folds(out) for s in f.test) == labelled
    # train/cross_validate.py makes the same folds from the same cache (one rule, one function)
    config = tiny_cache_config(cache, "data.val_fraction=0.15")
    assert cv.make_folds(cache, config, None, 3, 0, tmp_path / "cv-folds.json") == load_folds(out)
    # a Bosphorus tree where three subjects have action-unit and neutral scans only
    tree = tmp_path / "Bosphorus"
    for i in range(6):
        (tree / f"bs{i:03d}").mkdir(parents=True)
        for name in ("E_ANGER_0", "E_HAPPY_0", "N_N_0") if i < 3 else ("LFAU_12_0", "N_N_0"):
            (tree / f"bs{i:03d}" / f"bs{i:03d}_{name}.bnt").write_text("")
    argv = ["folds", "--dataset", "bosphorus", "--root", str(tree), "--k", "3", "--out", str(out)]
    assert data_main(argv) == 0
    assert sorted(s for f in load_folds(out) for s in f.test) == ["bs000", "bs001", "bs002"]


def test_train_refuses_a_fold_with_subjects_or_sides_without_samples(tmp_path):
    from train.train import get_dataloaders

    cache = relabel(write_cache(tmp_path / "cache", 6), {"S003", "S004", "S005"}, label="neutral")
    # folds made over every subject of the cache, as `folds --cache` did before
    save_folds(tmp_path / "folds.json", subject_folds([f"S{i:03d}" for i in range(6)], k=3))
    config = tiny_cache_config(cache, f"data.folds_file={tmp_path / 'folds.json'}")
    ds = build_dataset(config)
    with pytest.raises(ValueError, match=r"names 3 subject\(s\) with no samples of labels.*S003, S004, S005"):
        get_dataloaders(config, ds)
    # a fold whose test side is empty: an error, not "0 test samples ... test accuracy nan"
    save_folds(tmp_path / "folds.json", [Fold(0, ("S000", "S001"), ("S002",), ())])
    with pytest.raises(ValueError, match="fold 0 has 0 test samples"):
        get_dataloaders(config, ds)


# --- 4. a real dataset's cache with the shipped configs' SynthFER-3D dataset filter ---


def test_a_real_dataset_cache_with_a_synthfer_filter_is_one_line_and_the_documented_set_trains(tmp_path):
    cache = relabel(write_cache(tmp_path / "bu3dfe-0123", 6), dataset="bu3dfe")
    config = tiny_cache_config(cache, "data.datasets=[synth3d]")
    with pytest.raises(ValueError, match=r"holds datasets \['bu3dfe'\].*--set data.datasets=null"):
        build_dataset(config)
    # a SynthFER-3D cache keeps the filter as it was: no synth4d entries in a synth3d cache is an error
    with pytest.raises(ValueError, match="no cache entries"):
        CacheViews(write_cache(tmp_path / "synth"), LABELS, datasets=["synth4d"])
    cmd = [sys.executable, str(ROOT / "train" / "train.py"), "--config", "tiny",
           "--output-dir", str(tmp_path / "run"), "--no-progress", "--set", "data.source=cache",
           "--set", f"data.cache_dir={cache}",
           "--set", f"data.labels={json.dumps(LABELS)}", "--set", "data.k=3", "--set", "train.max_steps=2",
           "--set", "train.batch_size=4", "--set", "data.datasets=[synth3d]"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().startswith("error: ") and "--set data.datasets=null" in proc.stderr
    proc = subprocess.run([*cmd, "--set", "data.datasets=null"], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"]["num_samples"] > 0
    # what README.md and docs/training.md tell a user to run on their own dataset's cache with a config that
    # keeps SynthFER-3D's entries says so
    for doc in (ROOT / "README.md", ROOT / "docs" / "training.md"):
        commands = doc.read_text().replace("\\\n", " ").splitlines()
        lines = [line for line in commands if "train/train.py" in line and "bu3dfe-<hash>" in line]
        configs = [load_config(line.split("--config ")[1].split()[0]) for line in lines]
        filtered = [line for line, config in zip(lines, configs) if config["data"]["datasets"]]
        assert filtered and all("data.datasets=null" in line for line in filtered), doc


# --- 5. an output folder that cannot be written ---


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    from train.train import main as train_main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cache = write_cache(tmp_path / "cache", 6)
    cv_argv = ["--config", "tiny", "--cache-dir", str(cache), "--set", "data.source=cache"]
    for main, argv in ((train_main, ["--config", "tiny"]), (cv.main, cv_argv)):
        with pytest.raises(SystemExit, match=f"cannot write to the output folder {blocker / 'out'}"):
            main([*argv, "--output-dir", str(blocker / "out")])

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    for main, argv in ((train_main, ["--config", "tiny"]), (cv.main, cv_argv)):
        with pytest.raises(SystemExit, match=f"{tmp_path / 'ro'}: Read-only file system"):
            main([*argv, "--output-dir", str(tmp_path / "ro")])
