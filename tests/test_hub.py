"""Hub publishing (`hub/push.py`, `hub/space.py`), offline.

- `--dry-run` folders are checked file by file against their sources.
- Uploads go to `FakeHub`, an in-process FAKE of the Hub's HTTP API plugged in with
  `huggingface_hub.set_client_factory`; it records what a push commits. Nothing reaches the network (and
  conftest sets HF_HUB_OFFLINE=1, so the default client would refuse any request if the fake were not in).
- The model folder is loaded with `AutoModel.from_pretrained(folder, trust_remote_code=True)` in a fresh
  process where the local `affectvlm` package cannot be imported, running the card's own usage snippet.
- Slow: a Space built from the dry-run folder starts with `python app.py` in a fresh virtual environment.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2
import pytest
import yaml
from huggingface_hub import ModelCard, SpaceCard, set_client_factory
from huggingface_hub.utils import close_session
from huggingface_hub.utils._http import default_client_factory  # to restore; not re-exported publicly

from hub import push, space
from hub.card import load_results, parse_results
from hub.common import PACKAGE_DIR, REMOTE_CODE_FILES, REPO_ROOT, PublishError, check_repo_id, list_files

REPO_ID = "me/affectvlm-tiny"
MODEL_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "face_distance.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    *REMOTE_CODE_FILES,
}
LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
# The shape train/cross_validate.py writes (one summary per variant; the card uses "full").
CV_RESULTS = {
    "config": "synth-cpu",
    "task": "3d",
    "cache_dir": "/tmp/cache/synth-0123456789ab",
    "k": 3,
    "folds_run": [0, 1, 2],
    "fold_lists": [{"index": i, "train": ["s9"], "val": ["s8"], "test": [f"s{i}"]} for i in range(3)],
    "overrides": ["data.cache_dir=/tmp/cache/synth-0123456789ab"],
    "variant_overrides": {"full": [], "zero_shot": ["train.max_steps=0"]},
    "command": "python train/cross_validate.py --k 3",
    "variants": {
        "full": {
            "folds": [0, 1, 2],
            "accuracy_per_fold": [0.81, 0.79, 0.83],
            "accuracy_mean": 0.81,
            "accuracy_std": 0.02,
            "macro_f1_mean": 0.80,
            "pooled_accuracy": 0.81,
            "per_class_f1": dict(zip(LABELS, [0.65, 0.70, 0.75, 0.93, 0.80, 0.95])),
            "confusion_matrix": [[20 if i == j else 0 for j in range(6)] for i in range(6)],
            "num_test_samples": 120,
            "selected_step_per_fold": [40, 40, 30],
            "train_samples_per_s": [50.0, 51.0, 49.0],
        },
        "zero_shot": {
            "folds": [0, 1, 2],
            "accuracy_per_fold": [0.2, 0.15, 0.25],
            "accuracy_mean": 0.2,
            "accuracy_std": 0.05,
            "macro_f1_mean": 0.1,
            "pooled_accuracy": 0.2,
            "per_class_f1": dict.fromkeys(LABELS, 0.1),
        },
    },
}
# A flat file, as an earlier draft of the schema had it.
FLAT_RESULTS = {
    "dataset": "SynthFER-3D",
    "protocol": "subject-independent 3-fold, 6 classes",
    "folds": [
        {"fold": 0, "accuracy": 0.81, "macro_f1": 0.80, "per_class_f1": {"anger": 0.70, "happiness": 0.90}},
        {"fold": 1, "accuracy": 0.79, "macro_f1": 0.78, "per_class_f1": {"anger": 0.60, "happiness": 0.96}},
        {"fold": 2, "accuracy": 0.83, "macro_f1": 0.82, "per_class_f1": {"anger": 0.65, "happiness": 0.93}},
    ],
    "mean_accuracy": 0.81,
    "std_accuracy": 0.0163,
    "per_class_f1": {"anger": 0.65, "happiness": 0.93},
}
PROTOCOL = "subject-independent 3-fold cross-validation, static 3D scans"


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny AffectVLM model and processor, and the checkpoint folder they were saved to."""
    import torch

    from affectvlm import AffectVLMModel
    from affectvlm.testing import tiny_config, tiny_processor

    torch.manual_seed(0)
    model, processor = AffectVLMModel(tiny_config()).eval(), tiny_processor()
    folder = tmp_path_factory.mktemp("ckpt") / "affectvlm-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    # beside the weights, published with them: what tells the predictor a scan may not be a face
    import numpy as np

    from affectvlm import face_distance

    face_distance.save(face_distance.FaceDistance(np.zeros((1, 32)), np.eye(32), ["happiness"], 5.0), folder)
    return model, processor, folder


@pytest.fixture(scope="module")
def checkpoint(tiny) -> Path:
    return tiny[2]


@pytest.fixture
def results_file(tmp_path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(CV_RESULTS))
    return path


@pytest.fixture(scope="module")
def model_folder(checkpoint, tmp_path_factory) -> Path:
    """push.py's dry run on the tiny checkpoint, with results; exit 0 includes push.py's own model check."""
    results = tmp_path_factory.mktemp("results") / "results.json"
    results.write_text(json.dumps(CV_RESULTS))
    out = tmp_path_factory.mktemp("model-folder") / "out"
    args = [str(checkpoint), "--repo-id", REPO_ID, "--results", str(results), "--dry-run", str(out)]
    assert push.main(args) == 0
    return out


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- the fake Hub -----------------------------------------------------------------------------------------


class FakeHub:
    """A FAKE of the Hugging Face Hub's HTTP API, in process: only the routes that `HfApi.create_repo` and
    `HfApi.upload_folder` call. It keeps repos and records every commit (message, files and their bytes).

    Simplification: the real Hub answers "lfs" for weight files, and the client then sends them to the Xet
    storage service, which this fake does not model. The fake answers "regular" for every file, so every
    file's content travels inside the commit and can be compared byte for byte.
    """

    def __init__(self):
        self.repos: dict[tuple[str, str], dict] = {}  # (repo type, repo id) -> create payload
        self.commits: list[dict] = []
        self.validated: list[tuple[str, str]] = []  # (repo type, README.md sent to /api/validate-yaml)
        self.tokens: set[str] = set()
        self.unexpected: list[str] = []
        self.variables: dict[str, dict[str, str]] = {}  # Space id -> its variables
        self.requests: list[str] = []  # "METHOD path", in order

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.tokens.add(request.headers.get("authorization", ""))
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        variables = re.fullmatch(r"/api/spaces/([^/]+/[^/]+)/variables", path)
        if variables:
            return self._variables(request, variables.group(1))
        if request.method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(request.content))
        if request.method == "POST" and path == "/api/validate-yaml":
            return self._validate(json.loads(request.content))
        info = re.fullmatch(r"/api/(model|dataset|space)s/([^/]+/[^/]+)", path)
        if request.method == "GET" and info:  # repo_info: create_repo asks it after a 401/402/403
            if info.groups() not in self.repos:
                return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "no repo"})
            return httpx2.Response(200, json={"id": info.group(2), "sha": f"{len(self.commits):040x}"})
        match = re.fullmatch(r"/api/(model|dataset|space)s/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if request.method == "POST" and match:
            repo_type, repo_id, action, revision = match.groups()
            if (repo_type, repo_id) not in self.repos:
                return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "no repo"})
            if action == "preupload":
                files = json.loads(request.content)["files"]
                return httpx2.Response(
                    200, json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                         for f in files]}
                )
            return self._commit(repo_type, repo_id, revision, request.content)
        self.unexpected.append(f"{request.method} {path}")
        return httpx2.Response(404, json={"error": f"the fake Hub does not serve {request.method} {path}"})

    def _create(self, body: dict) -> httpx2.Response:
        repo_type, repo_id = body.get("type", "model"), f"{body['organization']}/{body['name']}"
        if (repo_type, repo_id) in self.repos:
            # as the real Hub: a 409 that still says where the repo is (create_repo(exist_ok=True) reads it)
            return httpx2.Response(
                409, json={"error": f"You already created this {repo_type} repo", "url": self._url(repo_type, repo_id)}
            )
        self.repos[repo_type, repo_id] = body
        return httpx2.Response(200, json={"url": self._url(repo_type, repo_id)})

    def _variables(self, request: httpx2.Request, repo_id: str) -> httpx2.Response:
        """A Space's variables: GET lists them, POST {"key", "value"} sets one, DELETE {"key"} removes one."""
        if ("space", repo_id) not in self.repos:
            return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "no repo"})
        current = self.variables.setdefault(repo_id, {})
        if request.method == "POST":
            body = json.loads(request.content)
            current[body["key"]] = body["value"]
        elif request.method == "DELETE":
            current.pop(json.loads(request.content)["key"], None)
        return httpx2.Response(200, json={k: {"value": v} for k, v in current.items()})

    def _validate(self, body: dict) -> httpx2.Response:
        self.validated.append((body["repoType"], body["content"]))
        match = re.match(r"---\n(.*?)\n---\n", body["content"], re.S)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as err:
            return httpx2.Response(400, json={"errors": [{"message": str(err)}]})
        if not isinstance(metadata, dict):
            return httpx2.Response(400, json={"errors": [{"message": "no YAML metadata"}]})
        return httpx2.Response(200, json={"errors": [], "warnings": []})

    def _commit(self, repo_type: str, repo_id: str, revision: str, content: bytes) -> httpx2.Response:
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        header = lines[0]["value"]
        files = {}
        for line in lines[1:]:
            assert line["key"] == "file", f"the fake Hub only takes regular files, got {line['key']}"
            files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
        oid = f"{len(self.commits) + 1:040x}"
        self.commits.append(
            {"repo_type": repo_type, "repo_id": repo_id, "revision": revision, "summary": header["summary"],
             "files": files}
        )
        return httpx2.Response(200, json={"commitUrl": f"{self._url(repo_type, repo_id)}/commit/{oid}",
                                          "commitOid": oid})

    @staticmethod
    def _url(repo_type: str, repo_id: str) -> str:
        return f"https://huggingface.co/{'spaces/' if repo_type == 'space' else ''}{repo_id}"


@pytest.fixture
def fake_hub(monkeypatch):
    """Plug FakeHub in as huggingface_hub's HTTP client; the default client factory is restored after."""
    hub = FakeHub()
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")  # never a real token, even if one is set
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle)))
    try:
        yield hub
    finally:
        set_client_factory(default_client_factory)
        close_session()


# -- push.py: the model folder ----------------------------------------------------------------------------


def test_push_dry_run_folder_file_by_file(model_folder, checkpoint):
    assert set(list_files(model_folder)) == MODEL_FILES
    # weights, processor and tokenizer: byte for byte what save_pretrained wrote
    for name in ("model.safetensors", "face_distance.safetensors", "processor_config.json", "tokenizer.json",
                 "tokenizer_config.json"):  # fmt: skip
        assert (model_folder / name).read_bytes() == (checkpoint / name).read_bytes(), name
    # remote code: the current files of the package
    for name in REMOTE_CODE_FILES:
        assert (model_folder / name).read_bytes() == (PACKAGE_DIR / name).read_bytes(), name
    config = json.loads((model_folder / "config.json").read_text())
    assert config == json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_affectvlm.AffectVLMConfig",
        "AutoModel": "modeling_affectvlm.AffectVLMModel",
    }
    processor_config = json.loads((model_folder / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_affectvlm.AffectVLMProcessor"}


def test_model_card_metadata_results_and_usage(model_folder):
    card = ModelCard.load(model_folder / "README.md")
    data = card.data
    assert data.license == "other" and data.license_name == "surrey-face-model-non-commercial"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert {"affectvlm", "facial-expression-recognition"} <= set(data.tags)
    assert data.model_name == REPO_ID
    results = {(r.dataset_split, r.metric_type): r for r in data.eval_results}
    full = CV_RESULTS["variants"]["full"]
    for fold, accuracy in zip(full["folds"], full["accuracy_per_fold"]):
        r = results[f"fold-{fold}", "accuracy"]
        assert r.metric_value == pytest.approx(accuracy)
        assert (r.dataset_name, r.dataset_type, r.dataset_config) == ("SynthFER-3D", "synthfer-3d", PROTOCOL)
    assert results["3-fold-cv", "accuracy"].metric_value == pytest.approx(0.81)
    assert results["3-fold-cv", "accuracy_std"].metric_value == pytest.approx(0.02)
    assert results["3-fold-cv", "f1"].metric_value == pytest.approx(0.80)
    assert len(data.eval_results) == 3 + 3
    text = card.text
    for needed in (
        f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True)',
        f'AutoProcessor.from_pretrained("{REPO_ID}", trust_remote_code=True)',
        "model.encode_prompts(",
        "model.score(",
        "each embedded by CLIP's ViT (2 layers, width 32, patch 8) on 32x32 px views; fused by `mean`",
        "Surrey Face Model",
        "non-commercial use only",
        f"protocol: {PROTOCOL}",
        "| 1 | 79.00 |",
        "**Mean accuracy: 81.00 ± 2.00** (std over the folds); mean macro F1: 80.00.",
        "Per-class F1 (%), over the test predictions of all folds together:",
        "| 65.00 | 70.00 | 75.00 | 93.00 | 80.00 | 95.00 |",
    ):
        assert needed in text, needed


def test_variant_flag_picks_the_summary(checkpoint, results_file, tmp_path, capsys):
    base = [str(checkpoint), "--repo-id", REPO_ID, "--results", str(results_file), "--no-verify"]
    assert push.main([*base, "--variant", "zero_shot", "--dry-run", str(tmp_path / "zs")]) == 0
    card = ModelCard.load(tmp_path / "zs" / "README.md")
    mean = next(r for r in card.data.eval_results if r.dataset_split == "3-fold-cv" and r.metric_type == "accuracy")
    assert mean.metric_value == pytest.approx(0.2) and mean.dataset_config == PROTOCOL + ", variant zero_shot"
    assert push.main([*base, "--variant", "nope", "--dry-run", str(tmp_path / "x")]) == 2
    assert "the results have full, zero_shot, not 'nope'" in capsys.readouterr().err


def test_dataset_and_protocol_flags_override_the_results(checkpoint, results_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(checkpoint), "--repo-id", REPO_ID, "--results", str(results_file), "--no-verify",
            "--dataset", "SynthFER-4D", "--protocol", "leave-one-subject-out"]
    assert push.main([*args, "--dry-run", str(out)]) == 0
    result = ModelCard.load(out / "README.md").data.eval_results[0]
    assert (result.dataset_name, result.dataset_type, result.dataset_config) == (
        "SynthFER-4D", "synthfer-4d", "leave-one-subject-out")
    no_results = [str(checkpoint), "--repo-id", REPO_ID, "--dataset", "x", "--dry-run", str(tmp_path / "o2")]
    assert push.main(no_results) == 2
    assert "give it too" in capsys.readouterr().err


def test_the_checkpoint_own_card_is_kept_and_completed(checkpoint, results_file, tmp_path, capsys):
    own = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    body = "# my demo\n\nTrained on SynthFER-3D from the Surrey Face Model: non-commercial use only.\n\n## Use\n\nSee below.\n"
    (own / "README.md").write_text(f"---\nlicense: other\nlicense_name: my-licence\ntags:\n- synthetic-data\n---\n\n{body}")
    (own / "training_config.yaml").write_text("name: synth-cpu\n")
    (own / "selection.json").write_text('{"step": 125}')
    out = tmp_path / "out"
    args = [str(own), "--repo-id", REPO_ID, "--results", str(results_file), "--no-verify"]
    assert push.main([*args, "--dry-run", str(out)]) == 0
    assert "the checkpoint's README.md, completed" in capsys.readouterr().out
    assert set(list_files(out)) == MODEL_FILES | {"training_config.yaml", "selection.json"}
    card = ModelCard.load(out / "README.md")
    assert card.text.lstrip("\n").startswith(body)  # the author's words first, untouched
    assert card.text.count("Surrey Face Model") == 1  # their licence note is enough
    assert "## Usage from the Hub" in card.text and "## Cross-validation results" in card.text
    assert (card.data.license, card.data.license_name) == ("other", "my-licence")
    assert card.data.tags[0] == "synthetic-data" and "affectvlm" in card.data.tags
    assert (card.data.library_name, card.data.pipeline_tag) == ("transformers", "zero-shot-image-classification")
    assert len(card.data.eval_results) == 3 + 3

    assert push.main([*args, "--fresh-card", "--dry-run", str(tmp_path / "fresh")]) == 0
    fresh = ModelCard.load(tmp_path / "fresh" / "README.md")
    assert "# my demo" not in fresh.text and fresh.data.license_name == "surrey-face-model-non-commercial"


def test_push_without_results_and_with_another_licence(checkpoint, tmp_path):
    out = tmp_path / "out"
    args = [str(checkpoint), "--repo-id", REPO_ID, "--dry-run", str(out), "--no-verify",
            "--license", "apache-2.0", "--no-sfm-notice"]
    assert push.main(args) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.license_name is None
    assert card.data.eval_results is None
    assert "No cross-validation results" in card.text and "Surrey Face Model" not in card.text


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--license", "mit"], "contradicts the Surrey Face Model notice"), (["--no-sfm-notice"], "give --license")],
)
def test_push_refuses_a_card_that_contradicts_itself(checkpoint, tmp_path, capsys, flags, message):
    args = [str(checkpoint), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out"), "--no-verify", *flags]
    assert push.main(args) == 2
    assert message in capsys.readouterr().err


_LOAD_HEADER = """
import sys
sys.modules["affectvlm"] = None  # the local package cannot be imported: only the folder's files are used
try:
    import affectvlm
except ImportError:
    pass
else:
    raise SystemExit("affectvlm is importable")
"""
_LOAD_FOOTER = """
import json
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
print(json.dumps({"model": type(model).__module__, "probs": scores.probs.tolist()}))
"""


def test_resnet_checkpoint_is_published_and_loads(tmp_path, capsys):
    """The demo config (synth-cpu) uses the ResNet view backbone: that checkpoint must load from the Hub too."""
    from affectvlm import AffectVLMModel
    from affectvlm.testing import tiny_config, tiny_processor

    resnet = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}
    ckpt = tmp_path / "resnet-ckpt"
    AffectVLMModel(tiny_config(vision_backbone="resnet", resnet_config=resnet)).save_pretrained(ckpt)
    tiny_processor().save_pretrained(ckpt)
    out = tmp_path / "out"
    assert push.main([str(ckpt), "--repo-id", REPO_ID, "--dry-run", str(out)]) == 0  # with the model check
    assert "loads as transformers_modules." in capsys.readouterr().out
    text = ModelCard.load(out / "README.md").text
    assert "each embedded by a ResNet (basic blocks, depths [1, 1], 8-16 channels) on 32x32 px views" in text


def test_model_folder_loads_with_remote_code_only(model_folder, tiny, tmp_path):
    """The card's usage snippet, run from a temp cwd in a fresh process that cannot import `affectvlm`."""
    import numpy as np
    import torch
    from PIL import Image

    model, processor, _ = tiny
    snippet = re.search(r"```python\n(.*?)```", ModelCard.load(model_folder / "README.md").text, re.S).group(1)
    snippet = snippet.replace(f'"{REPO_ID}"', repr(str(model_folder)))
    rng = np.random.default_rng(0)
    views = {name: Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for name in processor.view_names}
    for name, image in views.items():
        image.save(tmp_path / f"{name}.png")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_HEADER + snippet + _LOAD_FOOTER],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])

    # The same computation with the local classes gives the same probabilities.
    with torch.no_grad():
        inputs = processor(images=[[Image.open(tmp_path / f"{n}.png") for n in processor.view_names]])
        prompts = {label: [f"a 3D scan of a face, expression: {label}."] for label in model.config.label_names}
        embeds = model.encode_prompts(prompts, tokenizer=processor.tokenizer)
        local = model.score(inputs["pixel_values"], embeds, view_mask=inputs["view_mask"]).probs
    np.testing.assert_allclose(np.array(remote["probs"]), local.numpy(), atol=1e-5)


def test_push_refuses_weights_that_do_not_fit_the_current_code(checkpoint, tmp_path, capsys):
    """push.py's model check (it passed for `model_folder`) catches a checkpoint saved by older code."""
    from safetensors.torch import load_file, save_file

    # A checkpoint from "older code": one weight renamed, so the current remote code misses it.
    bad = _copy_checkpoint(checkpoint, tmp_path / "old-ckpt")
    weights = load_file(bad / "model.safetensors")
    weights["old_margin_raw"] = weights.pop("margin_raw")
    save_file(weights, bad / "model.safetensors", metadata={"format": "pt"})
    assert push.main([str(bad), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "bad")]) == 2
    assert "do not fit the current remote code" in capsys.readouterr().err


def test_push_replaces_stale_remote_code_and_fixes_auto_map(checkpoint, tmp_path, capsys):
    stale = _copy_checkpoint(checkpoint, tmp_path / "stale")
    (stale / "modeling_affectvlm.py").write_text("# saved by older code\n")
    (stale / "configuration_affectvlm.py").unlink()
    config = json.loads((stale / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "someone/else--modeling_affectvlm.AffectVLMModel"}
    (stale / "config.json").write_text(json.dumps(config))
    (stale / "training_log.txt").write_text("not for the Hub")
    out = tmp_path / "out"
    assert push.main([str(stale), "--repo-id", REPO_ID, "--dry-run", str(out), "--no-verify"]) == 0
    printed = capsys.readouterr().out
    assert "modeling_affectvlm.py: replaced" in printed and "configuration_affectvlm.py: added" in printed
    assert "left out of the upload: training_log.txt" in printed
    assert set(list_files(out)) == MODEL_FILES
    for name in REMOTE_CODE_FILES:
        assert (out / name).read_bytes() == (PACKAGE_DIR / name).read_bytes()
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_affectvlm.AffectVLMModel"


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "training_args.bin"])
def test_push_refuses_pickle_files(checkpoint, tmp_path, capsys, pickle_name):
    ckpt = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    if pickle_name == "pytorch_model.bin":  # weights only as a pickle
        (ckpt / "model.safetensors").unlink()
    (ckpt / pickle_name).write_bytes(b"\x80\x04not really a pickle")
    out = tmp_path / "out"
    assert push.main([str(ckpt), "--repo-id", REPO_ID, "--dry-run", str(out), "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert pickle_name in err and "only safetensors are published" in err
    assert list_files(out) == []


def _broken(checkpoint: Path, tmp_path: Path, what: str) -> Path:
    ckpt = _copy_checkpoint(checkpoint, tmp_path / "ckpt")
    if what == "no-weights":
        (ckpt / "model.safetensors").unlink()
    elif what == "no-processor":
        (ckpt / "processor_config.json").unlink()
    elif what == "no-tokenizer":
        (ckpt / "tokenizer.json").unlink()
    elif what == "not-affectvlm":
        (ckpt / "config.json").write_text(json.dumps({"model_type": "clip"}))
    elif what == "bad-config":
        (ckpt / "config.json").write_text("{not json")
    return ckpt


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("missing", "checkpoint folder not found"),
        ("no-weights", "missing model.safetensors"),
        ("no-processor", "missing processor_config.json"),
        ("no-tokenizer", "missing tokenizer.json or vocab.json"),
        ("not-affectvlm", "model_type 'clip', not 'affectvlm'"),
        ("bad-config", "cannot read"),
    ],
)
def test_push_clear_errors_for_bad_checkpoints(checkpoint, tmp_path, capsys, what, message):
    ckpt = tmp_path / "nowhere" if what == "missing" else _broken(checkpoint, tmp_path, what)
    assert push.main([str(ckpt), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out"), "--no-verify"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("repo_id", ["affectvlm", "me/affect vlm", "a/b/c", "/affectvlm", "me/-bad-", "me/x--y"])
def test_bad_repo_ids_are_refused(checkpoint, tmp_path, capsys, repo_id):
    with pytest.raises(PublishError):
        check_repo_id(repo_id)
    assert push.main([str(checkpoint), "--repo-id", repo_id, "--dry-run", str(tmp_path / "o"), "--no-verify"]) == 2
    assert space.main(["--repo-id", repo_id, "--dry-run", str(tmp_path / "s")]) == 2
    assert "--repo-id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read results file"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"dataset": "x"}', "neither per-fold accuracies nor a mean accuracy"),
        ('{"folds": [{"fold": 0, "accuracy": "high"}]}', "fold 0 of the results has a non-numeric accuracy"),
    ],
)
def test_unreadable_results_are_refused_before_anything_is_written(checkpoint, tmp_path, capsys, content, message):
    results = tmp_path / "results.json"
    if content is not None:
        results.write_text(content)
    out = tmp_path / "out"
    args = [str(checkpoint), "--repo-id", REPO_ID, "--results", str(results), "--dry-run", str(out), "--no-verify"]
    assert push.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and str(results) in err
    assert list_files(out) == []


def test_dry_run_refuses_a_folder_with_files(checkpoint, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert push.main([str(checkpoint), "--repo-id", REPO_ID, "--dry-run", str(tmp_path / "out"), "--no-verify"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert list_files(tmp_path / "out") == ["keep.txt"]


# -- results.json: the lenient reader ---------------------------------------------------------------------


def test_results_reader_accepts_cross_validate_output(results_file):
    cv = load_results(results_file)
    assert (cv.dataset, cv.protocol, cv.variant) == ("SynthFER-3D", PROTOCOL, "full")
    assert [(f.fold, f.accuracy) for f in cv.folds] == [("0", 0.81), ("1", 0.79), ("2", 0.83)]
    assert (cv.mean_accuracy, cv.std_accuracy, cv.std_computed, cv.macro_f1) == (0.81, 0.02, False, 0.80)
    assert cv.per_class_f1 == CV_RESULTS["variants"]["full"]["per_class_f1"]
    four_d = parse_results({**CV_RESULTS, "task": "4d", "k": 10})
    assert four_d.protocol == "subject-independent 10-fold cross-validation (folds 0, 1, 2 run), 4D sequences (dynamic images)"


def test_results_reader_matches_what_cross_validate_summarise_writes():
    """Built with train/cross_validate.py's own summarise(), so a change of its keys shows up here."""
    cross_validate = pytest.importorskip("train.cross_validate")
    labels = ["anger", "happiness"]

    def run(index, preds, truth):
        correct = sum(p == t for p, t in zip(preds, truth)) / len(truth)
        return {"fold": {"index": index, "train": [], "val": [], "test": []}, "selected": {"step": 1},
                "test": {"accuracy": correct, "macro_f1": correct, "predictions": preds, "labels": truth}}

    runs = {"full": [run(0, [0, 1, 1, 1], [0, 1, 0, 1]), run(1, [0, 1, 0, 1], [0, 1, 0, 1])]}
    report = {"task": "3d", "k": 2, "folds_run": [0, 1], "variants": cross_validate.summarise(runs, labels)}
    cv = parse_results(json.loads(json.dumps(report)))
    assert [(f.fold, f.accuracy) for f in cv.folds] == [("0", 0.75), ("1", 1.0)]
    assert cv.mean_accuracy == pytest.approx(0.875) and cv.std_accuracy == pytest.approx(0.1767767)
    assert set(cv.per_class_f1) == set(labels) and cv.macro_f1 == pytest.approx(0.875)


def test_results_reader_accepts_a_flat_file():
    cv = parse_results(FLAT_RESULTS)
    assert (cv.dataset, cv.protocol, cv.variant) == ("SynthFER-3D", FLAT_RESULTS["protocol"], None)
    assert [f.accuracy for f in cv.folds] == [0.81, 0.79, 0.83]
    assert (cv.mean_accuracy, cv.std_accuracy, cv.std_computed) == (0.81, 0.0163, False)
    assert cv.per_class_f1 == {"anger": 0.65, "happiness": 0.93}
    assert cv.macro_f1 == pytest.approx(0.80)


def test_results_reader_is_lenient_about_shape_and_missing_keys():
    cv = parse_results(
        {
            "dataset": {"name": "BU-3DFE"},
            "protocol": {"k": 2, "subjects": 60},
            # subject lists under "folds" are not results; the results are under "per_fold", nested, in %
            "folds": [["F0001", "F0002"], ["M0001"]],
            "per_fold": [
                {"fold": "a", "test": {"accuracy": 80.0, "per_class_f1": {"anger": 70.0}}},
                {"fold": "b", "test": {"accuracy": 90.0, "per_class_f1": {"anger": 90.0}}},
            ],
        }
    )
    assert (cv.dataset, cv.protocol) == ("BU-3DFE", "k=2, subjects=60")
    assert [(f.fold, f.accuracy) for f in cv.folds] == [("a", 0.8), ("b", 0.9)]
    assert cv.mean_accuracy == pytest.approx(0.85)
    assert cv.std_accuracy == pytest.approx(0.0707107) and cv.std_computed  # sample std of the folds
    assert cv.per_class_f1 == {"anger": pytest.approx(0.8)}

    summary_only = parse_results({"accuracy": {"mean": 0.7, "std": 0.1}})
    assert (summary_only.mean_accuracy, summary_only.std_accuracy, summary_only.folds) == (0.7, 0.1, [])
    assert summary_only.dataset == "unknown dataset"

    # train/train.py's results.json of one run: one fold, its index from the Fold dict, metrics under "test"
    run = parse_results({"name": "tiny", "fold": {"index": 3, "train": ["a"], "val": [], "test": ["b"]},
                         "test": {"accuracy": 0.5, "macro_f1": 0.4, "per_class_f1": {"anger": 0.4}}})
    assert [(f.fold, f.accuracy) for f in run.folds] == [("3", 0.5)]
    assert (run.mean_accuracy, run.std_accuracy, run.macro_f1) == (0.5, 0.0, 0.4)
    assert run.protocol == "subject-independent train/test split (one fold)"

    # percent throughout: a std below 1 is still percent
    percent = parse_results({"accuracy_per_fold": [80, 82], "accuracy_mean": 81, "accuracy_std": 0.8, "macro_f1": 79})
    assert (percent.mean_accuracy, percent.std_accuracy, percent.macro_f1) == pytest.approx((0.81, 0.008, 0.79))


# -- space.py: the Space folder ---------------------------------------------------------------------------


def _package_sources() -> set[str]:
    return {
        "affectvlm/" + p.relative_to(PACKAGE_DIR).as_posix()
        for p in PACKAGE_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and "tests" not in p.relative_to(PACKAGE_DIR).parts
    }


def _example_files(ict_only: bool = False) -> list[Path]:
    """The app's example inputs in the repo's examples/ (the `*_ict_*` ones derive from the ICT FaceKit, MIT)."""
    files = sorted(p for p in (REPO_ROOT / "examples").iterdir() if p.suffix in (".png", ".ply", ".zip"))
    return [p for p in files if "_ict_" in p.name] if ict_only else files


def _front_matter(readme: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", readme, re.S)
    assert match, "README.md has no YAML front matter"
    return yaml.safe_load(match.group(1))


def _requirement_names(requirements: str) -> set[str]:
    return {space._dist_name(line) for line in requirements.splitlines() if line.strip() and not line.startswith("#")}


def test_space_dry_run_folder_file_by_file(checkpoint, tmp_path):
    out = tmp_path / "space"
    assert space.main(["--repo-id", "me/affectvlm", "--model-dir", str(checkpoint), "--dry-run", str(out)]) == 0
    bundled = f"checkpoints/{checkpoint.name}/"  # under its own name: the app shows that name
    expected_checkpoint = {bundled + name for name in MODEL_FILES - {"README.md"}}  # the tiny model has no card
    # its card names no licence: space.yaml's (the Surrey Face Model's) holds, and so all the examples come
    examples = {f"examples/{p.name}" for p in _example_files()}
    assert set(list_files(out)) == (
        {"README.md", "app.py", "requirements.txt"} | _package_sources() | expected_checkpoint | examples
    )

    assert (out / "app.py").read_bytes() == (REPO_ROOT / "app.py").read_bytes()
    for rel in _package_sources():
        assert (out / rel).read_bytes() == (REPO_ROOT / rel).read_bytes(), rel
    for name in ("model.safetensors", "tokenizer.json", "processor_config.json"):
        assert (out / bundled / name).read_bytes() == (checkpoint / name).read_bytes()

    # README: space.yaml exactly, as front matter the Hub reads (python_version must stay a string)
    settings = yaml.safe_load((REPO_ROOT / "space.yaml").read_text())
    readme = (out / "README.md").read_text()
    assert _front_matter(readme) == settings
    card = SpaceCard.load(out / "README.md")
    assert (card.data.sdk, card.data.python_version, card.data.app_file) == ("gradio", "3.11", "app.py")
    assert f"bundled in `checkpoints/{checkpoint.name}`" in readme and "non-commercial" in readme
    assert f"AFFECTVLM_MODEL={checkpoint.name} python app.py" in readme

    # requirements: runtime only, gradio pinned to the SDK version the Space runs
    requirements = (out / "requirements.txt").read_text()
    names = _requirement_names(requirements)
    assert not names & {"pytest", "ruff", "playwright", "accelerate"}
    assert "-e" not in requirements and "affectvlm" not in names
    assert f"gradio=={settings['sdk_version']}" in requirements.splitlines()
    assert "torch==2.13.0" in requirements.splitlines()


def test_space_requirements_cover_every_import_of_the_space(tmp_path):
    """Every third-party module the Space's Python files import is installed by its requirements.txt."""
    out = tmp_path / "space"
    assert space.main(["--repo-id", "me/affectvlm", "--dry-run", str(out)]) == 0
    dist_of = {"PIL": "pillow", "yaml": "pyyaml", "huggingface_hub": "huggingface_hub"}
    imported = set()
    for rel in list_files(out):
        if rel.endswith(".py"):
            for node in ast.walk(ast.parse((out / rel).read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "affectvlm"}
    needed = {space._dist_name(dist_of.get(m, m)) for m in third_party}
    assert needed <= _requirement_names((out / "requirements.txt").read_text())


def test_space_without_a_checkpoint_says_it_runs_a_random_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(space, "DEMO_CHECKPOINT", tmp_path / "no-checkpoint")
    out = tmp_path / "space"
    assert space.main(["--repo-id", "me/affectvlm", "--dry-run", str(out)]) == 0
    assert "random model" in capsys.readouterr().out
    assert not (out / "checkpoints").exists()
    assert "random, untrained" in (out / "README.md").read_text()
    assert space.main(["--repo-id", "me/affectvlm", "--model-dir", str(tmp_path / "nope"),
                       "--dry-run", str(tmp_path / "s2")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace('python_version: "3.11"', "python_version: 3.10"), "python_version must be a quoted"),
        (lambda s: s.replace("sdk: gradio", "sdk: docker"), "this app is a gradio Space"),
        (lambda s: s.replace("app_file: app.py", "app_file: nope.py"), "does not exist"),
        (lambda s: s.replace("sdk_version:", "# sdk_version:"), "lacks sdk_version"),
        (lambda s: "title: [unclosed", "not valid YAML"),
    ],
)
def test_space_yaml_is_checked(tmp_path, capsys, edit, message):
    settings = tmp_path / "space.yaml"
    settings.write_text(edit((REPO_ROOT / "space.yaml").read_text()))
    assert space.main(["--repo-id", "me/a", "--space-yaml", str(settings), "--dry-run", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_help_of_both_scripts_run_as_files():
    for script, needed in (("push.py", ["--dry-run", "--results", "trust_remote_code"]),
                           ("space.py", ["--dry-run", "space.yaml", "requirements.txt"]),
                           ("card.py", ["RESULTS_JSON", "--variant", "hub/push.py"])):
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "hub" / script), "--help"],
                              capture_output=True, text=True, timeout=60, cwd="/")
        assert proc.returncode == 0, proc.stderr
        text = " ".join(proc.stdout.split())
        assert all(n in text for n in needed), text


def test_card_script_previews_the_results_section_or_says_what_is_wrong(results_file, tmp_path):
    script = [sys.executable, str(REPO_ROOT / "hub" / "card.py")]
    proc = subprocess.run([*script, str(results_file)], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("## Evaluation") and "**Mean accuracy: 81.00 ± 2.00**" in proc.stdout
    proc = subprocess.run([*script, str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [(f"card.py: error: cannot read results file {tmp_path / 'nope.json'}: "
                                        "No such file or directory")]


@pytest.mark.parametrize("script", ["push", "space"])
@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("afile/sub", "cannot create the --dry-run folder {out}: {tmp}/afile is a file, not a folder"),
        ("afile", "--dry-run {out} is a file, not a folder: give a new or empty folder"),
        ("full", "--dry-run folder {out} exists and is not empty: give a new or empty folder"),
        ("/proc/nope", "cannot create the --dry-run folder /proc/nope: No such file or directory"),
    ],
)
def test_an_unusable_dry_run_folder_is_one_clear_line(checkpoint, tmp_path, capsys, script, where, message):
    if where.startswith("/proc") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no folder can be made")
    (tmp_path / "afile").write_text("a file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    out = tmp_path / where
    args = ["--repo-id", REPO_ID, "--dry-run", str(out)]
    main = push.main if script == "push" else space.main
    assert main([str(checkpoint), *args, "--no-verify"] if script == "push" else args) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{script}.py: error: " + message.format(out=out, tmp=tmp_path)]


def _offline_message(script: str) -> str:
    return f"{script}.py: error: HF_HUB_OFFLINE is set: nothing was pushed; use --dry-run DIR to write the files locally"


@pytest.mark.parametrize("script", ["push", "space"])
def test_a_push_while_offline_is_one_clear_line(checkpoint, capsys, script):
    from huggingface_hub import constants

    assert constants.is_offline_mode()  # conftest sets HF_HUB_OFFLINE=1, and the default client refuses
    args = ["--repo-id", REPO_ID, "--model-dir", str(checkpoint)]
    assert (push.main([str(checkpoint), "--repo-id", REPO_ID, "--no-verify"]) if script == "push"
            else space.main(args)) == 2
    assert capsys.readouterr().err.splitlines() == [_offline_message(script)]


def test_a_push_with_no_network_is_one_clear_line(checkpoint, capsys):
    def unreachable(request):
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(unreachable)))
    try:
        assert push.main([str(checkpoint), "--repo-id", REPO_ID, "--no-verify"]) == 2
    finally:
        set_client_factory(default_client_factory)
        close_session()
    assert capsys.readouterr().err.splitlines() == [
        ("push.py: error: the Hub cannot be reached (ConnectError: [Errno -3] Temporary failure in name "
        "resolution): nothing was pushed; use --dry-run DIR to write the files locally")
    ]


def test_a_push_while_offline_from_the_command_line_has_no_traceback(checkpoint):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "hub" / "push.py"), str(checkpoint), "--repo-id", REPO_ID, "--no-verify"],
        capture_output=True, text=True, timeout=300, cwd="/", env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [_offline_message("push")]


SHIPPED = REPO_ROOT / "checkpoints"


@pytest.mark.skipif(not (SHIPPED / "affectvlm-ict" / "README.md").is_file(), reason="no checkpoints/affectvlm-ict")
def test_space_of_the_mit_model_keeps_its_name_card_licence_and_ict_examples(tmp_path, capsys):
    out = tmp_path / "space"
    assert space.main(["--repo-id", "me/s", "--model-dir", str(SHIPPED / "affectvlm-ict"), "--dry-run", str(out)]) == 0
    assert "run it there with: AFFECTVLM_MODEL=affectvlm-ict python app.py" in capsys.readouterr().out
    files = list_files(out)
    assert not any(f.startswith("checkpoints/affectvlm-cpu/") for f in files)
    assert (out / "checkpoints/affectvlm-ict/README.md").read_bytes() == (SHIPPED / "affectvlm-ict/README.md").read_bytes()
    examples = [f for f in files if f.startswith("examples/")]
    assert examples == [f"examples/{p.name}" for p in _example_files(ict_only=True)] and examples

    readme = (out / "README.md").read_text()
    front = _front_matter(readme)
    settings = yaml.safe_load((REPO_ROOT / "space.yaml").read_text())
    assert front["license"] == "mit" and "license_name" not in front and "license_link" not in front
    assert {k: v for k, v in front.items() if k != "license"} == {
        k: v for k, v in settings.items() if k not in ("license", "license_name", "license_link")
    }
    assert "The model `affectvlm-ict` is under `mit`" in readme and "ICT FaceKit (MIT)" in readme
    assert "non-commercial use only" not in readme and "surrey-face-model" not in readme
    assert "AFFECTVLM_MODEL=affectvlm-ict python app.py" in readme
    assert f"{len(examples)} files in `examples/`" in readme


@pytest.mark.skipif(not (SHIPPED / "affectvlm-cpu" / "README.md").is_file(), reason="no checkpoints/affectvlm-cpu")
def test_space_of_the_default_model_is_non_commercial_with_all_examples(tmp_path):
    out = tmp_path / "space"
    report = space.build_space_folder(space.prepare_output_dir(out))
    assert report["model"] == "affectvlm-cpu"
    assert (out / "checkpoints/affectvlm-cpu/README.md").is_file()
    assert report["examples"] == [f"examples/{p.name}" for p in _example_files()]
    readme = (out / "README.md").read_text()
    assert _front_matter(readme) == yaml.safe_load((REPO_ROOT / "space.yaml").read_text())
    assert "free for non-commercial use only" in readme and "the other 7 from the Surrey Face Model" in readme


def test_space_with_no_allowed_examples_says_it_has_none(tmp_path, monkeypatch, checkpoint):
    folder = tmp_path / "mit-model"
    shutil.copytree(checkpoint, folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# mit-model\n")
    monkeypatch.setattr(space, "EXAMPLES_DIR", tmp_path / "no-examples")
    report = space.build_space_folder(tmp_path / "space", model_dir=folder)
    assert report["examples"] == [] and not (tmp_path / "space" / "examples").exists()
    assert "none are bundled, so the app shows no example rows" in (tmp_path / "space" / "README.md").read_text()


# The app's own start-up, in a Space folder, up to its model note and example rows (no server, no warm-up).
_APP_PROBE = """
import json, sys
from affectvlm.predictor import AffectVLMPredictor
AffectVLMPredictor.warm_up = lambda self: None  # encodes prompts for speed only: not what is checked
import affectvlm, app
print(json.dumps({"package": affectvlm.__file__, "note": app.MODEL_NOTE, "source": app.PREDICTOR.source,
                  "scans": app._examples("scan_*.ply"), "views": app._examples("views_*.png"),
                  "sequences": app._examples("sequence_*.zip")}))
"""


@pytest.mark.skipif(not (SHIPPED / "affectvlm-ict" / "README.md").is_file(), reason="no checkpoints/affectvlm-ict")
def test_the_app_in_the_space_folder_names_the_bundled_model_and_its_licence(tmp_path):
    out = tmp_path / "space"
    report = space.build_space_folder(space.prepare_output_dir(out), model_dir=SHIPPED / "affectvlm-ict")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AFFECTVLM_MODEL=report["model"], HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # as the Space sets it
    proc = subprocess.run([sys.executable, "-c", _APP_PROBE], cwd=out, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(seen["package"]).is_relative_to(out)  # the Space's own copy of the package
    assert Path(seen["source"]) == out / "checkpoints" / "affectvlm-ict"
    card = yaml.safe_load((SHIPPED / "affectvlm-ict" / "README.md").read_text().split("---")[1])
    assert seen["note"] == f"**Model:** `affectvlm-ict`. {card['summary']} **Licence:** mit."
    for kind in ("scans", "views", "sequences"):
        assert seen[kind] and all(Path(p).is_relative_to(out / "examples") and "_ict_" in p for p in seen[kind])


def test_docs_list_the_space_requirements_as_generated():
    """docs/hub.md names every requirement the Space's requirements.txt has, and no other (no pandas: the app
    does not import it; gradio brings it)."""
    doc = (REPO_ROOT / "docs" / "hub.md").read_text()
    paragraph = doc[doc.index("The Space's `requirements.txt` is"):]
    listed = paragraph[: paragraph.index("**`gradio==<sdk_version>`**")]
    names = _requirement_names(space.space_requirements(space.load_space_settings())) - {"gradio"}
    documented = {space._dist_name(n) for n in re.findall(r"`?([A-Za-z][\w.*-]*)`?", listed)}
    for name in names:
        pattern = re.sub(r"_\d+$", "_*", name)  # the five mpnet parts are named once, with a *
        assert name in documented or pattern in documented, name
    assert "pandas" not in names and "pandas" not in listed
    app_imports = {a.name for n in ast.walk(ast.parse((REPO_ROOT / "app.py").read_text()))
                   if isinstance(n, ast.Import) for a in n.names}
    assert "pandas" not in app_imports


# -- uploads, against the fake Hub ------------------------------------------------------------------------


def test_push_sends_one_commit_with_the_dry_run_folder(fake_hub, checkpoint, results_file, tmp_path):
    dry = tmp_path / "dry"
    base = [str(checkpoint), "--repo-id", REPO_ID, "--results", str(results_file), "--no-verify"]
    assert push.main([*base, "--dry-run", str(dry)]) == 0
    assert fake_hub.commits == [] and fake_hub.repos == {}  # a dry run sends nothing

    assert push.main([*base, "--private"]) == 0
    assert fake_hub.repos["model", REPO_ID]["visibility"] == "private"
    [commit] = fake_hub.commits
    assert (commit["repo_type"], commit["repo_id"], commit["revision"]) == ("model", REPO_ID, "main")
    assert commit["summary"] == f"Upload AffectVLM checkpoint {checkpoint.name}"
    assert sorted(commit["files"]) == list_files(dry)
    for name, content in commit["files"].items():
        assert content == (dry / name).read_bytes(), name
    assert fake_hub.validated == [("model", (dry / "README.md").read_text())]

    # Again into the existing repo (create_repo answers 409): one more complete commit.
    assert push.main([*base, "--commit-message", "Retrain"]) == 0
    assert [c["summary"] for c in fake_hub.commits] == [commit["summary"], "Retrain"]
    assert sorted(fake_hub.commits[1]["files"]) == list_files(dry)
    assert fake_hub.unexpected == []
    assert fake_hub.tokens == {"Bearer hf_fake_token_for_tests"}


def test_space_sends_one_commit_to_a_gradio_space(fake_hub, checkpoint, tmp_path):
    dry = tmp_path / "dry"
    base = ["--repo-id", "me/affectvlm", "--model-dir", str(checkpoint)]
    assert space.main([*base, "--dry-run", str(dry)]) == 0
    assert space.main(base) == 0
    create = fake_hub.repos["space", "me/affectvlm"]
    assert create["sdk"] == "gradio" and "visibility" not in create  # public unless --private
    [commit] = fake_hub.commits
    assert (commit["repo_type"], commit["summary"]) == ("space", "Update the AffectVLM Space")
    assert sorted(commit["files"]) == list_files(dry)
    for name, content in commit["files"].items():
        assert content == (dry / name).read_bytes(), name
    assert fake_hub.validated[0][0] == "space"
    # the app serves the bundled folder because the Space variable names it; set before the commit
    assert fake_hub.variables["me/affectvlm"] == {"AFFECTVLM_MODEL": checkpoint.name}
    assert fake_hub.requests.index("POST /api/spaces/me/affectvlm/variables") < next(
        i for i, r in enumerate(fake_hub.requests) if r.endswith("/commit/main")
    )
    assert fake_hub.unexpected == []


def test_space_without_a_model_removes_the_model_variable(fake_hub, checkpoint, tmp_path, monkeypatch):
    assert space.main(["--repo-id", "me/affectvlm", "--model-dir", str(checkpoint)]) == 0
    monkeypatch.setattr(space, "DEMO_CHECKPOINT", tmp_path / "no-checkpoint")
    assert space.main(["--repo-id", "me/affectvlm"]) == 0  # the random model: a stale name would not load
    assert fake_hub.variables["me/affectvlm"] == {}
    assert len(fake_hub.commits) == 2 and fake_hub.unexpected == []


def test_upload_errors_from_the_hub_are_reported(fake_hub, checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(fake_hub, "_create", lambda body: httpx2.Response(403, json={"error": "no write access"}))
    assert push.main([str(checkpoint), "--repo-id", "someone/else", "--no-verify"]) == 1
    assert "the Hub refused the upload" in capsys.readouterr().err
    assert fake_hub.commits == [] and fake_hub.unexpected == []


# -- slow: the Space starts in a fresh virtual environment ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
def test_space_starts_in_a_fresh_venv_from_its_own_requirements(tmp_path, tiny, sfm_dir):
    """Build the Space's dry-run folder, install its requirements.txt into a new venv, run `python app.py`.

    The demo checkpoint is bundled if the repo has one; otherwise the tiny test checkpoint is, so the
    bundled-checkpoint path of the app is what starts either way.
    """
    model_dir = None if (space.DEMO_CHECKPOINT / "config.json").is_file() else tiny[2]
    report = space.build_space_folder(space.prepare_output_dir(tmp_path / "space"), model_dir=model_dir)
    folder = tmp_path / "space"
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, 300)
    # torch first: 2.13.0 is the local CPU wheel here; anything else would download the CUDA build.
    _run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], tmp_path, 900)
    _run([str(python), "-m", "pip", "install", "-q", "-r", "requirements.txt"], folder, 1800)

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False",
        AFFECTVLM_SFM_DIR=str(sfm_dir), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1",
        XDG_CACHE_HOME=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"),
        AFFECTVLM_MODEL=report["model"],  # as the Space variable the upload sets
    )
    with open(tmp_path / "app.log", "w") as log:
        app = subprocess.Popen([str(python), "app.py"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, config = time.monotonic() + 600, None
        while time.monotonic() < deadline and app.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/config", timeout=5) as response:
                    config = json.loads(response.read())
                break
            except OSError:
                time.sleep(2)
        assert config is not None, f"the app did not serve on {url}:\n{(tmp_path / 'app.log').read_text()[-4000:]}"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        api_names = {d.get("api_name") for d in config.get("dependencies", [])}
        assert {"predict_views", "predict_scan", "predict_sequence"} <= api_names, api_names
        assert app.poll() is None
    finally:
        app.terminate()
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
