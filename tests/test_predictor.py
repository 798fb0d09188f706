"""The high-level predictor and `python -m affectvlm predict`: every input form, and clear errors."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from faces import example_face
from PIL import Image

from affectvlm import AffectVLMModel
from affectvlm.predictor import AffectVLMPredictor, InputError, InputLimits, random_demo_model


@pytest.fixture(scope="module")
def predictor():
    model, processor = random_demo_model()
    return AffectVLMPredictor(model, processor, source="test", is_random=True)


@pytest.fixture(scope="module")
def face():
    return example_face()


def write_obj(path, vertices, faces):
    with open(path, "w") as f:
        f.writelines(f"v {x:.4f} {y:.4f} {z:.4f}\n" for x, y, z in vertices)
        f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
    return path


@pytest.fixture(scope="module")
def scan_file(face, tmp_path_factory):
    mean, faces, _ = face
    return write_obj(tmp_path_factory.mktemp("scan") / "face.obj", mean, faces)


@pytest.fixture(scope="module")
def frames_dir(face, tmp_path_factory):
    mean, faces, expressions = face
    folder = tmp_path_factory.mktemp("frames")
    for t, w in enumerate(np.linspace(0, 1, 6)):
        write_obj(folder / f"{t:03d}.obj", mean + w * expressions, faces)  # towards happiness
    return folder


def rgb(seed, size=(48, 48)):
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


# -- images ---------------------------------------------------------------------------------------------------


def test_images_default_labels(predictor):
    result = predictor(images=[rgb(0), rgb(1), rgb(2)])
    assert result.labels == predictor.default_labels
    assert result.probs.shape == (6,) and result.probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.view_contributions.shape == (3, 6)
    assert result.views.shape == (3, 64, 64, 3) and result.views.dtype == np.uint8
    assert "RANDOM" in result.notes[0]
    assert list(result.scores().values()) == sorted(result.scores().values(), reverse=True)
    assert result.label == max(result.scores(), key=result.scores().get)


def test_images_from_paths_dict_and_missing_views(predictor, tmp_path):
    Image.fromarray(rgb(0)).save(tmp_path / "front.png")
    Image.fromarray(rgb(2)).save(tmp_path / "right.png")
    result = predictor(images={"frontal": str(tmp_path / "front.png"), "right": str(tmp_path / "right.png")})
    assert result.view_mask.tolist() == [True, False, True]
    assert any("missing view(s): left" in note for note in result.notes)
    assert set(result.contributions()) == {"frontal", "right"}


def test_any_labels_and_prompt_dicts(predictor):
    result = predictor(images=[rgb(0), rgb(1), rgb(2)], labels=["joy", "a person in pain", "contempt"])
    assert result.labels == ["joy", "a person in pain", "contempt"]
    result = predictor(
        images=[rgb(0), rgb(1), rgb(2)], labels={"joy": ["a smiling face"], "grief": "a crying face"}
    )
    assert result.labels == ["joy", "grief"]


def test_class_embeddings_are_cached_per_label_set(predictor, monkeypatch):
    calls = []
    original = predictor.model.encode_prompts
    monkeypatch.setattr(
        predictor.model,
        "encode_prompts",
        lambda *a, **k: calls.append(k.get("projected", True)) or original(*a, **k),
    )
    predictor._cache.clear()
    for _ in range(3):
        predictor(images=[rgb(0), rgb(1), rgb(2)], labels=["calm", "angry"])
    predictor(images=[rgb(0), rgb(1), rgb(2)], labels=["calm", "angry", "sad"])
    assert calls.count(True) == 2  # the class embeddings, once per label set
    text_space = calls.count(
        False
    )  # the label check's: each label set, the trained labels, the floor's words
    for _ in range(3):
        predictor(images=[rgb(0), rgb(1), rgb(2)], labels=["calm", "angry"])
    assert calls.count(False) == text_space  # cached too


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"images": [rgb(0)] * 3, "scan": "x.obj"}, "exactly one of"),
        ({"images": [rgb(0)] * 3, "labels": ["only-one"]}, "at least two"),
        ({"images": [rgb(0)] * 3, "labels": ["", " "]}, "at least two"),
        ({"images": {"top": rgb(0)}}, "unknown view"),
        ({"images": [None, None, None]}, "every view is missing"),
        ({"images": [np.zeros((0, 4, 3), np.uint8), rgb(1), rgb(2)]}, "empty image"),
    ],
)
def test_bad_requests(predictor, kwargs, message):
    with pytest.raises(InputError, match=message):
        predictor(**kwargs)


def test_bad_image_files(predictor, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="not an image file"):
        predictor(images=[str(tmp_path / "broken.png"), None, None])
    with pytest.raises(InputError, match="empty"):
        predictor(images=[str(tmp_path / "empty.png"), None, None])
    with pytest.raises(InputError, match="no such file"):
        predictor(images=[str(tmp_path / "nope.png"), None, None])


# -- scans and sequences --------------------------------------------------------------------------------------


def test_scan(predictor, scan_file):
    result = predictor(scan=str(scan_file))
    assert result.views.shape[0] == 3 and result.views.dtype == np.uint8
    assert result.views.std() > 0  # something was drawn
    assert result.view_mask.all()


def test_scan_errors(predictor, tmp_path):
    (tmp_path / "broken.obj").write_text("v 1 2\nf 1 2 3\n")
    (tmp_path / "face.xyz123").write_text("1 2 3\n")
    for name in ("broken.obj", "face.xyz123"):
        with pytest.raises(InputError):
            predictor(scan=str(tmp_path / name))
    (tmp_path / "big.obj").write_text("v 0 0 0\n" * 100)
    small = AffectVLMPredictor(predictor.model, predictor.processor, limits=InputLimits(max_file_bytes=100))
    with pytest.raises(InputError, match="larger than the"):
        small(scan=str(tmp_path / "big.obj"))


def test_sequence_folder_zip_and_list_agree(predictor, frames_dir, tmp_path):
    archive = tmp_path / "seq.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(frames_dir.iterdir()):
            z.write(p, f"some/folder/{p.name}")
    from_dir = predictor(sequence=str(frames_dir))
    from_zip = predictor(sequence=str(archive))
    from_list = predictor(sequence=sorted(str(p) for p in frames_dir.iterdir()))
    np.testing.assert_allclose(from_dir.probs, from_zip.probs, atol=1e-6)
    np.testing.assert_allclose(from_dir.probs, from_list.probs, atol=1e-6)
    assert from_dir.views.shape[0] == 3


def test_sequence_errors(predictor, frames_dir, tmp_path):
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    with pytest.raises(InputError, match="empty|no 3D frames"):
        predictor(sequence=str(empty))
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(InputError, match="not a valid zip"):
        predictor(sequence=str(tmp_path / "bad.zip"))
    clash = tmp_path / "clash.zip"
    with zipfile.ZipFile(clash, "w") as z:
        z.writestr("a/000.obj", "v 0 0 0\n")
        z.writestr("b/000.obj", "v 0 0 0\n")
    with pytest.raises(InputError, match="share a name"):
        predictor(sequence=str(clash))
    few = AffectVLMPredictor(predictor.model, predictor.processor, limits=InputLimits(max_frames=3))
    with pytest.raises(InputError, match="more than the limit of 3"):
        few(sequence=str(frames_dir))
    tiny_zip = AffectVLMPredictor(predictor.model, predictor.processor, limits=InputLimits(max_zip_bytes=10))
    bomb = tmp_path / "big.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("000.obj", "v 0 0 0\n" * 1000)
    with pytest.raises(InputError, match="uncompressed"):
        tiny_zip(sequence=str(bomb))


def test_zip_paths_never_escape(predictor, tmp_path, face):
    mean, faces, apex = face
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../../escaped.obj", write_obj(tmp_path / "f.obj", mean, faces).read_text())
        z.writestr("/abs/000.obj", write_obj(tmp_path / "g.obj", mean + apex, faces).read_text())
    predictor(sequence=str(archive))
    assert not (tmp_path.parent / "escaped.obj").exists()


# -- command line ---------------------------------------------------------------------------------------------


def test_cli_predict_json_and_errors(scan_file, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(scan_file), "--labels", "happy", "sad", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    payload = json.loads(run.stdout)
    assert set(payload["scores"]) == {"happy", "sad"}
    assert payload["views_available"] == ["frontal", "left", "right"]
    (tmp_path / "x.obj").write_text("garbage")
    bad = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(tmp_path / "x.obj")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    assert any(line.startswith("error: ") and "x.obj" in line for line in bad.stderr.splitlines())
    assert "Traceback" not in bad.stderr


def test_render_settings_saved_with_the_processor_are_used(predictor, scan_file, frames_dir):
    import copy

    processor = copy.deepcopy(predictor.processor)
    processor.render_settings = {
        "size": 40,
        "mode": "depth",
        "crop_radius": 80.0,
        "align": False,
        "frames": 3,
    }
    custom = AffectVLMPredictor(predictor.model, processor)
    assert custom(scan=str(scan_file)).views.shape == (3, 40, 40, 3)
    assert custom(sequence=str(frames_dir)).views.shape == (3, 40, 40, 3)


def test_the_texture_image_is_read_only_for_a_model_that_draws_it(face, tmp_path):
    """A model whose views are drawn from the texture (render mode "texture") gets the scan's texture image; one
    that draws the shape does not read it."""
    from affectvlm.scan import Scan, write_obj

    mean, faces, _ = face
    uv = (mean[:, :2] - mean[:, :2].min(0)) / np.ptp(mean[:, :2], 0)
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:, :4] = 255
    path = tmp_path / "face.obj"
    write_obj(path, Scan(mean, faces, uv=uv, texture=texture), texture_name="face.png")
    for mode, read in (("normal", False), ("texture", True)):
        model, processor = random_demo_model()
        processor.render_settings = {"mode": mode}
        predictor = AffectVLMPredictor(model, processor, source="test", is_random=True)
        assert (predictor.load_scan(path).texture is not None) is read, mode


def test_a_local_model_loads_without_loading_bars_and_leaves_the_setting_as_it_was(tmp_path, capfd):
    """transformers draws a "Loading weights" bar for every model it loads: four lines of noise before each answer
    of the CLI for a local checkpoint that loads in a blink. A local folder loads without them; the user's own
    setting for progress bars (the Hub's downloads) is as it was after."""
    from transformers.utils import logging as hf_logging

    model, processor = random_demo_model()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    capfd.readouterr()
    hf_logging.enable_progress_bar()
    AffectVLMPredictor.from_pretrained(tmp_path)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    AffectVLMModel.from_pretrained(tmp_path)  # transformers itself, as a check that the test can see a bar
    assert "Loading weights" in capfd.readouterr().err
