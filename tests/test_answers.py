"""The answer itself, through every door: the library, the CLI, each app endpoint (and the pipeline, in
tests/test_pipeline.py; the browser, in tests/test_app_browser.py) give the same, right label on faces of known
expression scored by the shipped default model.

Faces: the committed examples (SynthFER-3D faces of identities no shipped model saw, from both face models) and, when the Surrey
Face Model is installed, its mean face with each expression blendshape at full strength. A random model or a
broken path (a scan normalised twice, views in the wrong order, a wrong crop) fails these tests.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from faces import KNOWN_WRONG, KNOWN_WRONG_APEX, KNOWN_WRONG_FRAMES, MARGINAL, marked_known

from affectvlm.data.realism import RealismConfig, apply_realism
from affectvlm.predictor import DEMO_CHECKPOINT, FADING_NOTE, AffectVLMPredictor
from affectvlm.scan import Scan, load_scan, normalize_scan, write_pcd, write_ply, write_wrl
from affectvlm.scan.archive import extract_frames
from affectvlm.scan.normalize import axis_rotation
from affectvlm.testing import (
    depth_camera_cloud,
    head_drift,
    standing_body,
    stray_points,
    surface_sample,
    wall_behind,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
EXAMPLE_SCANS = sorted(EXAMPLES.glob("scan_*.ply"))
# Each set of three example views (frontal, left, right of one scan), by file-name stem; one sequence per zip.
VIEW_SETS = [
    [frontal.with_name(frontal.name.replace("_frontal", f"_{v}")) for v in ("frontal", "left", "right")]
    for frontal in sorted(EXAMPLES.glob("views_*_frontal.png"))
]
EXAMPLE_VIEWS = VIEW_SETS[0]
EXAMPLE_SEQUENCES = sorted(EXAMPLES.glob("sequence_*.zip"))
EXAMPLE_SEQUENCE = EXAMPLE_SEQUENCES[0]

pytestmark = pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(), reason="no demo checkpoint")


def truth_of(path: Path) -> str:
    """The expression named in an example's file name (scan_subject0_happiness.ply -> happiness)."""
    return next(e for e in EMOTIONS if e in path.stem)


@pytest.fixture(scope="module")
def predictor():
    return AffectVLMPredictor.from_pretrained()


@pytest.fixture(scope="module")
def sfm_faces(tmp_path_factory):
    """The Surrey Face Model's mean face with each expression at full strength, as OBJ files (None: no SFM)."""
    folder = Path(os.environ.get("AFFECTVLM_SFM_DIR", ROOT.parent / "shared" / "sfm"))
    if not (folder / "sfm_3448.npz").is_file():
        pytest.skip("the Surrey Face Model is not installed (see docs/data.md): SFM faces not checked")
    data = np.load(folder / "sfm_3448.npz")
    out = tmp_path_factory.mktemp("sfm-faces")
    paths = []
    for name, delta in zip(data["expression_names"], data["expressions"]):
        path = out / f"sfm_mean_{name}.obj"
        with open(path, "w") as fh:
            fh.writelines(f"v {x:.4f} {y:.4f} {z:.4f}\n" for x, y, z in data["mean"] + delta)
            fh.writelines(f"f {a} {b} {c}\n" for a, b, c in data["triangles"] + 1)
        paths.append(path)
    return paths


def test_examples_cover_every_tab():
    assert len(EXAMPLE_SCANS) >= 3 and all(p.is_file() for views in VIEW_SETS for p in views)
    assert len(VIEW_SETS) >= 2 and len(EXAMPLE_SEQUENCES) >= 2  # both face models
    assert len({truth_of(p) for p in EXAMPLE_SCANS}) == len(EXAMPLE_SCANS)  # different expressions




@pytest.mark.parametrize("path", marked_known(EXAMPLE_SCANS, KNOWN_WRONG), ids=lambda p: p.stem)
def test_library_names_the_expression_of_each_example_scan(predictor, path):
    result = predictor(scan=path, labels=EMOTIONS)
    assert result.label == truth_of(path), result.scores()
    assert not result.notes


# Heads as people hold them in front of a scanner, past the few degrees the training scans vary by: looking down
# (the forehead in front of the nose tip), looking up, tilted to a shoulder, and all three with a turn, in a z-up file.
HEAD_POSES = {
    "looking down 25 degrees": axis_rotation(0, 25),
    "looking up 25 degrees": axis_rotation(0, -25),
    "rolled 35 degrees": axis_rotation(2, 35),
    "z-up, down 20, rolled -20, turned 40": (
        axis_rotation(0, 90) @ axis_rotation(1, 40) @ axis_rotation(2, -20) @ axis_rotation(0, 20)
    ),
}


@pytest.mark.parametrize("pose", list(HEAD_POSES))
def test_a_posed_head_is_read_as_the_upright_one(predictor, pose):
    """The scan is turned back to the upright face before it is rendered (`find_face`): looking down 20 degrees
    read 1 of the nine example and SFM faces right when only the file's axes were found."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    scans = [load_scan(p) for p in paths]
    posed = [s.replace(vertices=(s.vertices @ HEAD_POSES[pose].T).astype(np.float32)) for s in scans]
    got = [predictor(scan=s, labels=EMOTIONS).label for s in posed]
    assert got == [truth_of(p) for p in paths]


def test_a_mirrored_scan_gets_the_same_answer(predictor):
    """A face and its mirror image show the same expression, and a scanner or exporter with the other handedness
    writes the mirror image. The shipped default scores every view with its mirror image (`mirror_average`), so
    both get the same scores; without it the stage-6 default read `scan_ict_subject5_sadness` fear 0.94 one way and
    0.68 the other (and the shipped weights fail here too)."""
    for path in EXAMPLE_SCANS:
        scan = load_scan(path)
        mirrored = scan.replace(vertices=scan.vertices * np.float32([-1, 1, 1]), faces=scan.faces[:, ::-1].copy())
        own, other = (predictor(scan=s, labels=EMOTIONS).probs for s in (scan, mirrored))
        np.testing.assert_allclose(other, own, atol=0.01, err_msg=path.stem)


def test_a_triangle_soup_is_drawn_and_answered_as_its_mesh(predictor):
    """An STL file, and any exporter that writes three vertices of its own per triangle, holds a triangle soup. It is
    welded back into its mesh before anything is measured on it (`affectvlm.scan.clean.weld_soup`), so it is drawn
    pixel for pixel as the mesh is; before, its six copies of each point moved the face found, its size and its
    noise (up to a third of the ICT disgust example's pixels drawn otherwise; 4 of 72 held-out faces answered
    otherwise)."""
    for path in EXAMPLE_SCANS:
        mesh = load_scan(path)
        soup = Scan(mesh.vertices[mesh.faces].reshape(-1, 3), np.arange(mesh.faces.size).reshape(-1, 3))
        np.testing.assert_array_equal(predictor.render_scan(soup), predictor.render_scan(mesh), err_msg=path.stem)
        assert predictor(scan=soup, labels=EMOTIONS).label == truth_of(path)


def test_stray_points_about_the_face_change_no_answer(predictor):
    """A scanner's flying pixels: 500 points scattered about each example face (300 mm std per axis). Read 2 of 5
    right before stray points were dropped (the bounding box made the face unitless and tiny)."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL and "subject" in p.stem]
    got = []
    for seed, path in enumerate(paths):
        scan = load_scan(path)
        vertices = np.concatenate([scan.vertices, stray_points(scan.vertices, 500, 300.0, seed)])
        messy = scan.replace(vertices=vertices, colors=None, uv=None)
        got.append(predictor(scan=messy, labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


def noisy(path: Path, sigma: float, seed: int) -> Scan:
    """An example scan with Gaussian noise of `sigma` mm on every coordinate (a consumer depth camera's)."""
    scan = load_scan(path)
    noise = np.random.default_rng(seed).normal(0.0, sigma, scan.vertices.shape).astype(np.float32)
    return scan.replace(vertices=scan.vertices + noise)


def test_a_scan_with_2_mm_of_noise_is_read_as_the_expression(predictor):
    """Three noisy copies of each example. Read 11 of 15 right before noisy scans were smoothed
    (`affectvlm.scan.denoise`): the renderer's shading showed the noise, not the face."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = [predictor(scan=noisy(p, 2.0, seed), labels=EMOTIONS).label for p in paths for seed in range(3)]
    assert got == [truth_of(p) for p in paths for _ in range(3)]


def test_most_scans_with_3_mm_of_noise_are_read_as_the_expression(predictor):
    """Beyond what a depth camera gives at arm's length: 11 of 15 right now, 5 before noisy scans were
    smoothed."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    right = sum(
        predictor(scan=noisy(p, 3.0, seed), labels=EMOTIONS).label == truth_of(p) for p in paths for seed in range(3)
    )
    assert right >= 10


def test_most_sparse_point_clouds_are_read_as_the_expression(predictor):
    """A depth camera far from the face: 400 and 500 points spread over each example face, three draws each.
    Read 19 of 30 right when every cloud was drawn as surfels (their normals, from a few neighbours pixels apart,
    blurred the brows and mouth); clouds this sparse are drawn as the mesh of their frontal range image now:
    26 of 30 by the stage-4 default, 23 by stage 6, which reads 240 held-out faces' 500-point clouds better
    (0.621 against 0.558: docs/RESULTS.md); chance is 5 of 30."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    right = sum(
        predictor(scan=surface_sample(load_scan(p), points, seed), labels=EMOTIONS).label == truth_of(p)
        for points in (400, 500)
        for p in paths
        for seed in range(3)
    )
    assert right >= 21


@pytest.mark.parametrize("behind", [250.0, 100.0])
def test_a_face_in_front_of_a_wall_is_read_as_the_face(predictor, behind):
    """A depth camera's view of a room: 60,000 points of a 1 m wall 250 or 100 mm behind each example face.
    Read 1 of 5 right (250 mm) when the face was searched for in the whole scene only; 100 mm, 2 of 5 when
    the search also looked about the scene's extreme points."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL and "subject" in p.stem]
    got = []
    for seed, path in enumerate(paths):
        v = load_scan(path).vertices
        scene = Scan(np.concatenate([v, wall_behind(v, behind, seed=seed)]))
        got.append(predictor(scan=scene, labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


@pytest.mark.parametrize(
    "wall, unmeasured",
    [(None, np.nan), (300.0, np.nan), (None, 0.0)],
    ids=["the face alone", "a wall 300 mm behind", "unmeasured pixels at (0, 0, 0)"],
)
def test_a_depth_camera_pcd_is_read_as_the_face(predictor, tmp_path, wall, unmeasured):
    """A depth camera 0.6 m in front of each example face, as PCL writes it: an organized `.pcd` in metres, in the
    camera's optical frame (+y down, +z away from the camera), unmeasured pixels NaN (or (0, 0, 0), as many
    cameras' own tools write them: the reader once meshed those zeros and refused the file as "no extent"), each
    file in another DATA kind. The reader turns it to +y up and meshes it as a range image."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = []
    for path, data in zip(paths, ["ascii", "binary", "binary_compressed"] * 2):
        cloud, grid = depth_camera_cloud(load_scan(path), wall=wall)
        cloud = cloud.replace(vertices=np.nan_to_num(cloud.vertices, nan=unmeasured))
        write_pcd(tmp_path / f"{path.stem}.pcd", cloud, data=data, grid=grid)
        got.append(predictor(scan=tmp_path / f"{path.stem}.pcd", labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


def test_a_camera_frame_cloud_before_a_wall_is_read_the_right_way_up(predictor, tmp_path):
    """The same camera's measured points as a plain point cloud (a `.ply`, as Open3D writes one from a depth image):
    +y down, nothing to say so, a wall 300 mm behind the face. The search's subsample of the scene held few of
    the face's points, and the anger face was settled upside down and read as happiness; which way is up is now
    decided again on the settled face's own points."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = []
    for path in paths:
        cloud, _ = depth_camera_cloud(load_scan(path), wall=300.0)
        write_ply(tmp_path / f"{path.stem}.ply", cloud.subset(np.isfinite(cloud.vertices[:, 0])))
        got.append(predictor(scan=tmp_path / f"{path.stem}.ply", labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


def test_a_depth_image_with_its_unmeasured_pixels_at_the_origin_is_read_as_the_face(predictor, tmp_path):
    """Every pixel of the same camera's image as a plain point cloud (an `.xyz`), the unmeasured two thirds at
    (0, 0, 0), and each example mesh with 50 loose vertices there (1 % of them): such a pile keeps itself company,
    so no stray-point test dropped it, and it moved the face's pose and size (3 of 24 such clouds and 20 of 24
    such meshes of new identities were read right)."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = []
    for path in paths:
        cloud, _ = depth_camera_cloud(load_scan(path))
        np.savetxt(tmp_path / f"{path.stem}.xyz", np.nan_to_num(cloud.vertices, nan=0.0), fmt="%.6f")
        got.append(predictor(scan=tmp_path / f"{path.stem}.xyz", labels=EMOTIONS).label)
        mesh = load_scan(path)
        loose = Scan(np.concatenate([mesh.vertices, np.zeros((50, 3), np.float32)]), mesh.faces)
        got.append(predictor(scan=loose, labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths for _ in range(2)]


def test_a_vrml_file_squashed_and_turned_in_its_data_is_read_through_its_transform(predictor, tmp_path):
    """A `.wrl` whose points are stored squashed to half their width and z-up, with the Transform that makes them
    the face (scale 2 1 1, a quarter turn back about x): read through it, as a VRML viewer draws it. The reader once
    ignored Transforms, and 13 of 24 such faces of new identities were read wrong."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = []
    for path in paths:
        mesh = load_scan(path)
        x, y, z = mesh.vertices.T
        write_wrl(tmp_path / f"{path.stem}.wrl", mesh.replace(vertices=np.c_[x / 2, -z, y], uv=None))
        text = (tmp_path / f"{path.stem}.wrl").read_text().replace(
            "Transform {", "Transform {\n  scale 2 1 1 rotation 1 0 0 -1.5707963", 1
        )
        (tmp_path / f"{path.stem}.wrl").write_text(text)
        got.append(predictor(scan=tmp_path / f"{path.stem}.wrl", labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


def head_and_shoulders(path: Path, seed: int, wall: float) -> Scan:
    """An example face with a neck, shoulders and a chest below it and, with probability `wall`, a wall behind
    it (`affectvlm.data.realism`'s scene), in a turned, z-up or moved file frame; a point cloud for odd
    seeds."""
    face = normalize_scan(load_scan(path), crop_radius=None, fit=False)
    kinds = ("scene", "turn", "axes", "offset") + (("point_cloud",) if seed % 2 else ())
    config = RealismConfig.only(*kinds, wall=wall).replace(p_turn=0.5, p_axes=0.5, p_offset=0.5)
    return apply_realism(face, np.random.default_rng(seed), config)[0]


@pytest.mark.parametrize("wall", [0.0, 1.0], ids=["head and shoulders", "and a wall behind"])
def test_a_head_and_shoulders_scan_is_read_as_the_face(predictor, wall):
    """A scanner that sees the whole person: the body outnumbers the face, its chest may stand in front of the
    nose tip, and no unit fits the scene. Read 4 of 5 right each way when the face was searched for in the
    whole scene and about its extreme points, the head settled on the whole scan and the nose tip looked for
    in all of it."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL and "subject" in p.stem]
    got = [
        predictor(scan=head_and_shoulders(path, seed, wall), labels=EMOTIONS).label
        for seed, path in enumerate(paths)
    ]
    assert got == [truth_of(p) for p in paths]


@pytest.mark.parametrize("unit", [25.4, 100.0], ids=["inches, y-up", "decimetres, z-up"])
def test_a_whole_standing_person_is_read_as_the_face(predictor, unit):
    """A whole-body scanner's point cloud: a person 1.7 m tall, the face a tenth of the scan's height, in a unit no
    face-sized guess fits (inches, or a modelling tool's decimetres). Searched only at the scales that make the
    scene a head with its shoulders or a person before a wall, the face was too small to be found and the scan was
    read whole (each example tried: "surprise", with the note that no nose stands out)."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    frame = np.eye(3) if unit == 25.4 else axis_rotation(0, 90)
    got = []
    for seed, path in enumerate(paths):
        face = normalize_scan(load_scan(path), crop_radius=None, fit=False)
        body = standing_body(face.vertices, seed=seed)
        cloud = np.concatenate([surface_sample(face, 30_000, seed).vertices, body])
        got.append(predictor(scan=Scan(vertices=(cloud @ frame.T / unit).astype(np.float32)), labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]


@pytest.mark.parametrize(
    "seed, subject, across, faces",
    [
        (21, "F0002", 1.0, (("anger", 3), ("anger", 4), ("disgust", 3), ("disgust", 4))),
        (59, "F0006", 1.0, (("disgust", 4),)),
        (59, "F0006", 2.0, (("disgust", 3),)),
        (57, "M0002", 1.0, (("disgust", 3),)),
    ],
)
def test_a_unitless_face_whose_size_was_misread_is_answered_right(
    predictor, sfm_dir, tmp_path, monkeypatch, seed, subject, across, faces
):
    """New identities' faces in a file without units, read through the library as a user would. Seed 21's F0002
    (whose shape grows likelier the template up to 2x its size) was measured again past the search's own scale and
    drawn 2.4x too large: 3 of its 4 faces read sadness, fear and happiness. The faces of seeds 59 and 57 lost to
    their own nose and mouth, found as a face in a scene at 4x, and read surprise or sadness (both stop 66)."""
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    monkeypatch.setenv("AFFECTVLM_SFM_DIR", str(sfm_dir))
    synth = SynthFER3D(SynthConfig(seed=seed, num_subjects=8, face_model="both", neutral=True))
    index = next(i for i in range(8) if synth.subject(i).subject_id == subject)
    got = []
    for emotion, level in faces:
        scan = synth.scan(index, emotion, level).to_scan()
        v = scan.vertices.astype(np.float64)
        v = (v - v.mean(axis=0)) * (across / np.ptp(v, axis=0).max())
        write_ply(tmp_path / "face.ply", scan.replace(vertices=v.astype(np.float32)))
        got.append(predictor(scan=tmp_path / "face.ply", labels=["neutral", *EMOTIONS]).label)
    assert got == [emotion for emotion, _ in faces]


def test_library_names_the_expression_of_each_sfm_face(predictor, sfm_faces):
    got = {truth_of(p): predictor(scan=p, labels=EMOTIONS).label for p in sfm_faces}
    assert got == {e: e for e in got}


@pytest.mark.parametrize("views", VIEW_SETS, ids=lambda v: v[0].stem)
def test_library_names_the_expression_of_the_example_views(predictor, views):
    result = predictor(images=[str(p) for p in views], labels=EMOTIONS)
    assert result.label == truth_of(views[0]), result.scores()


@pytest.mark.parametrize("sequence", EXAMPLE_SEQUENCES, ids=lambda p: p.stem)
def test_library_names_the_expression_of_the_example_sequence(predictor, sequence):
    """The default model trained on dynamic images (4D sequences) too."""
    result = predictor(sequence=sequence, labels=EMOTIONS)
    assert result.label == truth_of(sequence), result.scores()


def captured_longer(frames: list) -> dict[str, list]:
    """An example's 8 frames (neutral, onset, apex, offset, neutral, as the training sequences) as captures run
    longer: neutral for 16 frames before, the apex (frame 3) held 12 frames, neutral for 16 frames after."""
    return {
        "a neutral lead-in": [frames[0]] * 16 + frames,
        "the apex held": frames[:4] + [frames[3]] * 12 + frames[4:],
        "a neutral tail": frames + [frames[-1]] * 16,
    }


@pytest.mark.parametrize("sequence", EXAMPLE_SEQUENCES, ids=lambda p: p.stem)
def test_a_capture_longer_than_its_expression_is_read_as_the_expression(predictor, sequence, tmp_path):
    """Pooled whole, a sequence of new identities that ran on 16 frames after the face relaxed was read right 4 times
    in 36 (rank pooling weighs each frame by its place in time, and the expression's frames had moved to the start);
    the frames pooled are now spread over the expression's span (`ScanRecipe.expression_span`)."""
    frames = [load_scan(p) for p in extract_frames(sequence, tmp_path)]
    got = {form: predictor(sequence=shaped, labels=EMOTIONS).label for form, shaped in captured_longer(frames).items()}
    assert set(got.values()) == {truth_of(sequence)}, got


def test_the_span_pooled_leaves_the_neutral_stretches_out(predictor, tmp_path):
    """The span starts at the last still frame before the onset and ends in the apex, before the face relaxes."""
    frames = [load_scan(p) for p in extract_frames(EXAMPLE_SEQUENCES[0], tmp_path)]
    shaped = captured_longer(frames)
    spans = {form: predictor.recipe.expression_span(shaped[form]) for form in shaped}
    assert 14 <= spans["a neutral lead-in"][0] <= 16 and 17 <= spans["a neutral lead-in"][1] <= 21, spans
    assert spans["the apex held"][0] == 0 and 3 <= spans["the apex held"][1] <= 16, spans
    assert spans["a neutral tail"][0] == 0 and 2 <= spans["a neutral tail"][1] <= 6, spans


def test_the_frames_scored_alone_are_numbered_by_their_place_in_the_sequence(predictor, tmp_path):
    """The app plots each pooled frame's scores against its number in the sequence: after a neutral lead-in of 16
    frames they are frames of the expression's span, in time order; for a capture that starts at the apex and
    relaxes (pooled in reverse), still in the order captured, the apex frame first and read as the expression."""
    frames = [load_scan(p) for p in extract_frames(EXAMPLE_SEQUENCES[0], tmp_path)]
    lead_in = captured_longer(frames)["a neutral lead-in"]
    result = predictor(sequence=lead_in, labels=EMOTIONS)
    numbers = [int(n) for n in result.frame_numbers]
    assert len(numbers) == len(result.frame_probs) == len(result.frames) > 2, numbers
    # frames 1-17 are neutral, the apex is frame 20 (the span of test_the_span_pooled_..., counted from 1)
    assert numbers == sorted(set(numbers)) and 15 <= numbers[0] and numbers[-1] <= 22, numbers
    # (of an example whose apex frame reads alone as its expression: KNOWN_WRONG_APEX)
    sequence = next(s for s in EXAMPLE_SEQUENCES if s.stem not in KNOWN_WRONG_APEX)
    (tmp_path / "relaxing").mkdir()
    frames = [load_scan(p) for p in extract_frames(sequence, tmp_path / "relaxing")]
    relaxing = frames[3::-1] + [frames[0]] * 4  # the apex, back to neutral, neutral held
    result = predictor(sequence=relaxing, labels=EMOTIONS)
    numbers = [int(n) for n in result.frame_numbers]
    assert FADING_NOTE in result.notes and numbers == sorted(set(numbers)) and numbers[0] == 1, numbers
    assert EMOTIONS[int(result.frame_probs[0].argmax())] == truth_of(sequence), result.frame_probs.round(2)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sequence", EXAMPLE_SEQUENCES, ids=lambda p: p.stem)
def test_a_sequence_whose_head_drifts_is_read_as_the_expression(predictor, sequence, seed, tmp_path):
    """The example sequence with the head drifting and nodding by about 3 degrees and 3 mm a frame (up to about
    8 and 8 by the last of its 8 frames, half a second apart), as a subject does in a few seconds of 4D capture:
    its motion is taken out before rank pooling. With the first frame's transform imposed on every frame as it
    lay, 4 of these 6 read wrong (and 12 of 20 seeds; with half the drift, 3 of 20)."""
    frames = [load_scan(f) for f in extract_frames(sequence, tmp_path)]
    result = predictor(sequence=head_drift(frames, 3.0, 3.0, seed), labels=EMOTIONS)
    assert result.label == truth_of(sequence), result.scores()


@pytest.mark.parametrize("sequence", EXAMPLE_SEQUENCES, ids=lambda p: p.stem)
def test_a_sequence_whose_head_turns_away_is_read_as_the_expression(predictor, sequence, tmp_path):
    """The head turning steadily about the vertical, 8 degrees a frame (56 by the last of 8 frames): it is
    followed frame by frame. Read wrong (as fear) when the head's motion was not taken out, and when a fit past
    25 degrees from the first frame was refused."""
    frames = [load_scan(f) for f in extract_frames(sequence, tmp_path)]
    turned = []
    for k, frame in enumerate(frames):
        centre = frame.vertices.mean(axis=0)
        moved = (frame.vertices - centre) @ axis_rotation(1, 8.0 * k).T + centre
        turned.append(frame.replace(vertices=moved.astype(np.float32)))
    result = predictor(sequence=turned, labels=EMOTIONS)
    assert result.label == truth_of(sequence), result.scores()


def holes_that_come_and_go(frames: list, seed: int, count: int = 3, radius: float = 10.0) -> list:
    """Each frame with its own `count` holes of `radius` mm about random surface points (a scanner losing a
    specular or shadowed patch for a frame or two, somewhere else in the next)."""
    rng = np.random.default_rng(seed)
    out = []
    for frame in frames:
        keep = np.ones(frame.num_vertices, bool)
        for centre in frame.vertices[rng.integers(frame.num_vertices, size=count)]:
            keep &= ((frame.vertices - centre) ** 2).sum(axis=1) > radius**2
        out.append(frame.subset(keep))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sequence", EXAMPLE_SEQUENCES, ids=lambda p: p.stem)
def test_a_sequence_with_holes_that_come_and_go_is_read_as_the_expression(predictor, sequence, seed, tmp_path):
    """Three holes 20 mm across, somewhere else in each frame. Rank pooling gives each frame's holes the frame's
    full weight, so they drew blotches the model read as motion; a pixel that misses the surface for a frame or so
    is now pooled as the surface either side of the gap."""
    frames = [load_scan(f) for f in extract_frames(sequence, tmp_path)]
    result = predictor(sequence=holes_that_come_and_go(frames, seed), labels=EMOTIONS)
    assert result.label == truth_of(sequence), result.scores()


@pytest.mark.parametrize("sequence", marked_known(EXAMPLE_SEQUENCES, KNOWN_WRONG_FRAMES), ids=lambda p: p.stem)
def test_frames_of_the_example_sequence_read_as_the_expression(predictor, sequence):
    """Scored frame by frame (each frame as a static scan), the apex frames read as the expression."""
    result = predictor(sequence=sequence, labels=EMOTIONS)
    assert EMOTIONS[int(result.frame_probs.max(0).argmax())] == truth_of(sequence), result.frame_probs.round(2)


def test_a_normalised_scan_scores_as_its_file(predictor):
    """Normalising is done once: handing the predictor an already normalised scan changes nothing."""
    path = EXAMPLE_SCANS[0]
    from_file = predictor(scan=path, labels=EMOTIONS)
    again = predictor(scan=from_file.scan, labels=EMOTIONS)
    np.testing.assert_allclose(again.probs, from_file.probs, atol=1e-6)
    np.testing.assert_array_equal(again.views, from_file.views)


def test_a_mesh_whose_texture_image_is_broken_is_read_by_its_shape(predictor, tmp_path):
    """A scanner's OBJ with texture coordinates and a texture image that does not decode: the model draws the shape,
    so the texture is not read and the scan is scored (reading it, as `load_scan` does by default, fails)."""
    from affectvlm.scan import ScanError, write_obj

    path = next(p for p in EXAMPLE_SCANS if "anger" in p.stem)
    scan = load_scan(path)
    v = scan.vertices
    uv = (v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], 0)
    texture = np.full((64, 64, 3), 200, np.uint8)
    write_obj(tmp_path / "face.obj", Scan(v, scan.faces, uv=uv, texture=texture), texture_name="face.png")
    png = (tmp_path / "face.png").read_bytes()
    (tmp_path / "face.png").write_bytes(png[:60] + bytes(len(png) - 60))  # the header whole, the pixels zeroed
    with pytest.raises(ScanError, match="texture"):
        load_scan(tmp_path / "face.obj")
    assert predictor.recipe.needs_texture is False
    result = predictor(scan=tmp_path / "face.obj", labels=EMOTIONS)
    assert result.label == "anger", result.scores()
    np.testing.assert_array_equal(result.views, predictor(scan=path, labels=EMOTIONS).views)


def cli_json(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "affectvlm", "predict", *args, "--labels", *EMOTIONS, "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def cli_label(*args: str) -> str:
    return cli_json(*args)["label"]


@pytest.fixture(scope="module")
def camera_pcd(tmp_path_factory) -> Path:
    """The anger example as a depth camera 0.6 m away sees it before a wall 300 mm behind: an organized `.pcd` in
    metres, in the camera's optical frame."""
    path = next(p for p in EXAMPLE_SCANS if "anger" in p.stem)
    cloud, grid = depth_camera_cloud(load_scan(path), wall=300.0)
    out = tmp_path_factory.mktemp("pcd") / "camera_anger.pcd"
    write_pcd(out, cloud, data="binary_compressed", grid=grid)
    return out


def test_cli_gives_the_library_answer_for_a_scan_views_and_a_sequence(predictor, camera_pcd):
    scan = EXAMPLE_SCANS[1]
    assert cli_label(str(scan)) == truth_of(scan)
    assert cli_label(str(camera_pcd)) == "anger"
    assert cli_label(*map(str, EXAMPLE_VIEWS)) == truth_of(EXAMPLE_VIEWS[0])
    sequence = cli_json(str(EXAMPLE_SEQUENCE))
    assert sequence["label"] == truth_of(EXAMPLE_SEQUENCE)
    # each pooled frame scored alone, by its place in the sequence: the library's answers, the apex frames the truth
    library = predictor(sequence=EXAMPLE_SEQUENCE, labels=EMOTIONS)
    assert [(f["frame"], f["label"]) for f in sequence["frames"]] == [
        (f["frame"], f["label"]) for f in library.frame_answers()
    ]
    # (and the library's apex frames read as the truth: test_the_apex_frames_of_each_example_sequence_...)
    assert apex_frames(EXAMPLE_SEQUENCE) <= {f["frame"] for f in sequence["frames"]}, sequence["frames"]


@pytest.mark.parametrize("sequence", marked_known(EXAMPLE_SEQUENCES, KNOWN_WRONG_APEX), ids=lambda p: p.stem)
def test_the_apex_frames_of_each_example_sequence_read_alone_as_the_expression(predictor, sequence):
    """Each apex frame (found by how far it moved, not by its place) scored alone as a static scan reads as the
    sequence's expression; the frames after it are on their way back to neutral and may read otherwise."""
    result = predictor(sequence=sequence, labels=EMOTIONS)
    read = {int(n): EMOTIONS[int(p.argmax())] for n, p in zip(result.frame_numbers, result.frame_probs)}
    apex = apex_frames(sequence)
    assert apex <= set(read) and {read[n] for n in apex} == {truth_of(sequence)}, (apex, result.frame_probs.round(2))


def apex_frames(sequence: Path, share: float = 0.75) -> set[int]:
    """The places (from 1) of a sequence's apex frames: those whose largest vertex movement from the first frame is
    at least `share` of the sequence's largest (the frames after them are on the way back to neutral)."""
    with tempfile.TemporaryDirectory() as tmp:
        frames = [load_scan(f).vertices for f in extract_frames(sequence, Path(tmp))]
    moved = np.array([np.linalg.norm(v - frames[0], axis=1).max() for v in frames])
    return {int(i) + 1 for i in np.flatnonzero(moved >= share * moved.max())}


# -- the app, through gradio_client -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(app_url):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app_url, verbose=False, download_files=False)


def app_label(outputs) -> str:
    scores, _plot, _gallery, answer = outputs[:4]
    assert f"**{scores['label']}**" in answer  # the answer line names the label the scores put first
    return scores["label"]


def test_app_scan_endpoint_names_the_expression(client, sfm_faces, predictor):
    from gradio_client import handle_file

    for path in [*EXAMPLE_SCANS, *sfm_faces]:
        outputs = client.predict(handle_file(str(path)), ", ".join(EMOTIONS), api_name="/predict_scan")
        if path.stem in KNOWN_WRONG:  # the door must still give the library's (wrong) answer
            assert app_label(outputs) == predictor(scan=path, labels=EMOTIONS).label, path.name
            continue
        assert app_label(outputs) == truth_of(path), path.name
        assert outputs[4] is not None  # the normalised scan's preview


def test_app_scan_endpoint_reads_a_depth_camera_pcd(client, camera_pcd):
    from gradio_client import handle_file

    outputs = client.predict(handle_file(str(camera_pcd)), ", ".join(EMOTIONS), api_name="/predict_scan")
    assert app_label(outputs) == "anger" and outputs[4] is not None


def test_app_views_endpoint_names_the_expression(client):
    from gradio_client import handle_file

    outputs = client.predict(*[handle_file(str(p)) for p in EXAMPLE_VIEWS], ", ".join(EMOTIONS),
                             api_name="/predict_views")  # fmt: skip
    assert app_label(outputs) == truth_of(EXAMPLE_VIEWS[0])


def test_app_sequence_endpoint_names_the_expression(client, predictor):
    from gradio_client import handle_file

    outputs = client.predict(
        [handle_file(str(EXAMPLE_SEQUENCE))], ", ".join(EMOTIONS), api_name="/predict_sequence"
    )
    assert app_label(outputs) == truth_of(EXAMPLE_SEQUENCE)


@pytest.mark.parametrize("across", [0.3, 0.45, 2.0, 100.0])
def test_a_unitless_face_that_a_unit_would_fit_is_read_at_its_own_size(predictor, tmp_path, across):
    """A model exported without units, its largest side 0.3, 0.45, 2 (a unit sphere's box) or 100 units: metres make
    the first two a 300-450 mm head, no unit fits the third (drawn at a 200 mm guess until stop 65, at the face's own
    size since) and millimetres make the last a 100 mm face. The face's measured size snapped to metres, so faces were read
    zoomed in, one and a half to two and a half times their size (two of five wrong at 0.3 and 0.45 units before
    the unit window was narrowed; the anger example at 0.3 units until the face's size was measured by its detail,
    which errs by under 15 % on nine faces in ten, not up to 1.8x)."""
    paths = [p for p in EXAMPLE_SCANS if p.stem not in KNOWN_WRONG | MARGINAL]
    got = []
    for path in paths:
        scan = load_scan(path)
        v = scan.vertices.astype(np.float64)
        v = (v * (across / np.ptp(v, axis=0).max())).astype(np.float32)
        write_ply(tmp_path / path.name, scan.replace(vertices=v))
        got.append(predictor(scan=tmp_path / path.name, labels=EMOTIONS).label)
    assert got == [truth_of(p) for p in paths]
