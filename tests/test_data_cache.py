import json
import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from affectvlm.data.cache import RenderCacheDataset, RenderSettings, prepare_cache
from affectvlm.data.datasets import read_bu3dfe
from affectvlm.data.synth import EMOTIONS, SynthConfig, write_synth_tree
from affectvlm.testing import toy_face_model

# coarse meshes and one intensity level (7 scans a subject): fast renders. The SynthFER-3D caches need the
# Surrey Face Model (the `sfm_dir` fixture skips without it); the dataset-tree tests write their trees from
# the stand-in face model, since what they test is reading and rendering a real dataset's layout.
CFG = SynthConfig(seed=2, num_subjects=2, subdivision_prob=0.0, intensity_levels=(1.0,))
SETTINGS = RenderSettings(size=32, frames=3, batch=10)


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory, sfm_dir):
    out = tmp_path_factory.mktemp("cache")
    return prepare_cache(
        "synth", out=out, settings=SETTINGS, synth_config=CFG, sfm_dir=sfm_dir, shard_size=8, progress=False
    )


def test_synth_cache_contents(synth_cache):
    doc = json.loads((synth_cache / "cache.json").read_text())
    assert doc["settings_key"] == SETTINGS.key() and synth_cache.name.endswith(f"-{SETTINGS.key()}")
    assert "orient" not in doc["settings"]  # recorded as the caches before stop 58 were: "auto" is left out
    assert [v["name"] for v in doc["views"]] == ["frontal", "left", "right"]
    ds = RenderCacheDataset(synth_cache)
    assert len(ds) == 2 * 7 + 2 * 6 and ds.report() == {"rendered": 26, "bad": []}
    item = ds[0]
    assert item["pixel_values"].shape == (3, 32, 32, 3) and item["pixel_values"].dtype == torch.uint8
    assert item["pixel_values"].float().mean() > 5  # a face, not a black image
    batch = ds[[5, 0, 20]]
    assert torch.equal(batch["pixel_values"][1], item["pixel_values"]) and batch["labels"].shape == (3,)
    seq = [i for i, e in enumerate(ds.entries) if e["sequence"]]
    assert len(seq) == 12 and ds.entries[seq[0]]["dataset"] == "synth4d"
    assert {ds.labels[int(ds[i]["labels"])] for i in seq} == set(EMOTIONS)
    assert all("gender" in e["metadata"] for e in ds.entries)
    # a fold's subjects restrict the dataset; a DataLoader reads batched dicts
    one = RenderCacheDataset(synth_cache, subjects=[ds.entries[0]["subject"]])
    assert 0 < len(one) < len(ds)
    loader = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=RenderCacheDataset.collate)
    seen = sum(len(b["labels"]) for b in loader)
    assert seen == len(ds)


def test_resume_skips_done_shards_and_is_deterministic(tmp_path, synth_cache, sfm_dir):
    kwargs = dict(
        out=tmp_path, settings=SETTINGS, synth_config=CFG, sfm_dir=sfm_dir, shard_size=8, progress=False
    )
    folder = prepare_cache("synth", **kwargs, max_shards=2)  # "interrupted" after two shards
    assert not (folder / "index.json").exists()
    with pytest.raises(FileNotFoundError, match="not complete"):
        RenderCacheDataset(folder)
    first = (folder / "shards" / "00000.npy").stat().st_mtime_ns
    prepare_cache("synth", **kwargs)
    assert (folder / "shards" / "00000.npy").stat().st_mtime_ns == first  # not rendered again
    a, b = RenderCacheDataset(folder), RenderCacheDataset(synth_cache)
    assert len(a) == len(b)
    assert np.array_equal(a.read(range(len(a))), b.read(range(len(b))))  # same seed, same pixels
    # another shard size keeps the folder's own (the unit its shards were written in) and its name
    assert prepare_cache("synth", **{**kwargs, "shard_size": 4}) == folder
    assert json.loads((folder / "cache.json").read_text())["plan"]["shard_size"] == 8
    assert (folder / "shards" / "00000.npy").stat().st_mtime_ns == first


def test_bad_scan_is_reported_not_dropped(tmp_path, caplog):
    root = tmp_path / "bu3dfe"
    labels = ("neutral", "happiness")
    write_synth_tree(
        root, "bu3dfe", CFG, toy_face_model(), subjects=[0], labels=labels, intensities=(1,), progress=False
    )
    bad = sorted(root.glob("*/*_NE00*_F3D.wrl"))[0]
    truncated = "Transform { children [ Shape { geometry IndexedFaceSet { coord Coordinate { point [ 1 2"
    bad.write_text("#VRML V2.0 utf8\n" + truncated)
    with caplog.at_level(logging.WARNING):
        folder = prepare_cache("bu3dfe", root, tmp_path / "cache", RenderSettings(size=32), progress=False)
    assert "skipping" in caplog.text and bad.name in caplog.text
    report = json.loads((folder / "report.json").read_text())
    assert report["rendered"] == 1 and len(report["bad"]) == 1
    assert report["bad"][0]["paths"] == [str(bad)] and report["bad"][0]["error"].startswith("ScanError")
    ds = RenderCacheDataset(folder)
    assert [e["label"] for e in ds.entries] == ["happiness"]
    assert read_bu3dfe(root)  # the reader itself lists both: the bad file is only found when loaded


def test_settings_key_separates_caches():
    assert RenderSettings(size=32).key() != RenderSettings(size=64).key()
    assert RenderSettings(batch=1).key() == RenderSettings(batch=50).key()  # batching does not change pixels
    assert RenderSettings(views=[[0, 0], [30, 0]]).key() == RenderSettings(views=((0, 0), (30, 0))).key()
    with pytest.raises(ValueError):
        RenderSettings(size=0)


def test_a_setting_added_later_keeps_the_older_caches_names():
    """The keys of the caches the shipped models were trained and measured on (96 px, 8 frames; 96 px, 12), as
    docs/RESULTS.md names them: `orient` (stop 58) changes a key only when it is given."""
    assert RenderSettings(size=96, frames=8).key() == "59821c135b11"
    assert RenderSettings(size=96).key() == "8d3ba3455e45"
    assert RenderSettings(size=96, frames=8, orient="-z").key() != "59821c135b11"


def test_bu4dfe_tree_renders_dynamic_images(tmp_path):
    root = tmp_path / "bu4dfe"
    labels = ("fear", "surprise")
    write_synth_tree(
        root, "bu4dfe", CFG, toy_face_model(), subjects=[1], labels=labels, num_frames=4, progress=False
    )
    settings = RenderSettings(size=32, frames=3)
    folder = prepare_cache("bu4dfe", root, tmp_path / "cache", settings, progress=False)
    ds = RenderCacheDataset(folder)
    assert [e["label"] for e in ds.entries] == ["fear", "surprise"] and all(e["sequence"] for e in ds.entries)
    assert ds[1]["pixel_values"].shape == (3, 32, 32, 3) and ds.report()["bad"] == []


@pytest.mark.slow
def test_worker_processes_render_the_same_pixels(tmp_path, synth_cache, sfm_dir):
    kwargs = dict(settings=SETTINGS, synth_config=CFG, sfm_dir=sfm_dir, shard_size=8, progress=False)
    folder = prepare_cache("synth", out=tmp_path, workers=2, **kwargs)
    a, b = RenderCacheDataset(folder), RenderCacheDataset(synth_cache)
    assert np.array_equal(a.read(range(len(a))), b.read(range(len(b))))
