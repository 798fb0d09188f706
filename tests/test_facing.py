"""Which way a scan's face looks, given by its user (`facing`: the library, the command line, the app): for a scan
that the search for the face draws from the side or from behind (statues' busts: Max Planck's ear, the top of
Igea's head), the file axis the face looks along frames it instead. The answer is asserted on the happy example
turned to look along each axis, and a facing that points the wrong way is seen to be used (the face drawn from
behind is noted, and the smile is gone from the answer)."""

import json
from pathlib import Path

import numpy as np
import pytest

from affectvlm.__main__ import main
from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor, InputError
from affectvlm.scan import Scan, load_scan, normalize_scan, write_ply
from affectvlm.scan.cli import joined_facing
from affectvlm.scan.normalize import facing_turn

HAPPY = Path(__file__).resolve().parents[1] / "examples" / "scan_subject0_happiness.ply"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
needs_model = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")


def turned(scan: Scan, facing: str) -> Scan:
    """`scan` (held frontal: +z towards the viewer, +y up) as a file that holds it looking along `facing`."""
    return scan.replace(vertices=(scan.vertices @ facing_turn(facing)).astype(np.float32))


def test_a_facing_names_the_axis_the_face_looks_along_and_the_one_up():
    np.testing.assert_array_equal(facing_turn("-z"), [[-1, 0, 0], [0, 1, 0], [0, 0, -1]])
    np.testing.assert_array_equal(facing_turn("-y"), facing_turn("-y,+z"))  # looking along y: +z up
    np.testing.assert_array_equal(facing_turn("+x, -y"), [[0, 0, 1], [0, -1, 0], [1, 0, 0]])
    assert facing_turn("auto") is None
    np.testing.assert_array_equal(facing_turn("none"), np.eye(3))
    for bad, why in (("up", "the axis the face looks along"), ("+z,-z", "across"), ("-z,+y,+x", "orient")):
        with pytest.raises(ValueError, match=why):
            facing_turn(bad)


@pytest.mark.parametrize("facing", ["+z", "-z", "+x", "-y,+z", "+y,-x"])
def test_a_face_looking_along_the_facing_given_is_framed_as_held_frontal(facing):
    """The happy example turned to look along `facing`, normalised with that facing given, is the example as it
    normalises held frontal: the same frame, nose tip, units and crop."""
    face = load_scan(HAPPY)
    got = normalize_scan(turned(face, facing), orient=facing)
    want = normalize_scan(face)
    assert got.num_vertices == want.num_vertices
    np.testing.assert_allclose(got.vertices, want.vertices, atol=2e-3)


@needs_model
def test_the_predictor_reads_the_face_the_facing_shows():
    """Looking along -x with +z up in the file: happiness with that facing (and found by itself); the facing that
    points the other way draws the back of the face mask, which is noted, and no label stands out."""
    predictor = AffectVLMPredictor.from_pretrained()
    scan = turned(load_scan(HAPPY), "-x,+z")
    for facing in ("-x,+z", "auto"):
        result = predictor(scan=scan, labels=EMOTIONS, facing=facing)
        assert result.label == "happiness" and result.notes == [], (facing, result.notes)
    behind = predictor(scan=scan, labels=EMOTIONS, facing="+x,+z")
    assert behind.may_not_be_a_face and behind.probs.max() < 0.5, behind.notes  # no answer stands out
    with pytest.raises(InputError, match="facing must be"):
        predictor(scan=scan, labels=EMOTIONS, facing="sideways")
    views = [str(HAPPY.parent / f"views_subject1_disgust_{v}.png") for v in ("frontal", "left", "right")]
    with pytest.raises(InputError, match="images are already drawn from the front"):
        predictor(images=views, labels=EMOTIONS, facing="-z")


def test_the_command_line_takes_a_facing_that_starts_with_a_minus():
    """`--facing -z` is an option's value, not an option (argparse alone refuses it)."""
    assert joined_facing(["predict", "f.obj", "--facing", "-z"]) == ["predict", "f.obj", "--facing=-z"]
    assert joined_facing(["predict", "--facing", "-y,+z", "f.obj"]) == ["predict", "--facing=-y,+z", "f.obj"]
    assert joined_facing(["predict", "--facing", "+x"]) == ["predict", "--facing", "+x"]
    assert joined_facing(["predict", "--facing", "--json"]) == ["predict", "--facing", "--json"]


@needs_model
def test_the_command_line_reads_the_face_the_facing_shows(tmp_path, capsys):
    write_ply(tmp_path / "bust.ply", turned(load_scan(HAPPY), "-x,+z"))
    assert main(["predict", str(tmp_path / "bust.ply"), "--facing", "-x,+z", "--labels", *EMOTIONS]) == 0
    assert "prediction: happiness" in capsys.readouterr().out
    assert main(["predict", str(tmp_path / "bust.ply"), "--facing", "+x,+z", "--labels", *EMOTIONS, "--json"]) == 0
    behind = json.loads(capsys.readouterr().out)
    assert max(behind["scores"].values()) < 0.5 and behind["notes"], behind["notes"]
    with pytest.raises(SystemExit):  # argparse: a facing it does not know, named
        main(["predict", str(tmp_path / "bust.ply"), "--facing", "sideways"])
    assert "facing must be" in capsys.readouterr().err


def test_the_render_command_draws_the_face_the_facing_shows(tmp_path):
    """`python -m affectvlm render --facing -x`: the happy example looking along -x in its file is drawn as the
    example held frontal is (the views a person looks at to check the framing)."""
    from PIL import Image

    write_ply(tmp_path / "bust.ply", turned(load_scan(HAPPY), "-x"))
    args = ["--size", "64", "--mode", "normal"]
    assert main(["render", str(tmp_path / "bust.ply"), "--facing", "-x", "--out", str(tmp_path / "a"), *args]) == 0
    assert main(["render", str(HAPPY), "--out", str(tmp_path / "b"), *args]) == 0
    assert main(["render", str(tmp_path / "bust.ply"), "--facing", "+x", "--out", str(tmp_path / "c"), *args]) == 0
    for view in ("frontal", "left", "right"):
        got, want, behind = (
            np.asarray(Image.open(tmp_path / folder / f"{stem}_{view}.png"), dtype=float)
            for folder, stem in (("a", "bust"), ("b", HAPPY.stem), ("c", "bust"))
        )
        assert np.abs(got - want).mean() < 2.0 < np.abs(behind - want).mean(), view  # the facing is what drew it


@needs_model
def test_a_sequence_is_read_with_the_facing_its_frames_share(tmp_path):
    """The happy example sequence with every frame looking along -x: happiness with that facing; the opposite
    facing draws the back of the face in every frame, noted, and no label stands out."""
    import zipfile

    zipfile.ZipFile(HAPPY.parent / "sequence_subject3_happiness.zip").extractall(tmp_path)
    frames = [turned(load_scan(f), "-x") for f in sorted(tmp_path.glob("*.ply"))]
    predictor = AffectVLMPredictor.from_pretrained()
    result = predictor(sequence=frames, facing="-x")
    assert result.label == "happiness" and result.notes == [], result.notes
    behind = predictor(sequence=frames, facing="+x")
    assert behind.probs.max() < 0.5 and behind.notes, behind.notes
