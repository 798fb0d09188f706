"""train/facshuman.py: MakeHuman heads posed with FACSHuman's emotion targets, scored through the predictor. The real
files are not in the repository (MakeHuman CC0, FACSHuman LGPL-3.0); a MakeHuman-like tree built from the Surrey
Face Model (decimetres, its blendshapes as emotion targets) has a known answer for every scan."""

import json
from pathlib import Path

import numpy as np
import pytest

from train import facshuman
from train.facshuman import EMOTION_TARGETS, HEAD_SHAPES, Heads, MakeHumanError, read_obj_groups, read_target


def write_target(path, offsets):
    path.parent.mkdir(parents=True, exist_ok=True)
    moved = np.flatnonzero(np.abs(offsets).sum(1) > 0)
    lines = ["# a MakeHuman target: index dx dy dz", ""] + [f"{i} {x:.5f} {y:.5f} {z:.5f}" for i, (x, y, z) in
                                                              zip(moved, offsets[moved])]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def sfm_trees(sfm_dir, tmp_path_factory):
    """A MakeHuman data folder whose base mesh is the SFM's mean face in decimetres (one 'body' group) and whose
    head shapes are its first shape components, and a FACSHuman folder whose emotion targets are its blendshapes."""
    d = np.load(sfm_dir / "sfm_3448.npz")
    root = tmp_path_factory.mktemp("mh")
    data, emotions = root / "makehuman" / "data", root / "FACSHuman" / "FACSHuman" / "00 Emotions"
    (data / "3dobjs").mkdir(parents=True)
    with open(data / "3dobjs" / "base.obj", "w") as fh:
        fh.write("".join(f"v {x / 100:.6f} {y / 100:.6f} {z / 100:.6f}\n" for x, y, z in d["mean"]))
        fh.write("g body\n" + "".join(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in d["triangles"] + 1))
    basis = d["basis"].reshape(len(d["mean"]), 3, -1) * np.sqrt(d["eigenvalues"])
    for k, shape in enumerate(HEAD_SHAPES):
        write_target(data / "targets" / f"{shape}.target", basis[:, :, k % 10] / 100)
    blend = dict(zip(d["expression_names"], d["expressions"]))
    for label, recipes in EMOTION_TARGETS.items():
        for k, recipe in enumerate(recipes):
            write_target(emotions / f"{recipe}.target", blend[label] * (1.0 - 0.1 * k) / 100)
    return root / "makehuman", root / "FACSHuman"


def test_a_target_file_is_read_by_vertex_index(tmp_path):
    path = tmp_path / "t.target"
    path.write_text("# comment\n\n2 0.1 -0.2 0.3\n0 1 1 1  # trailing\n")
    offsets = read_target(path, 4)
    assert offsets.tolist() == [[1, 1, 1], [0, 0, 0], [0.1, -0.2, 0.3], [0, 0, 0]]


def test_an_obj_is_read_with_its_groups_and_polygons_fanned(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\ng body\nf 1/1 2/2 3/3 4/4\ng helper-l-eye\nf 1 2 3\n")
    v, t, g = read_obj_groups(path)
    assert v.shape == (4, 3) and t.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2]]
    assert g.tolist() == ["body", "body", "helper-l-eye"]


def test_folders_without_the_files_are_named_without_their_paths(tmp_path):
    with pytest.raises(MakeHumanError, match="no MakeHuman data folder") as e:
        Heads(tmp_path / "nothing", tmp_path)
    assert str(tmp_path.parent) not in str(e.value)


def test_a_missing_emotion_target_is_named(sfm_trees, tmp_path):
    import shutil

    emotions = tmp_path / "00 Emotions"
    shutil.copytree(sfm_trees[1] / "FACSHuman" / "00 Emotions", emotions)
    (emotions / "07_Sadness.target").unlink()
    with pytest.raises(MakeHumanError, match="lack 07_Sadness"):
        Heads(sfm_trees[0], emotions)


def test_a_bad_model_or_subject_count_is_one_line(sfm_trees, capsys):
    trees = ["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1])]
    with pytest.raises(SystemExit, match="no such folder or shipped model 'affectvlm-nope'"):
        facshuman.main([*trees, "--model", "affectvlm-nope"])
    with pytest.raises(SystemExit):
        facshuman.main([*trees, "--subjects", "0"])
    assert "--subjects must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        facshuman.main([*trees, "--export", "heads", "--model", "affectvlm-ict"])
    assert "--export writes heads and scores nothing" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        facshuman.main([*trees, "--export", "heads", "--sequences", "--levels", "0.5", "1.0"])
    assert "give one strength" in capsys.readouterr().err


def test_heads_are_in_millimetres_and_their_targets_move_them(sfm_trees):
    heads = Heads(*sfm_trees)
    identity = heads.identity(np.random.default_rng(0))
    neutral, happy = heads.scan(identity), heads.scan(identity, "06_Happy", 1.0)
    assert 120 < np.ptp(neutral.vertices[:, 1]) < 300  # a face's height in mm, from decimetres
    assert neutral.faces.shape == happy.faces.shape and not np.allclose(neutral.vertices, happy.vertices)


def test_the_faces_are_read_as_their_expressions(sfm_trees, tmp_path):
    """The SFM's blendshapes at full strength, on new SFM identities, through the script's whole path: a random
    model or a broken head (units, crop, targets) would not read five in six of them right."""
    out = tmp_path / "report.json"
    result = facshuman.main(["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1]), "--subjects", "2",
                             "--levels", "1.0", "--out", str(out)])
    assert result["n"] == 2 * (1 + sum(len(r) for r in EMOTION_TARGETS.values()))
    assert result["emotions_six_labels"] >= 5 / 6
    assert json.loads(out.read_text())["confusion_png"] == "report.png" and (tmp_path / "report.png").is_file()


def test_sequences_are_read_as_their_expressions(sfm_trees):
    """The same faces as 4D sequences (neutral, the blendshape rising to full strength and falling back)."""
    result = facshuman.main(["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1]), "--subjects", "1",
                             "--sequences"])
    assert result["kind"] == "4d" and result["n"] == sum(len(r) for r in EMOTION_TARGETS.values())
    assert result["emotions_six_labels"] >= 5 / 6 and result["neutral_recall"] is None


def test_a_head_is_what_a_face_scanner_sees_not_the_shoulders_below_it(sfm_trees, tmp_path):
    """A base mesh of the SFM's mean face with shoulders below it (a 600 mm slab, in the 'body' group, as
    MakeHuman's body carries its shoulders and arms), and a fear target that also moves the top of the slab (as
    FACSHuman's fear and surprise move a few neck vertices): the head is still the face, not a bust 600 mm across
    (until stop 58 the neck's movers let the chest and the upper arms in)."""
    import shutil

    makehuman, facs = (Path(shutil.copytree(p, tmp_path / p.name)) for p in sfm_trees)
    base = makehuman / "data" / "3dobjs" / "base.obj"
    face_v, _, _ = read_obj_groups(base)
    low = face_v[:, 1].min()
    x, y = np.meshgrid(np.linspace(-3.0, 3.0, 13), np.linspace(low - 1.5, low - 0.3, 5))  # decimetres
    slab = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    n, grid = len(face_v), np.arange(x.size).reshape(x.shape) + len(face_v) + 1
    quads = zip(grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel(), grid[1:, 1:].ravel(), grid[1:, :-1].ravel())
    with open(base, "a") as fh:
        fh.write("".join(f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in slab))
        fh.write("".join(f"f {a} {b} {c}\nf {a} {c} {d}\n" for a, b, c, d in quads))
    fear = facs / "FACSHuman" / "00 Emotions" / f"{EMOTION_TARGETS['fear'][0]}.target"
    offsets = np.zeros((n + len(slab), 3))
    offsets[n + np.flatnonzero(np.abs(slab[:, 1] - slab[:, 1].max()) < 1e-6)] = [0.0, 0.01, 0.0]
    with open(fear, "a") as fh:
        fh.write("".join(f"{i} {a:.5f} {b:.5f} {c:.5f}\n" for i, (a, b, c) in enumerate(offsets) if i >= n and b))
    head = Heads(makehuman, facs).scan(np.zeros((n + len(slab), 3)))
    assert np.ptp(head.vertices[:, 0]) < 250.0, np.ptp(head.vertices, 0)  # mm: a face, not the shoulders


def test_a_family_is_one_kind_of_recipe_and_all_is_both():
    for label, recipes in EMOTION_TARGETS.items():
        own, langner = facshuman.recipes_of(label, "own"), facshuman.recipes_of(label, "langner")
        assert own and langner and set(own) | set(langner) == set(facshuman.recipes_of(label)) == set(recipes)
        assert all("Langner" in r for r in langner) and not any("Langner" in r for r in own)
    with pytest.raises(ValueError, match="unknown recipe family"):
        facshuman.recipes_of("anger", "mine")


def test_scoring_one_family_scores_only_its_recipes(sfm_trees):
    result = facshuman.main(["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1]), "--subjects", "1",
                             "--levels", "1.0", "--recipes", "langner"])
    assert result["recipes"] == "langner" and result["n"] == 1 + len(EMOTION_TARGETS)
    assert all("Langner" in k for k in result["per_recipe"])


def test_exported_heads_are_a_bu3dfe_folder_whose_scans_read_as_their_labels(sfm_trees, tmp_path):
    """`--export` writes what `affectvlm.data prepare --dataset bu3dfe` reads: a neutral scan and four strengths
    of each emotion an identity, labelled by their file names; read back through the predictor, the strongest
    scans are their expressions (a file written under the wrong label, units or frame would not be)."""
    from affectvlm import AffectVLMPredictor
    from affectvlm.data.aus import BASIC_LABELS, NEUTRAL
    from affectvlm.data.datasets import read_bu3dfe

    out = tmp_path / "heads"
    facshuman.main(["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1]), "--subjects", "2",
                    "--seed", "3", "--export", str(out)])
    index = read_bu3dfe(out, strict=True)
    assert len(index) == 2 * 25 and len({s.subject for s in index}) == 2
    assert {(s.label, s.intensity) for s in index} == {(NEUTRAL, 0)} | {(b, k) for b in BASIC_LABELS for k in range(1, 5)}
    predictor = AffectVLMPredictor.from_pretrained()
    strongest = [s for s in index if s.intensity == 4]
    right = [predictor(scan=s.path, labels=[NEUTRAL, *BASIC_LABELS]).label == s.label for s in strongest]
    assert sum(right) >= 10, right  # of 12: the SFM's blendshapes on its own identities


def test_exported_sequences_are_a_bu4dfe_folder_whose_sequences_read_as_their_labels(sfm_trees, tmp_path):
    """`--export --sequences` writes what `affectvlm.data prepare --dataset bu4dfe` reads: one 8-frame sequence an
    emotion and identity, neutral to apex and back, labelled by its folder; read back through the predictor, they
    are their expressions (a sequence written under the wrong label, units or frame of reference would not be)."""
    from affectvlm import AffectVLMPredictor
    from affectvlm.data.aus import BASIC_LABELS
    from affectvlm.data.datasets import read_bu4dfe
    from affectvlm.scan import load_scan

    def exported(name, *realism):
        result = facshuman.main(["--makehuman", str(sfm_trees[0]), "--facshuman", str(sfm_trees[1]), "--subjects",
                                 "1", "--seed", "3", "--export", str(tmp_path / name), "--sequences", *realism])
        index = read_bu4dfe(tmp_path / name, strict=True)
        assert result == {"sequences": 6} and len(index) == 6 and {s.label for s in index} == set(BASIC_LABELS)
        assert all(len(s.paths) == 8 for s in index)
        return index

    index = exported("clean")
    frames = [load_scan(p).vertices for p in index[0].paths]  # one mesh: frame t moves with the ramp
    moved = [np.abs(f - frames[0]).max() for f in frames]
    assert moved[0] == 0 and max(moved) == max(moved[3], moved[4]) and moved[7] < 0.5 * max(moved)
    predictor = AffectVLMPredictor.from_pretrained()
    right = [predictor(sequence=list(s.paths), labels=list(BASIC_LABELS)).label == s.label for s in index]
    assert sum(right) >= 5, right  # of 6: the SFM's blendshapes on its own identities
    exported("scanned", "--realism", "on")  # a scanner's sequences: the same folder, every frame a file
