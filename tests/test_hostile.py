"""Inputs that are not a face, or that attack the server, through the predictor: each is refused with an
InputError naming the problem (and no server path), or scored with an explicit note, never a confident label.

Reader-level hostile files (bytes, formats, texture bombs, .wrl URLs) are in tests/test_scan_hostile.py; render
memory in tests/test_scan_render_memory.py; checkpoints in tests/test_checkpoint_load.py.
"""

import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from affectvlm.predictor import UNFAMILIAR_NOTE, AffectVLMPredictor, InputError, InputLimits, parse_labels
from affectvlm.scan import Scan, normalize_scan
from affectvlm.scan.archive import ZipLimits, extract_frames
from affectvlm.scan.normalize import axis_rotation
from affectvlm.scan.recipe import DIFFERENT_FACES_NOTE, FLAT_NOTE, NOT_A_FACE_NOTE
from bench import hostile

ROOT = Path(__file__).resolve().parents[1]
# the example the demo model scores most clearly (0.999), so that a change of answer means a change of pipeline
FACE = ROOT / "examples" / "scan_subject1_surprise.ply"
EMOTIONS = hostile.EMOTIONS.split(", ")


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return hostile.hostile_inputs(tmp_path_factory.mktemp("hostile"))


def refusal(predictor, name, inputs) -> str:
    files, labels, api = inputs[name]
    kind = {hostile.SCAN: "scan", hostile.SEQUENCE: "sequence", hostile.VIEWS: "images"}[api]
    value = files if kind == "images" else files[0][0] if kind == "sequence" else files[0]
    with pytest.raises(InputError) as err:
        predictor(**{kind: value}, labels=labels)
    assert "/" not in str(err.value).replace(" / ", ""), "a server path leaked into the message"
    return str(err.value)


@pytest.mark.parametrize(
    "name, words",
    [
        ("unit cube", "not a face"),
        ("one triangle", "not a face"),
        ("one point", "one point"),
        ("identical vertices", "no usable vertices"),
        ("zero-area triangles", "no usable vertices"),
        ("1e30 coordinates", "not a face"),
        ("20k large triangles", "cover the image"),
        ("triangle strips beyond the cap", "cap of"),
        ("blank views", "blank"),
        ("motionless sequence", "do not move"),
        ("10,000 labels", "labels"),
        ("a 1 MB label", "characters"),
    ],
)
def test_garbage_is_refused_with_a_message_naming_the_problem(predictor, inputs, name, words):
    assert words in refusal(predictor, name, inputs)


def test_labels_within_each_cap_but_too_much_reading_together_are_refused_before_any_is_read(predictor):
    """64 labels of 32 prompts of 199 characters each kept within every per-label cap and took the text encoder
    100-200 s, one of the server's two slots; they are refused by their total, before any is encoded. 64 plain
    labels (8 default prompts each) are still read."""
    heavy = {f"label {i}": [f"{'a face that looks rather odd indeed, ' * 5}{j}"[:199] for j in range(32)] for i in range(64)}
    start = time.perf_counter()
    with pytest.raises(InputError, match="characters of prompts to read, more than the limit"):
        predictor(scan=FACE, labels=heavy)
    assert time.perf_counter() - start < 1.0
    plain = predictor._prompts([f"a feeling of mild kind number {i}" for i in range(64)])
    assert len(plain) == 64 and sum(map(len, plain.values())) == 64 * 8


def test_a_surface_without_a_nose_gets_a_note_not_a_confident_label(predictor, inputs):
    result = predictor(scan=inputs["subdivided cube (no nose)"][0][0], labels=EMOTIONS)
    assert NOT_A_FACE_NOTE in result.notes and result.may_not_be_a_face  # the app says so above the answer


@pytest.mark.parametrize("roll", [0, 40, 100])
def test_a_cube_held_corner_first_gets_a_note(predictor, roll):
    """A cube with a corner towards the viewer: the corner stands out of the surface and is surrounded by it, as a
    nose is, so the nose tests pass (before, 11 of 30 randomly turned cubes were scored with no note). A face's
    surface curves everywhere; a box is a few flat facets (`flat_share`): noted."""
    diagonal_towards_viewer = axis_rotation(0, np.degrees(np.arctan(1 / np.sqrt(2)))) @ axis_rotation(1, -45)
    corner_first = axis_rotation(2, roll) @ diagonal_towards_viewer
    vertices, faces = hostile.cube(150.0, 4)
    result = predictor(scan=Scan(np.asarray(vertices) @ corner_first.T, np.asarray(faces)), labels=EMOTIONS)
    assert NOT_A_FACE_NOTE not in result.notes  # the nose tests alone would let it through
    assert FLAT_NOTE in result.notes and result.may_not_be_a_face


def test_a_zip_of_one_scan_is_refused_with_what_to_give_instead(predictor, tmp_path):
    """A zipped scan was read as a 4D sequence of one frame, its shading taken for a dynamic image and scored with
    no word (surprise, by luck); given as a scan, the zip was "an unknown extension". Both now say what to give."""
    one = tmp_path / "face.zip"
    with zipfile.ZipFile(one, "w") as z:
        z.write(FACE, FACE.name)
    for kind, words in (("sequence", "2 frames or more"), ("scan", "holds files, not one scan")):
        with pytest.raises(InputError, match=words) as err:
            predictor(**{kind: one}, labels=EMOTIONS)
        assert str(tmp_path) not in str(err.value)
    with pytest.raises(InputError, match="2 frames or more"):
        predictor(sequence=[FACE], labels=EMOTIONS)


def unfamiliar(result) -> bool:
    return any(note.startswith(UNFAMILIAR_NOTE.split("(")[0]) for note in result.notes)


@pytest.fixture(scope="module", params=["affectvlm-cpu", "affectvlm-ict"])
def shipped(request):
    return AffectVLMPredictor.from_pretrained(request.param)


def cylinder_and_noisy_box(seed: int) -> list[np.ndarray]:
    import trimesh

    cylinder, _ = trimesh.sample.sample_surface(trimesh.creation.cylinder(60, 200, sections=64), 20000, seed=seed)
    box, _ = trimesh.sample.sample_surface(trimesh.creation.box((150, 150, 150)), 20000, seed=1)
    return [cylinder, box + np.random.default_rng(seed).normal(0.0, 1.0, box.shape)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clouds_that_pass_the_face_tests_are_noted_as_unlike_the_faces_the_model_knows(predictor, seed):
    """A cylinder's point cloud, and a box's with a millimetre of noise (a depth camera's), pass every geometric
    test of a face: a rim or a corner stands out of the surface and is surrounded by it, as a nose is, the face
    search takes it for a face, and a cloud has no facets to count. They were scored surprise 0.50 and 0.84 with no
    note. Their embeddings lie further from the validation faces of every expression than the default's face
    distance ceiling (`affectvlm.face_distance`; 11.0-13.4 against 9.9): noted, whatever labels they are scored
    against."""
    for points in cylinder_and_noisy_box(seed):
        result = predictor(scan=Scan(points.astype(np.float32)), labels=EMOTIONS)
        assert result.face_distance > predictor.face_distance.ceiling
        assert unfamiliar(result) and result.may_not_be_a_face, result.notes


def test_the_mit_model_notes_half_of_those_clouds_where_its_floor_noted_none():
    """The MIT model finds these shapes as familiar as faces (a cylinder's cloud 0.34-0.44 by the cosine): its
    floor notes none of the cylinders. Its face distance notes half of these shapes (measured: 8.5-8.7 against its ceiling of 7.8; the other
    three 7.3-7.4), not all: docs/RESULTS.md, "Shapes the familiarity floor let through"."""
    mit = AffectVLMPredictor.from_pretrained("affectvlm-ict")
    results = [
        mit(scan=Scan(points.astype(np.float32)), labels=EMOTIONS)
        for seed in (0, 1, 2) for points in cylinder_and_noisy_box(seed)
    ]  # fmt: skip
    assert sum(unfamiliar(r) for r in results) >= 3, [(r.face_distance, r.notes) for r in results]
    assert all(r.familiarity > 3 * mit.model.config.familiarity_floor for r in results[::2])  # cylinders: not by the floor


def test_the_faces_are_familiar(shipped):
    """Every example scan and sequence, each a face, lies nearer the validation faces than the ceiling."""
    for path in sorted((ROOT / "examples").glob("scan_*.ply")) + sorted((ROOT / "examples").glob("sequence_*.zip")):
        result = shipped(**{"sequence" if path.suffix == ".zip" else "scan": path}, labels=EMOTIONS)
        assert result.face_distance <= shipped.face_distance.ceiling, (path.name, result.face_distance)
        assert not unfamiliar(result) and not result.may_not_be_a_face, (path.name, result.notes)


def test_the_faces_get_no_flat_note(predictor):
    for path in sorted((ROOT / "examples").glob("scan_*.ply")):
        assert FLAT_NOTE not in predictor(scan=path, labels=EMOTIONS).notes, path.name


def test_a_moving_surface_without_a_nose_gets_the_same_note_as_a_sequence(predictor, tmp_path):
    """A cube growing a dent and a breathing sphere, frame by frame: the sequence door once scored them (neutral
    0.47, anger 0.35) with no word, where the scan door notes each frame. Each of the example sequences, a face,
    gets no such note."""
    import trimesh

    box = trimesh.creation.box((150, 150, 150)).subdivide().subdivide().subdivide()
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    dent = np.exp(-(v[:, 0] ** 2 + (v[:, 1] + 30) ** 2) / 400) * (v[:, 2] > 0)
    cube = [Scan((v + np.c_[0 * v[:, :2], 10 * t / 7 * dent]).astype(np.float32), f) for t in range(8)]
    ball = trimesh.creation.icosphere(4, 90.0)
    sphere = [Scan((ball.vertices * (1 + 0.03 * t)).astype(np.float32), ball.faces) for t in range(8)]
    for frames in (cube, sphere):
        assert NOT_A_FACE_NOTE in predictor(sequence=frames, labels=EMOTIONS).notes
    for sequence in sorted((ROOT / "examples").glob("sequence_*.zip")):
        assert NOT_A_FACE_NOTE not in predictor(sequence=sequence, labels=EMOTIONS).notes


def test_scans_of_different_people_given_as_a_sequence_get_a_note(predictor, tmp_path):
    """A folder of separate scans is read as one sequence (the CLI without --csv, the app's 4D tab): the three ICT
    examples and all six examples once read happiness 0.73 or disgust with no word. One person's frames, the head
    drifting by 4 degrees and 4 mm over the capture, get no such note, and read as before."""
    from affectvlm.scan import load_scan
    from affectvlm.scan.archive import extract_frames
    from affectvlm.scan.normalize import axis_rotation

    examples = ROOT / "examples"
    for scans in (sorted(examples.glob("scan_ict_*.ply")), sorted(examples.glob("scan_*.ply"))):
        assert DIFFERENT_FACES_NOTE in predictor(sequence=scans, labels=EMOTIONS).notes
    frames = [load_scan(f) for f in extract_frames(examples / "sequence_subject3_happiness.zip", tmp_path)]
    drift = [
        f.replace(vertices=(f.vertices @ axis_rotation(1, 4.0 * t / 7).T.astype(np.float32) + [0, 0, 4.0 * t / 7]))
        for t, f in enumerate(frames)
    ]
    for sequence in (frames, drift):
        result = predictor(sequence=sequence, labels=EMOTIONS)
        assert DIFFERENT_FACES_NOTE not in result.notes and result.label == "happiness"


def test_a_face_turned_away_is_turned_back_and_scored_right(predictor):
    """A face looking along -z (half a turn about the vertical) is found and turned back: the same answer, no note."""
    face = predictor.load_scan(FACE)
    turned = Scan(face.vertices * np.array([-1, 1, -1], np.float32), face.faces)
    base, back = predictor(scan=face, labels=EMOTIONS), predictor(scan=turned, labels=EMOTIONS)
    assert back.label == base.label and not back.notes and not base.notes
    np.testing.assert_allclose(back.probs, base.probs, atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.001, 1 / 90.0, 37.0])
def test_units_and_size_do_not_change_the_answer(predictor, scale):
    """mm, cm, m, a unitless model under 2 units across (once taken for metres and cropped to a dot), a giant."""
    face = predictor.load_scan(FACE)
    base = predictor(scan=face, labels=EMOTIONS)
    scaled = predictor(scan=Scan(face.vertices * np.float32(scale), face.faces), labels=EMOTIONS)
    assert scaled.label == base.label and not scaled.notes
    # a unitless model is scaled to a typical face's size, so its crop keeps about, not exactly, the same part
    assert scaled.scan.num_vertices > 0.75 * base.scan.num_vertices


def test_normalising_twice_is_a_no_op():
    from affectvlm.scan import load_scan

    once = normalize_scan(load_scan(FACE))
    assert once.normalized and normalize_scan(once) is once


def test_label_text_caps_come_before_splitting():
    with pytest.raises(InputError, match="characters"):
        parse_labels("a, " * 1_000_000)
    assert parse_labels("happy: a smiling face; a grin\nsad: a frown") == {
        "happy": ["a smiling face", "a grin"],
        "sad": ["a frown"],
    }
    assert parse_labels("happy, sad\nangry") == ["happy", "sad", "angry"]


def test_zip_bomb_stops_at_the_cap_without_using_the_memory(tmp_path):
    """Streamed under the ratio cap: refused after a few MB, in a subprocess whose peak memory is measured."""
    bomb = hostile.zip_bomb(tmp_path / "bomb.zip", megabytes=300)
    code = textwrap.dedent(f"""
        import resource, sys
        from pathlib import Path
        from affectvlm.scan.archive import extract_frames
        from affectvlm.scan.types import InputError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            extract_frames(Path({str(bomb)!r}), Path({str(tmp_path)!r}))
            sys.exit("not refused")
        except InputError as err:
            print(err)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    message, grown_mb = out.stdout.strip().splitlines()
    assert "zip bomb" in message and int(grown_mb) < 100, out.stdout + out.stderr
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 10 * 2**20  # not written to disk either


def test_zip_caps_entries_sizes_and_corrupt_archives(tmp_path):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as z:
        for i in range(5):
            z.writestr(f"{i}.obj", "v 0 0 0\n")
    with pytest.raises(InputError, match="limit"):
        extract_frames(many, tmp_path, ZipLimits(max_entries=4))
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(InputError, match="not a valid zip"):
        extract_frames(tmp_path / "bad.zip", tmp_path)
    truncated = tmp_path / "trunc.zip"
    truncated.write_bytes(many.read_bytes()[:-30])
    with pytest.raises(InputError):
        extract_frames(truncated, tmp_path)


def test_caps_from_the_limits_reach_the_predictor(predictor):
    small = AffectVLMPredictor(predictor.model, predictor.processor, limits=InputLimits(max_labels=3))
    with pytest.raises(InputError, match="more than 3 labels"):
        small(scan=FACE, labels=["a", "b", "c", "d"])
