import itertools

import pytest

from affectvlm.data.datasets import Sample
from affectvlm.data.folds import Fold, load_folds, save_folds, split_samples, subject_folds

SUBJECTS = [f"F{i:04d}" for i in range(1, 35)] + [f"M{i:04d}" for i in range(1, 27)]  # 60, like Subset I


def test_no_subject_on_two_sides_and_every_subject_tested_once():
    folds = subject_folds(SUBJECTS, k=10, seed=0)
    assert len(folds) == 10
    tested = list(itertools.chain.from_iterable(f.test for f in folds))
    assert sorted(tested) == sorted(SUBJECTS)  # each subject in exactly one test fold
    for f in folds:
        train, val, test = set(f.train), set(f.val), set(f.test)
        assert not (train & test) and not (train & val) and not (val & test)
        assert train | val | test == set(SUBJECTS)
        assert len(test) == 6 and len(val) == 5 and len(train) == 49


def test_seeded_repeatable_and_repeats_differ():
    assert subject_folds(SUBJECTS, seed=1) == subject_folds(SUBJECTS, seed=1)
    assert subject_folds(SUBJECTS, seed=1) != subject_folds(SUBJECTS, seed=2)
    assert subject_folds(SUBJECTS, seed=1, repeat=1) != subject_folds(SUBJECTS, seed=1)


def test_samples_split_by_subject_and_json_roundtrip(tmp_path):
    samples = [
        Sample(paths=(f"{s}_{k}.wrl",), subject=s, label="anger", dataset="bu3dfe")
        for s in SUBJECTS
        for k in range(3)
    ]
    folds = subject_folds(samples, k=5, seed=0, val_subjects=4)
    train, val, test = split_samples(samples, folds[2])
    assert len(train) + len(val) + len(test) == len(samples)
    assert not {s.subject for s in train} & {s.subject for s in test}
    assert len({s.subject for s in val}) == 4
    path = tmp_path / "folds.json"
    save_folds(path, folds, dataset="bu3dfe", protocol="subset1", seed=0)
    assert load_folds(path) == folds


def test_bad_input_rejected(tmp_path):
    with pytest.raises(ValueError):
        subject_folds(SUBJECTS[:3], k=10)
    with pytest.raises(ValueError, match="both train and test"):
        Fold(0, ("a",), (), ("a",))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a folds file"):
        load_folds(tmp_path / "x.json")
