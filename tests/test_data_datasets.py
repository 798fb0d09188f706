import logging
import shutil

import pytest

from affectvlm.data.datasets import (
    BP4D_TASKS,
    DatasetError,
    cross_dataset,
    read_bosphorus,
    read_bp4d,
    read_bu3dfe,
    read_bu4dfe,
    read_dataset,
    select_protocol,
)
from affectvlm.data.synth import SynthConfig, write_synth_tree
from affectvlm.testing import toy_face_model

# Tiny trees written once per session by the SynthFER-3D writer, in each dataset's real layout. The readers
# look at paths only, so the writer runs on the stand-in face model (no Surrey Face Model needed).
CFG = SynthConfig.preset("easy", seed=5, num_subjects=3)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    model = toy_face_model()
    root = tmp_path_factory.mktemp("trees")
    for layout, subjects, kwargs in (
        ("bu3dfe", [0, 1], dict(labels=("neutral", "anger", "fear"), intensities=(1, 4))),
        ("bosphorus", [0, 1], {}),
        ("bu4dfe", [0], dict(labels=("happiness", "surprise"), num_frames=3)),
        ("bp4d", [1], dict(labels=("happiness", "disgust"), num_frames=3)),
    ):
        write_synth_tree(root / layout, layout, CFG, model, subjects=subjects, progress=False, **kwargs)
    return root


def _copy(trees, name, tmp_path):
    return shutil.copytree(trees / name, tmp_path / name)


def test_bu3dfe_reader(trees):
    samples = read_bu3dfe(trees / "bu3dfe")
    assert len(samples) == 2 * (1 + 2 * 2) and not samples.issues
    s = next(x for x in samples if x.label == "fear" and x.intensity == 4)
    assert s.path.endswith("_F3D.wrl") and s.subject[0] in "FM"
    assert s.metadata["gender"] == {"F": "female", "M": "male"}[s.subject[0]]
    assert s.metadata["ethnicity"] in ("WH", "AE", "BL", "LA", "IN", "AM")
    assert {x.intensity for x in samples if x.label == "neutral"} == {0}
    assert read_dataset("BU-3DFE", trees / "bu3dfe") == samples


def test_bu3dfe_skips_junk_and_reports_malformed(trees, tmp_path, caplog):
    root = _copy(trees, "bu3dfe", tmp_path)
    (root / "viewer").mkdir()
    (root / "viewer" / "x.wrl").write_text("#VRML V2.0 utf8\n")
    (root / "readme.txt").write_text("hi")
    subject = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "viewer")[0]
    good = next(subject.glob("*_F3D.wrl"))
    shutil.copy(good, subject / f"{subject.name}_XX01WH_F3D.wrl")  # unknown expression code
    shutil.copy(good, subject / "junk.wrl")  # not the naming scheme
    with caplog.at_level(logging.WARNING):
        samples = read_bu3dfe(root)
    assert len(samples) == 10 and len(samples.issues) == 2
    assert any("XX" in i for i in samples.issues) and any("junk.wrl" in i for i in samples.issues)
    assert "malformed" in caplog.text
    with pytest.raises(DatasetError, match="unknown expression code"):
        read_bu3dfe(root, strict=True)


def test_missing_and_empty_roots_say_what(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_bu3dfe(tmp_path / "nope")
    (tmp_path / "F0001").mkdir()
    (tmp_path / "F0001" / "F0001_AN01WH_F3D.bnd").write_text("0 1 2 3\n")
    with pytest.raises(
        DatasetError, match=r"(?s)no BU-3DFE samples.*F0001_AN01WH_F3D\.wrl.*no \*_F3D\.wrl scans"
    ):
        read_bu3dfe(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        read_dataset("casme", tmp_path)


def test_bosphorus_reader_and_protocol(trees, tmp_path):
    samples = read_bosphorus(trees / "bosphorus")
    assert len(samples) == 2 * 7 and {s.subject for s in samples} == {"bs000", "bs001"}
    root = _copy(trees, "bosphorus", tmp_path)
    (root / "bs000" / "bs000_LFAU_12_0.bnt").write_bytes((root / "bs000" / "bs000_N_N_0.bnt").read_bytes())
    (root / "bs001" / "bs001_E_ANGER_0.bnt").unlink()
    samples = read_bosphorus(root)
    assert any(s.label == "LFAU_12" for s in samples)
    six = select_protocol(samples, "bosphorus-six")
    assert {s.subject for s in six} == {"bs000"} and len(six) == 6  # bs001 lacks anger
    assert len(select_protocol(samples, "bosphorus-six", require_all=False)) == 11


def test_bu4dfe_reader_skips_viewer_and_counts_frames(trees, tmp_path):
    samples = read_bu4dfe(trees / "bu4dfe")
    assert len(samples) == 2 and all(len(s.paths) == 3 and s.is_sequence for s in samples)
    assert samples[0].paths[0].endswith("000.wrl") and (trees / "bu4dfe" / "BU_WrlViewer_V2").is_dir()
    root = _copy(trees, "bu4dfe", tmp_path)
    seq = next(root.glob("*/Happy"))
    (seq / "001.wrl").unlink()
    (seq.parent / "Bored").mkdir()
    samples = read_bu4dfe(root)
    assert any("missing from the numbering" in i for i in samples.issues)
    assert any("Bored" in i for i in samples.issues)
    assert len(select_protocol(samples, "bu4dfe-six")) == 2


def test_bp4d_reader_task_map_and_cross_dataset(trees, tmp_path):
    samples = read_bp4d(trees / "bp4d")
    assert {s.metadata["task"] for s in samples} == {"T1", "T8"}
    assert {s.label for s in samples} == {"happiness", "disgust"}
    custom = read_bp4d(trees / "bp4d", task_map={**BP4D_TASKS, "T1": "amusement"})
    assert "amusement" in {s.label for s in custom}
    train, test = cross_dataset(read_bu4dfe(trees / "bu4dfe"), samples, test_tasks=("T1",))
    assert {s.label for s in test} == {"happiness"} and {s.dataset for s in train} == {"bu4dfe"}
    root = tmp_path / "bp4d2d"
    (root / "F001" / "T1").mkdir(parents=True)
    (root / "F001" / "T1" / "0000.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="only 2D images"):
        read_bp4d(root)


def test_bu3dfe_protocols(trees):
    samples = read_bu3dfe(trees / "bu3dfe")
    sub1 = select_protocol(samples, "bu3dfe-subset1", num_subjects=2)
    assert {s.intensity for s in sub1} == {4} and {s.label for s in sub1} == {"anger", "fear"}
    sub2 = select_protocol(samples, "bu3dfe-subset2", num_subjects=1, seed=3)
    assert {s.intensity for s in sub2} == {1, 4} and len({s.subject for s in sub2}) == 1
    with pytest.raises(DatasetError, match="needs 60 subjects"):
        select_protocol(samples, "bu3dfe-subset1")
    with pytest.raises(DatasetError, match="for bu3dfe samples"):
        select_protocol(read_bosphorus(trees / "bosphorus"), "bu3dfe-subset1")
