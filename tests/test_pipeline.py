"""The transformers pipeline shipped with the weights (`affectvlm/pipeline_affectvlm.py`), offline.

A saved folder loads with `pipeline(model=folder, trust_remote_code=True)` (task from config.json's
`custom_pipelines`) and with the task the card advertises; for scans, sequences and views its answer is the
`AffectVLMPredictor`'s. Also: the shipped demo checkpoint after the hub copy, the card's pipeline snippet,
and views scored (and scans refused clearly) where the `affectvlm` package cannot be imported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from affectvlm import AffectVLMModel
from affectvlm.configuration_affectvlm import CUSTOM_PIPELINES, PIPELINE_TASK
from affectvlm.predictor import DEMO_CHECKPOINT, AffectVLMPredictor
from affectvlm.testing import tiny_config, tiny_processor
from hub.card import TASK, model_card
from hub.common import CUSTOM_PIPELINES as HUB_CUSTOM_PIPELINES
from hub.common import (
    PACKAGE_DIR,
    REMOTE_CODE_FILES,
    PublishError,
    check_remote_code,
    copy_checkpoint,
    copy_remote_code,
    refresh_remote_code,
)

LABELS = ["happiness", "a person in pain", "surprise"]
VIEWS = ["frontal", "left", "right"]


def bump_obj(path: Path, bump: float = 25.0, n: int = 40) -> Path:
    """An OBJ of a face-sized half ellipsoid (mm) with a nose-like bump in the middle."""
    x, y = np.meshgrid(np.linspace(-75, 75, n), np.linspace(-100, 100, n))
    cap = 60 * np.sqrt(np.clip(1 - (x / 75) ** 2 - (y / 100) ** 2, 0, None))
    z = cap + bump * np.exp(-(x**2 + y**2) / (2 * 12**2))
    grid = np.arange(n * n).reshape(n, n)
    a, b, c, d = grid[:-1, :-1].ravel(), grid[:-1, 1:].ravel(), grid[1:, :-1].ravel(), grid[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    with open(path, "w") as f:
        f.writelines(f"v {p:.3f} {q:.3f} {r:.3f}\n" for p, q, r in np.stack([x, y, z], -1).reshape(-1, 3))
        f.writelines(f"f {p + 1} {q + 1} {r + 1}\n" for p, q, r in faces)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A bump scan, a 3-frame sequence (folder and zip) and three view images (files)."""
    folder = tmp_path_factory.mktemp("inputs")
    frames = folder / "frames"
    frames.mkdir()
    paths = [bump_obj(frames / f"{t:02d}.obj", bump) for t, bump in enumerate([10.0, 20.0, 30.0])]
    with zipfile.ZipFile(folder / "frames.zip", "w") as archive:
        for path in paths:
            archive.write(path, path.name)
    rng = np.random.default_rng(0)
    for name in VIEWS:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return {
        "dir": folder,
        "scan": bump_obj(folder / "face.obj"),
        "frames": frames,
        "zip": folder / "frames.zip",
    }


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A tiny model and processor saved with save_pretrained, as training saves a checkpoint."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "affectvlm-pipeline-tiny"
    AffectVLMModel(tiny_config()).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier(tiny_folder):
    return pipeline(model=str(tiny_folder), trust_remote_code=True, device="cpu")


@pytest.fixture(scope="module")
def predictor(tiny_folder):
    # The pipeline runs in the dtype its model was loaded in (fp32 by default); the predictor picks bf16 on CPUs
    # with AMX or AVX512-BF16 (affectvlm.precision): compare like with like.
    return AffectVLMPredictor.from_pretrained(tiny_folder, device="cpu", dtype=torch.float32)


def assert_same_answer(answer, prediction) -> None:
    """The pipeline's rows equal the predictor's scores: same labels, same order, same probabilities."""
    assert [row["label"] for row in answer] == list(prediction.scores())
    assert answer[0]["label"] == prediction.label
    scores = [row["score"] for row in answer]
    np.testing.assert_allclose(scores, list(prediction.scores().values()), atol=1e-6)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert answer.notes == prediction.notes


# -- registration -----------------------------------------------------------------------------------------


def test_saving_writes_the_pipeline_and_its_config_entry(tiny_folder):
    name = "pipeline_affectvlm.py"
    assert (tiny_folder / name).read_bytes() == (PACKAGE_DIR / name).read_bytes()
    config = json.loads((tiny_folder / "config.json").read_text())
    assert config["custom_pipelines"] == CUSTOM_PIPELINES == HUB_CUSTOM_PIPELINES
    # the card's pipeline_tag is the pipeline's task
    assert list(CUSTOM_PIPELINES) == [PIPELINE_TASK] == [TASK]


def test_pipeline_loads_by_config_and_by_task_name(classifier, tiny_folder):
    assert (type(classifier).__name__, classifier.task) == ("AffectVLMPipeline", PIPELINE_TASK)
    assert type(classifier).__module__.startswith("transformers_modules.")  # the folder's own file
    by_name = pipeline(PIPELINE_TASK, model=str(tiny_folder), trust_remote_code=True, device="cpu")
    assert type(by_name).__name__ == "AffectVLMPipeline"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(PIPELINE_TASK, model=str(tiny_folder), device="cpu")


# -- answers: the predictor's -----------------------------------------------------------------------------


def test_scan_answer_is_the_predictors(classifier, predictor, inputs):
    answer = classifier(scan=str(inputs["scan"]), candidate_labels=LABELS)
    assert_same_answer(answer, predictor(scan=inputs["scan"], labels=LABELS))
    assert set(answer[0]) == {"label", "score"}
    # positionally, a 3D file is a scan; the labels default to the model's
    assert_same_answer(classifier(str(inputs["scan"])), predictor(scan=inputs["scan"]))


def test_images_answer_is_the_predictors(classifier, predictor, inputs):
    files = [str(inputs["dir"] / f"{name}.png") for name in VIEWS]
    arrays = [np.asarray(Image.open(path)) for path in files]
    expected = predictor(images=arrays, labels=LABELS)
    assert_same_answer(classifier(images=files, candidate_labels=LABELS), expected)
    assert_same_answer(classifier(images=dict(zip(VIEWS, arrays)), candidate_labels=LABELS), expected)
    # one view missing: the predictor's note comes with the answer
    partial = classifier(images={"frontal": arrays[0], "right": arrays[2]}, candidate_labels=LABELS)
    assert_same_answer(partial, predictor(images=[arrays[0], None, arrays[2]], labels=LABELS))
    assert any("missing view(s): left" in note for note in partial.notes)


def test_sequence_answer_is_the_predictors(classifier, predictor, inputs):
    expected = predictor(sequence=inputs["frames"], labels=LABELS)
    assert_same_answer(classifier(sequence=str(inputs["frames"]), candidate_labels=LABELS), expected)
    assert_same_answer(classifier(str(inputs["zip"]), candidate_labels=LABELS), expected)  # a zip: a sequence


def test_positional_images_batches_and_bad_calls(classifier, predictor, inputs):
    frontal = str(inputs["dir"] / "frontal.png")
    alone = classifier(frontal, candidate_labels="joy, grief")  # an image alone is the first view
    assert_same_answer(alone, predictor(images=[frontal, None, None], labels="joy, grief"))
    batch = classifier([{"scan": str(inputs["scan"])}, frontal], candidate_labels=LABELS)
    assert len(batch) == 2 and all(len(answer) == len(LABELS) for answer in batch)
    with pytest.raises(ValueError, match="exactly one of images=, scan= or sequence="):
        classifier(scan=str(inputs["scan"]), images=[frontal, None, None])
    with pytest.raises(TypeError, match="cannot score a int"):
        classifier(3)


def test_pipeline_save_pretrained_gives_a_loadable_folder(classifier, inputs, tmp_path):
    classifier.save_pretrained(tmp_path / "resaved")
    again = pipeline(model=str(tmp_path / "resaved"), trust_remote_code=True, device="cpu")
    scan = str(inputs["scan"])
    assert again(scan=scan, candidate_labels=LABELS) == classifier(scan=scan, candidate_labels=LABELS)


# -- the shipped demo checkpoint --------------------------------------------------------------------------


def test_demo_checkpoint_after_the_hub_copy(inputs, tmp_path):
    """The committed checkpoint, copied as push.py copies it (current remote code, custom_pipelines added)."""
    folder = tmp_path / "affectvlm-cpu-pipeline"
    copy_checkpoint(DEMO_CHECKPOINT, folder)
    copy_remote_code(DEMO_CHECKPOINT, folder)
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == HUB_CUSTOM_PIPELINES
    demo = pipeline(model=str(folder), trust_remote_code=True, device="cpu")
    predictor = AffectVLMPredictor.from_pretrained(folder, device="cpu", dtype=torch.float32)
    assert_same_answer(demo(scan=str(inputs["scan"])), predictor(scan=inputs["scan"]))
    files = [str(inputs["dir"] / f"{name}.png") for name in VIEWS]
    assert_same_answer(demo(images=files, candidate_labels=LABELS), predictor(images=files, labels=LABELS))


def test_the_pipeline_takes_a_scans_facing(tmp_path):
    """`facing=` reaches the predictor through the shipped checkpoint's pipeline: the happy example looking along
    -x in its file reads happiness with that facing, as the predictor reads it; pointed the other way, noted."""
    from affectvlm.scan import load_scan, write_ply
    from affectvlm.scan.normalize import facing_turn

    smile = load_scan(DEMO_CHECKPOINT.parents[1] / "examples" / "scan_subject0_happiness.ply")
    write_ply(tmp_path / "bust.ply", smile.replace(vertices=(smile.vertices @ facing_turn("-x")).astype("f4")))
    folder = tmp_path / "demo"
    copy_checkpoint(DEMO_CHECKPOINT, folder)
    copy_remote_code(DEMO_CHECKPOINT, folder)
    demo = pipeline(model=str(folder), trust_remote_code=True, device="cpu")
    predictor = AffectVLMPredictor.from_pretrained(folder, device="cpu", dtype=torch.float32)
    answers = {}
    for facing in ("-x", "+x"):
        answers[facing] = demo(scan=str(tmp_path / "bust.ply"), facing=facing)
        assert_same_answer(answers[facing], predictor(scan=tmp_path / "bust.ply", facing=facing))
    assert answers["-x"][0]["label"] == "happiness" and answers["-x"].notes == []
    assert answers["+x"][0]["score"] < 0.5 and answers["+x"].notes  # drawn from behind: noted, nothing stands out


def test_refresh_remote_code_updates_a_checkpoint_in_place(tmp_path):
    """What the lead runs on checkpoints/affectvlm-cpu after a change of the remote code."""
    folder = Path(shutil.copytree(DEMO_CHECKPOINT, tmp_path / "demo"))
    weights = (folder / "model.safetensors").read_bytes()
    refresh_remote_code(folder)
    for name in REMOTE_CODE_FILES:
        assert (folder / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), name
    assert json.loads((folder / "config.json").read_text())["custom_pipelines"] == HUB_CUSTOM_PIPELINES
    assert (folder / "model.safetensors").read_bytes() == weights
    assert set(refresh_remote_code(folder).values()) == {"unchanged"}


# -- the card ---------------------------------------------------------------------------------------------


def test_the_cards_pipeline_snippets_run(tiny_folder, inputs, monkeypatch, capsys):
    config = json.loads((tiny_folder / "config.json").read_text())
    processor_config = json.loads((tiny_folder / "processor_config.json").read_text())
    text = model_card("me/affectvlm-tiny", config, processor_config).text
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "classifier" in b]
    call = 'pipeline("zero-shot-image-classification", model='
    assert len(blocks) == 2 and call + '"me/affectvlm-tiny"' in blocks[0]
    monkeypatch.chdir(inputs["dir"])  # frontal.png, left.png, right.png, face.obj, frames.zip
    code = "\n".join(blocks).replace('"me/affectvlm-tiny"', repr(str(tiny_folder)))
    code = code.replace(call, call.replace("model=", 'device="cpu", model='))
    exec(compile(code, "card-snippet", "exec"), {})
    lines = capsys.readouterr().out.splitlines()  # images, scan and sequence answers, then the predictor's
    assert len(lines) == 4 and all(line.startswith("[{'label': ") for line in lines[:3])


# -- without the affectvlm package --------------------------------------------------------------------------


def test_without_affectvlm_views_are_scored_and_scans_refused_clearly(tiny_folder, inputs, tmp_path):
    code = textwrap.dedent(f"""
        import json, sys
        sys.modules["affectvlm"] = None  # not importable: only the folder's files can be used
        from transformers import pipeline
        classifier = pipeline(model={str(tiny_folder)!r}, trust_remote_code=True, device="cpu")
        files = [{str(inputs["dir"])!r} + f"/{{name}}.png" for name in ("frontal", "left", "right")]
        answer = classifier(images=files, candidate_labels=["happiness", "sadness", "surprise"])
        try:
            classifier(scan={str(inputs["scan"])!r})
            refused = ""
        except ImportError as err:
            refused = str(err)
        print(json.dumps({{"module": type(classifier).__module__, "answer": answer, "notes": answer.notes,
                          "refused": refused}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.")
    scores = [row["score"] for row in result["answer"]]
    assert sorted(scores, reverse=True) == scores and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert {row["label"] for row in result["answer"]} == {"happiness", "sadness", "surprise"}
    assert "one prompt per label" in result["notes"][0]
    assert "needs the affectvlm package" in result["refused"] and "pip install affectvlm" in result["refused"]


def test_remote_code_check_allows_only_optional_extra_imports(tmp_path):
    check_remote_code(PACKAGE_DIR / "pipeline_affectvlm.py")  # its affectvlm import is optional
    optional = tmp_path / "optional.py"
    optional.write_text(
        "def f():\n    try:\n        import affectvlm\n    except ImportError:\n        return None\n"
    )
    check_remote_code(optional)
    required = tmp_path / "required.py"
    required.write_text("def f():\n    import affectvlm\n")
    with pytest.raises(PublishError, match="imports 'affectvlm'"):
        check_remote_code(required)


def test_a_hypothesis_template_is_the_prompt_the_labels_are_scored_with(classifier, predictor, inputs):
    """Given, the template is each label's one prompt (as transformers' zero-shot pipelines use it); it was
    ignored whenever affectvlm was installed."""
    template = "a face that looks {} to me."
    answer = classifier(scan=str(inputs["scan"]), candidate_labels=LABELS, hypothesis_template=template)
    own = predictor(scan=inputs["scan"], labels={label: [template.format(label)] for label in LABELS})
    assert_same_answer(answer, own)
    assert not np.allclose(own.probs, predictor(scan=inputs["scan"], labels=LABELS).probs, atol=1e-4)


# -- one image through images=, top_k: the shipped checkpoint on the committed example views ------------------

EXAMPLE_VIEWS = {  # the truth is in the file names
    "disgust": Path(__file__).resolve().parents[1] / "examples" / "views_subject1_disgust_{}.png",
    "anger": Path(__file__).resolve().parents[1] / "examples" / "views_ict_subject3_anger_{}.png",
}
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]

# Run in a fresh process (as a Hub user runs it): each call's answer (rows and notes) or its error.
SINGLE_IMAGE_CALLS = """
import json, sys
if sys.argv[2] == "blocked":
    sys.modules["affectvlm"] = None  # not importable: only the folder's files can be used
from PIL import Image
from transformers import pipeline
classifier = pipeline("zero-shot-image-classification", model=sys.argv[1], trust_remote_code=True, device="cpu")
def run(**kwargs):
    inputs = kwargs.pop("inputs", None)
    try:
        answer = classifier(inputs, **kwargs) if inputs is not None else classifier(**kwargs)
        return {"rows": answer, "notes": answer.notes}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}
out = {}
for truth, pattern in json.loads(sys.argv[3]).items():
    views = [pattern.format(v) for v in ("frontal", "left", "right")]
    labels = json.loads(sys.argv[4])
    out[truth] = {
        "positional": run(inputs=views[0], candidate_labels=labels),
        "images=path": run(images=views[0], candidate_labels=labels),
        "images=PIL": run(images=Image.open(views[0]), candidate_labels=labels),
        "images=list": run(images=views, candidate_labels=labels),
        "images=dict": run(images=dict(zip(("frontal", "left", "right"), views)), candidate_labels=labels),
        "top_k=2": run(images=views, candidate_labels=labels, top_k=2),
        "images=path, top_k=1": run(images=views[0], candidate_labels=labels, top_k=1),
        "top_k=0": run(images=views, candidate_labels=labels, top_k=0),
    }
print(json.dumps(out))
"""


@pytest.mark.parametrize("environment", ["affectvlm installed", "blocked"])
def test_one_image_through_images_is_the_positional_answer_and_top_k_works(environment, tmp_path):
    """`images=` given one image (a path or a PIL image), the usual zero-shot-image-classification call, was
    iterated as if it were the views (a path character by character) or refused ("give 3 views"), and top_k
    raised a TypeError. Now one image is the first view, as positionally (same answer and notes), and top_k
    keeps the k likeliest labels, sorted; the shipped checkpoint reads each example set's truth."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    patterns = {truth: str(path) for truth, path in EXAMPLE_VIEWS.items()}
    mode = "blocked" if environment == "blocked" else "installed"
    run = subprocess.run(
        [sys.executable, "-c", SINGLE_IMAGE_CALLS, str(DEMO_CHECKPOINT), mode, json.dumps(patterns),
         json.dumps(EMOTIONS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for truth, answers in json.loads(run.stdout.strip().splitlines()[-1]).items():
        positional = answers["positional"]
        assert "error" not in positional, positional
        assert positional["rows"][0]["label"] == truth
        assert any("missing view(s): left, right" in note for note in positional["notes"])
        for call in ("images=path", "images=PIL"):
            assert answers[call] == positional, (truth, call, answers[call])
        three = answers["images=list"]
        assert three["rows"][0]["label"] == truth and answers["images=dict"] == three
        assert answers["top_k=2"] == {"rows": three["rows"][:2], "notes": three["notes"]}, answers["top_k=2"]
        assert answers["images=path, top_k=1"] == {"rows": positional["rows"][:1], "notes": positional["notes"]}
        assert answers["top_k=0"] == {"error": "ValueError: top_k is how many labels to return, a whole number "
                                      "from 1; got 0"}  # fmt: skip
