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


def test_a_person_with_two_ids_is_on_one_side_of_every_fold():
    """SynthFER-3D names one person F0001 in its 3D scans and F001 in its 4D sequences."""
    from affectvlm.data.synth import person_of

    ids = SUBJECTS + [f"{s[0]}{int(s[1:]):03d}" for s in SUBJECTS]  # both ids of 60 people
    per_id = subject_folds(ids, k=10, seed=0)
    split_apart = sum(
        f.side(s) != f.side(f"{s[0]}{int(s[1:]):03d}") for f in per_id for s in SUBJECTS
    )  # fmt: skip
    assert split_apart > 0  # the per-id split separates a person's scans from their sequences
    folds = subject_folds(ids, k=10, seed=0, person=person_of)
    for f in folds:
        for s in SUBJECTS:
            assert f.side(s) == f.side(f"{s[0]}{int(s[1:]):03d}") is not None
        assert len(f.test) == 12 and len(f.val) == 10  # 6 and 5 people, two ids each
    assert sorted(itertools.chain.from_iterable(f.test for f in folds)) == sorted(ids)
    # one id per person: the split is the per-id split, whatever names the persons get
    assert subject_folds(SUBJECTS, k=10, seed=0, person=person_of) == subject_folds(SUBJECTS, k=10, seed=0)
    assert person_of("F001") == person_of("F0001") == "F0001" and person_of("S012") == "S012"


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
