"""Images, labels and frames as people give them, not as the examples are saved: a phone's JPEG with an EXIF
orientation, a 16-bit PNG, a transparent background, a label line with a colon in it, a folder with macOS's
hidden copies. Each is scored by the shipped default to the answer its plain form gets (the truth, where the
example's name says it), or refused, or noted: the answer, not the shape, is what is checked.
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from affectvlm.predictor import (
    DEMO_CHECKPOINT,
    NOT_A_RENDER_NOTE,
    AffectVLMPredictor,
    InputError,
    parse_labels,
    random_demo_model,
)
from affectvlm.processing_affectvlm import AffectVLMProcessor
from affectvlm.scan.archive import collect_frames, extract_frames, frame_files, refuse_archives

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
VIEW_SETS = {
    truth: [EXAMPLES / f"views_{stem}_{view}.png" for view in ("frontal", "left", "right")]
    for stem, truth in (("ict_subject3_anger", "anger"), ("subject1_disgust", "disgust"))
}
needs_model = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


def _exif_rotated(path: Path, out: Path) -> Path:
    """The view as a phone stores it: pixels turned 90 degrees, EXIF orientation 6 saying how to show them."""
    image = Image.open(path).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(out, quality=95, exif=exif)
    return out


def _sixteen_bit(path: Path, out: Path) -> Path:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(out)  # mode I;16
    return out


def _transparent_over_white(path: Path, out: Path) -> Path:
    """The background made transparent, with white under it (what an editor's 'remove background' leaves)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    background = rgb.max(axis=-1) < 8
    rgba = np.dstack([np.where(background[..., None], 255, rgb), np.where(background, 0, 255)]).astype(
        np.uint8
    )
    Image.fromarray(rgba, "RGBA").save(out)
    return out


@needs_model
@pytest.mark.parametrize("variant", ["exif", "16-bit", "transparent", "uint16 arrays"])
@pytest.mark.parametrize("truth", sorted(VIEW_SETS))
def test_views_as_people_save_them_get_the_plain_answer(predictor, tmp_path, variant, truth):
    paths = VIEW_SETS[truth]
    plain = predictor(images=[str(p) for p in paths], labels=EMOTIONS)
    assert plain.label == truth
    if variant == "uint16 arrays":
        views = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint16) * 257 for p in paths]
    else:
        write = {"exif": _exif_rotated, "16-bit": _sixteen_bit, "transparent": _transparent_over_white}[
            variant
        ]
        suffix = ".jpg" if variant == "exif" else ".png"
        views = [str(write(p, tmp_path / f"{p.stem}{suffix}")) for p in paths]
    got = predictor(images=views, labels=EMOTIONS)
    assert got.label == truth and not got.notes
    np.testing.assert_allclose(got.probs, plain.probs, atol=0.05)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_pixels_as_pil_does(orientation):
    pixels = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    want = np.asarray(ImageOps.exif_transpose(image.copy()))
    np.testing.assert_array_equal(AffectVLMProcessor._to_rgb_array(image, "view"), want)


def test_transparency_is_laid_over_black():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 0
    rgba[1, 1] = (10, 20, 30, 255)
    rgb = AffectVLMProcessor._to_rgb_array(rgba, "view")
    assert rgb[1, 1].tolist() == [10, 20, 30] and rgb.sum() == 60
    grey_alpha = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert AffectVLMProcessor._to_rgb_array(grey_alpha, "view").sum() == 3 * 10


@needs_model
@needs_model
def test_views_far_smaller_than_the_model_reads_are_noted(predictor):
    """The anger example's views at 32 px read fear 0.85 with no word; at 64 px and up they read anger, unnoted."""
    from affectvlm.predictor import LOW_RESOLUTION_NOTE

    views = [Image.open(p).convert("RGB") for p in VIEW_SETS["anger"]]
    for size, noted in ((32, True), (64, False), (224, False)):
        result = predictor(images=[np.asarray(v.resize((size, size), Image.BICUBIC)) for v in views], labels=EMOTIONS)
        said = LOW_RESOLUTION_NOTE.split("{pixels}")[1].split("{size}")[0]  # " pixels across, under the "
        assert any(said in n for n in result.notes) == noted, (size, result.notes)
        if noted:
            assert "frontal, left, right view(s) are only 32 pixels across" in " ".join(result.notes)
        else:
            assert result.label == "anger"


def test_a_coloured_blank_is_refused_and_noise_is_noted(predictor):
    flat = np.full((64, 64, 3), (200, 150, 120), np.uint8)
    with pytest.raises(InputError, match="blank"):
        predictor(images=[flat, flat, flat], labels=EMOTIONS)
    noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    assert NOT_A_RENDER_NOTE in predictor(images=[noise, noise, noise], labels=EMOTIONS).notes
    # a flat shape on black has a background but no shading: a white box read happiness 0.38, stripes neutral 0.56,
    # with no word
    box = np.zeros((224, 224, 3), np.uint8)
    box[60:160, 70:150] = 255
    stripes = np.zeros((224, 224, 3), np.uint8)
    stripes[::8] = 255
    for shape in (box, stripes):
        assert NOT_A_RENDER_NOTE in predictor(images=[shape, shape, shape], labels=EMOTIONS).notes
    views = [np.asarray(Image.open(p).convert("RGB")) for p in VIEW_SETS["anger"]]
    assert NOT_A_RENDER_NOTE not in predictor(images=views, labels=EMOTIONS).notes


def test_a_colon_makes_a_prompt_line_only_where_a_label_and_words_are_around_it():
    assert parse_labels("happiness, sadness, anger\nnote: test") == {
        "happiness": [],
        "sadness": [],
        "anger": [],
        "note": ["test"],
    }
    assert parse_labels("happiness\nsadness\nanger at 10:30") == ["happiness", "sadness", "anger at 10:30"]
    assert parse_labels("joy, smile :)") == ["joy", "smile :)"]
    assert parse_labels("happy: a smiling face; a grin\nsad:a frown") == {
        "happy": ["a smiling face", "a grin"],
        "sad": ["a frown"],
    }
    # what the app's action-unit picker adds: one label, its description (commas and all) its prompt
    au = parse_labels(
        "happiness, fear\nAU5 upper lid raiser: a face with upper eyelids raised, eyes wide open"
    )
    assert au["AU5 upper lid raiser"] == ["a face with upper eyelids raised, eyes wide open"]
    assert list(au) == ["happiness", "fear", "AU5 upper lid raiser"]


@needs_model
def test_plain_labels_beside_a_prompt_line_are_scored_with_their_own_prompts(predictor):
    scan = EXAMPLES / "scan_subject0_happiness.ply"
    got = predictor(
        scan=scan, labels="happiness, sadness, anger\nsurprise: a face with raised brows and open mouth"
    )
    assert got.labels == ["happiness", "sadness", "anger", "surprise"] and got.label == "happiness"


@needs_model
def test_the_cli_splits_labels_as_the_app_does():
    out = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(EXAMPLES / "scan_subject1_surprise.ply"), "--json",
         "--labels", "happiness, sadness", "surprise", "anger: a furious face"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["label"] == "surprise"
    assert sorted(result["scores"]) == ["anger", "happiness", "sadness", "surprise"]


def test_hidden_files_and_a_readme_beside_frames_are_not_frames(tmp_path):
    for name in ("frame_2.ply", "frame_10.ply", "frame_1.ply", "._frame_1.ply", ".DS_Store", "README.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in collect_frames(tmp_path)] == ["frame_1.ply", "frame_2.ply", "frame_10.ply"]
    uploaded = [tmp_path / "README.txt", tmp_path / "frame_10.ply", tmp_path / "frame_2.ply"]
    assert [p.name for p in frame_files(uploaded)] == ["frame_2.ply", "frame_10.ply"]


@needs_model
def test_a_zip_with_a_readme_and_landmark_lists_beside_its_frames_reads_as_the_frames(predictor, tmp_path):
    """A README and a landmark list per frame (`.txt`, which may also be a point cloud) zipped with the frames: the
    zip is read as its frames, as the same files in a folder or uploaded together are (the zip's .txt files were
    once read as frames, and the sequence refused)."""
    source = EXAMPLES / "sequence_subject3_happiness.zip"
    with zipfile.ZipFile(source) as plain, zipfile.ZipFile(tmp_path / "annotated.zip", "w") as annotated:
        for info in plain.infolist():
            annotated.writestr(info, plain.read(info))
            annotated.writestr(Path(info.filename).stem + "_landmarks.txt", "12.5 3.0 40.1\n-12.5 3.0 40.1\n")
        annotated.writestr("README.txt", "BU-4DFE-like capture, 25 fps")
    alone, annotated = (predictor(sequence=p, labels=EMOTIONS) for p in (source, tmp_path / "annotated.zip"))
    assert annotated.label == alone.label == "happiness"
    np.testing.assert_allclose(annotated.probs, alone.probs, atol=1e-6)


def test_a_zip_among_other_frames_or_inside_a_zip_is_named(tmp_path):
    """A zip is a sequence of its own: uploaded with other files it was left out without a word (the one other
    frame scored as the whole sequence); zipped inside another zip, the message said no frames were found."""
    (tmp_path / "frame_1.ply").write_bytes(b"x")
    with zipfile.ZipFile(tmp_path / "inner.zip", "w") as inner:
        inner.writestr("frame_1.ply", "x")
    with pytest.raises(InputError, match="inner.zip: a zip holds a whole sequence"):
        refuse_archives([tmp_path / "frame_1.ply", tmp_path / "inner.zip"])  # the app's sequence tab asks first
    assert [p.name for p in collect_frames(tmp_path)] == ["frame_1.ply"]  # a folder's listing leaves it out
    with pytest.raises(InputError, match="inner.zip: a zip holds a whole sequence"):
        AffectVLMPredictor(*random_demo_model()).prepare_sequence([tmp_path / "frame_1.ply", tmp_path / "inner.zip"])
    with zipfile.ZipFile(tmp_path / "outer.zip", "w") as outer:
        outer.write(tmp_path / "inner.zip", "inner.zip")
    with pytest.raises(InputError, match="outer.zip: the frames are in a zip inside it"):
        extract_frames(tmp_path / "outer.zip", tmp_path)


@pytest.mark.parametrize("entries", [25_000, 70_000], ids=["classic end record", "zip64 end record"])
def test_a_zip_listing_more_entries_than_the_cap_is_refused_before_it_is_read(tmp_path, entries):
    """Empty files that are not frames count too: a zip's listing is loaded whole (1.15 M empty entries once took
    660 MB before a cap was checked). Past 65,535 entries the count is in the zip64 end record."""
    with zipfile.ZipFile(tmp_path / "many.zip", "w") as many:
        for i in range(entries):
            many.writestr(f"n{i}", b"")
    with pytest.raises(InputError, match=f"many.zip: {entries} entries is more than the limit"):
        extract_frames(tmp_path / "many.zip", tmp_path)


def test_one_entry_listed_twice_is_told_as_such(tmp_path):
    with zipfile.ZipFile(tmp_path / "twice.zip", "w") as twice:
        twice.writestr("frame_1.ply", "x")
        with pytest.warns(UserWarning, match="Duplicate name"):
            twice.writestr("frame_1.ply", "x")
    with pytest.raises(InputError, match="the zip lists frame_1.ply twice"):
        extract_frames(tmp_path / "twice.zip", tmp_path)


@needs_model
def test_labels_typed_loosely_mean_what_they_say(predictor):
    scan = EXAMPLES / "scan_subject1_surprise.ply"
    twice = predictor(scan=scan, labels="surprise, Surprise, happiness")
    assert twice.labels == ["surprise", "happiness"] and twice.label == "surprise"
    assert predictor(scan=scan, labels=["surprise", None, "happiness"]).labels == ["surprise", "happiness"]
    empty = predictor(scan=scan, labels="  ")
    assert empty.labels == predictor.default_labels and empty.label == "surprise"


@needs_model
def test_the_cli_says_three_images_are_needed():
    out = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", str(VIEW_SETS["anger"][0])],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0 and "three view images" in out.stderr


@needs_model
@pytest.mark.parametrize(
    "zip_name", ["sequence_ict_subject1_surprise.zip", "sequence_subject3_happiness.zip"]
)
def test_a_sequence_that_starts_at_the_apex_is_read_in_time_order(predictor, tmp_path, zip_name):
    """The second half of an example sequence (apex -> neutral) pools to the negative of the expression's dynamic
    image: surprise read as anger 0.70, happiness as disgust, before it was pooled in reverse. The whole sequence
    and its first half are read as they come, with no note."""
    from affectvlm.predictor import FADING_NOTE
    from affectvlm.scan.archive import extract_frames

    frames = extract_frames(EXAMPLES / zip_name, tmp_path)
    truth = next(e for e in EMOTIONS if e in zip_name)
    whole, first = (
        predictor(sequence=frames, labels=EMOTIONS),
        predictor(sequence=frames[:5], labels=EMOTIONS),
    )
    assert whole.label == first.label == truth
    assert FADING_NOTE not in whole.notes + first.notes
    fading = predictor(sequence=frames[4:], labels=EMOTIONS)
    assert fading.label == truth and FADING_NOTE in fading.notes


def test_views_drawn_otherwise_than_the_model_reads_are_noted():
    """Grey renders given to a model that reads normal maps (or normal maps to one that reads grey) are read as
    another face: the answer says so. Views drawn the model's way get no such note."""
    from affectvlm.scan import load_scan
    from affectvlm.scan.recipe import ScanRecipe

    model, processor = random_demo_model()
    predictor = AffectVLMPredictor(model, processor)
    scan = load_scan(EXAMPLES / "scan_subject2_anger.ply")
    recipes = [ScanRecipe.from_settings({"mode": m, "crop_radius": 90.0}, size=96) for m in ("normal", "normal_map")]
    grey, coloured = (list(r.views_of([r.normalize(scan)])[0].numpy()) for r in recipes)
    for mode, given, noted in (
        ("normal", grey, False),
        ("normal", coloured, True),
        ("normal_map", coloured, False),
        ("normal_map", grey, True),
    ):
        processor.render_settings = {**(processor.render_settings or {}), "mode": mode}
        notes = predictor(images=given, labels=EMOTIONS).notes
        assert any("but this model reads" in n for n in notes) == noted, (mode, notes)
