"""`prepare` on a real dataset's tree: which folder a sample list goes to, reruns after a repair, side files and
frames that cannot be read, files that are no face, names read twice, and SynthFER-3D-only options.

The trees are written from the stand-in face model (`toy_face_model`, no Surrey Face Model needed), as small as
each test allows: every render is 32 px."""

import json
import logging
import shutil

import numpy as np
import pytest

from affectvlm.data.__main__ import main as data_main
from affectvlm.data.cache import CacheError, RenderCacheDataset, RenderSettings, prepare_cache
from affectvlm.data.datasets import read_bu3dfe
from affectvlm.data.synth import SynthConfig, write_synth_tree
from affectvlm.scan import load_scan
from affectvlm.testing import toy_face_model

CFG = SynthConfig(seed=2, num_subjects=2, subdivision_prob=0.0, intensity_levels=(1.0,))
SETTINGS = RenderSettings(size=32, frames=3)
PREPARE = ["prepare", "--dataset", "bu3dfe", "--size", "32", "--frames", "3"]


def bu3dfe_tree(root, labels=("neutral", "happiness"), intensities=(1,)):
    write_synth_tree(
        root, "bu3dfe", CFG, toy_face_model(), subjects=[0], labels=labels, intensities=intensities, progress=False
    )
    return root


def report_of(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


# --- 1. which folder: the sample list keys it; the same list read from another path resumes ---------------------


def test_protocol_gets_its_own_folder_and_root_forms_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bu3dfe_tree(tmp_path / "BU-3DFE")  # neutral and happiness 1: bu3dfe-subset2 is the happiness scan
    out = tmp_path / "cache"
    # docs/data.md: the full render, then a protocol's, with the same --out; the root relative, then absolute
    for argv in (["--root", "BU-3DFE"], ["--root", str(tmp_path / "BU-3DFE")], ["--root", "BU-3DFE/", "--shard-size", "1"],
                 ["--root", "BU-3DFE", "--protocol", "bu3dfe-subset2"]):  # fmt: skip
        assert data_main([*PREPARE, *argv, "--out", str(out)]) == 0, capsys.readouterr().err
    full, subset = f"bu3dfe-{SETTINGS.key()}", f"bu3dfe-subset2-{SETTINGS.key()}"
    assert sorted(p.name for p in out.iterdir()) == [full, subset]  # a full render keeps its old name
    assert len(RenderCacheDataset(out / full)) == 2 and len(RenderCacheDataset(out / subset)) == 1
    assert json.loads((out / full / "cache.json").read_text())["plan"]["shard_size"] == 250  # the folder's own
    # another sample list in the same folder: one line saying what differs and what to do, no traceback
    next((tmp_path / "BU-3DFE").glob("*/*_NE00*_F3D.wrl")).unlink()
    capsys.readouterr()
    assert data_main([*PREPARE, "--root", "BU-3DFE", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "another sample list" in err and "2 samples" in err and "1 samples" in err and "remove the folder" in err


def test_a_selection_without_a_name_is_refused_in_the_full_folder(tmp_path):
    root = bu3dfe_tree(tmp_path / "bu3dfe")
    prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    one = [s for s in read_bu3dfe(root) if s.label == "happiness"]
    with pytest.raises(CacheError, match="another sample list"):
        prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, samples=one, progress=False)
    named = prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, samples=one, selection="happy", progress=False)
    assert named.name == f"bu3dfe-happy-{SETTINGS.key()}" and len(RenderCacheDataset(named)) == 1


# --- 2. a rerun renders the samples that failed again ------------------------------------------------------------


def test_rerun_renders_a_repaired_file_and_the_report_is_current(tmp_path):
    root = bu3dfe_tree(tmp_path / "bu3dfe")
    bad = sorted(root.glob("*/*_NE00*_F3D.wrl"))[0]
    good = bad.read_bytes()
    bad.write_bytes(b"")
    folder = prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    assert report_of(folder)["rendered"] == 1 and "empty file" in report_of(folder)["bad"][0]["error"]
    npy = folder / "shards" / "00000.npy"
    stamp = npy.stat().st_mtime_ns
    prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)  # still broken: nothing rewritten
    assert npy.stat().st_mtime_ns == stamp and len(report_of(folder)["bad"]) == 1
    bad.write_bytes(good)  # repaired
    prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    assert report_of(folder) == {"rendered": 2, "bad": [], "notes": []}
    fresh = prepare_cache("bu3dfe", root, tmp_path / "fresh", SETTINGS, progress=False)
    a, b = RenderCacheDataset(folder), RenderCacheDataset(fresh)
    assert [e["key"] for e in a.entries] == [e["key"] for e in b.entries]
    assert np.array_equal(a.read(range(len(a))), b.read(range(len(b))))  # the same cache as a render from scratch


# --- 3. an unreadable texture is a missing one; an unreadable frame is a gap ----------------------------------------


def test_truncated_texture_is_read_as_missing(tmp_path, caplog):
    root = bu3dfe_tree(tmp_path / "bu3dfe", labels=("happiness",))
    wrl = sorted(root.glob("*/*_F3D.wrl"))[0]
    intact = load_scan(wrl)
    assert intact.texture is not None
    bmp = wrl.with_suffix(".bmp")
    bmp.write_bytes(bmp.read_bytes()[:300])  # truncated
    with caplog.at_level(logging.WARNING):
        scan = load_scan(wrl)
    assert bmp.name in caplog.text and "reading the scan without it" in caplog.text
    assert scan.texture is None
    np.testing.assert_array_equal(scan.vertices, intact.vertices)  # the geometry, all of it
    np.testing.assert_array_equal(scan.faces, intact.faces)
    bmp.write_bytes(b"not an image at all")
    assert load_scan(wrl).texture is None
    folder = prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    assert report_of(folder)["rendered"] == 1 and report_of(folder)["bad"] == []


def bu4dfe_tree(root, frames=4):
    write_synth_tree(
        root, "bu4dfe", CFG, toy_face_model(), subjects=[1], labels=("fear",), num_frames=frames, progress=False
    )
    return sorted(root.glob("F*/Fear/*.wrl"))


def test_an_unreadable_frame_is_left_out_with_a_note(tmp_path):
    frames = bu4dfe_tree(tmp_path / "bu4dfe")
    frames[2].write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2")
    folder = prepare_cache("bu4dfe", tmp_path / "bu4dfe", tmp_path / "cache", SETTINGS, progress=False)
    report = report_of(folder)
    assert report["rendered"] == 1 and report["bad"] == []
    assert len(report["notes"]) == 1 and report["notes"][0].startswith(f"{frames[2]}: frame left out of bu4dfe/")
    assert "truncated" in report["notes"][0]


def test_a_sequence_with_too_few_readable_frames_is_bad(tmp_path):
    frames = bu4dfe_tree(tmp_path / "bu4dfe")
    for f in frames[1:]:
        f.write_bytes(b"")
    folder = prepare_cache("bu4dfe", tmp_path / "bu4dfe", tmp_path / "cache", SETTINGS, progress=False)
    (bad,) = report_of(folder)["bad"]
    assert "frames cannot be read, too few left" in bad["error"] and "empty file" in bad["error"]


# --- 4. what the predictor refuses as no face is left out; what it doubts is noted ---------------------------------


def _vrml(path, points, faces=()):
    pts = ", ".join(" ".join(f"{x:g}" for x in p) for p in points)
    idx = " ".join(" ".join(str(i) for i in f) + " -1" for f in faces)
    path.write_text(
        f"#VRML V2.0 utf8\nShape {{ geometry IndexedFaceSet {{ coord Coordinate {{ point [ {pts} ] }} "
        f"coordIndex [ {idx} ] }} }}\n"
    )


def test_non_faces_are_left_out_or_noted_with_the_file_and_why(tmp_path):
    root = bu3dfe_tree(tmp_path / "bu3dfe", labels=("neutral", "anger", "disgust"))
    anger, disgust = (next(root.glob(f"*/*_{c}01*_F3D.wrl")) for c in ("AN", "DI"))
    _vrml(anger, [(0, 0, 0), (60, 0, 0), (0, 60, 0)], [(0, 1, 2)])  # a lone triangle
    grid = np.stack(np.meshgrid(np.linspace(-80, 80, 40), np.linspace(-80, 80, 40)), -1).reshape(-1, 2)
    plane = np.concatenate([grid, np.zeros((len(grid), 1))], 1)
    k = np.arange(39 * 39)
    i, j = k // 39, k % 39
    quads = np.stack([i * 40 + j, i * 40 + j + 1, (i + 1) * 40 + j + 1, (i + 1) * 40 + j], 1)
    _vrml(disgust, plane, quads)  # a flat plane
    folder = prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    report = report_of(folder)
    (bad,) = report["bad"]
    assert bad["paths"] == [str(anger)] and bad["error"].startswith("InputError: not a face")
    assert [n for n in report["notes"] if "face check" in n] == [
        f"{disgust}: the predictor's face check: " + n.split(": the predictor's face check: ", 1)[1]
        for n in report["notes"]
    ]
    assert len(report["notes"]) == 1 and "no nose stands out" in report["notes"][0]
    keys = [e["key"] for e in RenderCacheDataset(folder).entries]
    assert anger.stem not in " ".join(keys) and disgust.stem in " ".join(keys)  # the plane kept, with its note


# --- 5. one file under two names is one sample ----------------------------------------------------------------------


def test_names_differing_in_case_are_one_sample(tmp_path):
    root = bu3dfe_tree(tmp_path / "bu3dfe", labels=("happiness",))
    wrl = next(root.glob("*/*_F3D.wrl"))
    upper = wrl.with_suffix(".WRL")
    shutil.copy(wrl, upper)
    index = read_bu3dfe(root)
    assert [s.path for s in index] == [str(upper)]  # the first in sorted order ('W' < 'w')
    assert index.issues == [f"{wrl}: duplicate of {upper} (the same sample's name in another case); read that one only"]
    folder = prepare_cache("bu3dfe", root, tmp_path / "cache", SETTINGS, progress=False)
    assert report_of(folder)["rendered"] == 1 and report_of(folder)["notes"] == index.issues


def test_frames_numbered_twice_are_one_frame(tmp_path):
    frames = bu4dfe_tree(tmp_path / "bu4dfe")
    shutil.copy(frames[1], frames[1].with_suffix(".WRL"))
    from affectvlm.data.datasets import read_bu4dfe

    index = read_bu4dfe(tmp_path / "bu4dfe", strict=False)
    assert index[0].paths == tuple(str(f) for f in [frames[0], frames[1].with_suffix(".WRL"), *frames[2:]])
    assert [i for i in index.issues if "duplicate" in i] == [
        f"{frames[1]}: duplicate of frame {frames[1].stem}.WRL (the same frame number); read that one only"
    ]


# --- 6. SynthFER-3D's options are refused for a real dataset --------------------------------------------------------


def test_synth_only_options_are_refused_for_a_dataset(tmp_path, capsys):
    out = str(tmp_path / "cache")
    assert data_main([*PREPARE, "--root", str(tmp_path), "--out", out, "--subjects", "5", "--preset", "hard"]) == 2
    err = capsys.readouterr().err
    assert "--preset, --subjects: for --dataset synth only" in err and err.count("\n") == 1
    assert data_main(["prepare", "--dataset", "synth", "--protocol", "bu3dfe-subset1", "--out", out]) == 2
    assert "takes no --root or --protocol" in capsys.readouterr().err
    assert data_main([*PREPARE, "--root", str(tmp_path), "--out", out, "--size", "4"]) == 2
    assert "size >= 8" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
