"""What `push.py` and `space.py` share: repo-id checks, copying a checkpoint and the remote code, the upload.

Nothing here imports torch, transformers or `affectvlm`: assembling a folder is file work, so `--help` and
`--dry-run` stay fast and the scripts never run the model code they publish (the model check in `push.py`
runs it in a separate process, from the assembled folder only).
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO_ROOT / "affectvlm"

# The Hub remote code: `AutoModel.from_pretrained(..., trust_remote_code=True)` imports these from the repo,
# and `pipeline(model=repo, trust_remote_code=True)` the pipeline named by config.json's `custom_pipelines`.
REMOTE_CODE_FILES = (
    "configuration_affectvlm.py",
    "modeling_affectvlm.py",
    "processing_affectvlm.py",
    "pipeline_affectvlm.py",
)
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_affectvlm.AffectVLMConfig",
    "AutoModel": "modeling_affectvlm.AffectVLMModel",
}
# As `AffectVLMConfig` writes it (configuration_affectvlm.CUSTOM_PIPELINES; tests/test_pipeline.py checks
# that the two agree): set here too for checkpoints saved before the pipeline existed.
CUSTOM_PIPELINES = {
    "zero-shot-image-classification": {"impl": "pipeline_affectvlm.AffectVLMPipeline", "pt": ["AutoModel"]}
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_affectvlm.AffectVLMProcessor"}
# Absolute imports the remote code may use: whoever loads it has transformers (and so torch and numpy)
# installed, nothing more.
REMOTE_CODE_IMPORTS = {"torch", "transformers", "numpy"}

# Pickle-based weight formats run arbitrary code when loaded: only safetensors are ever published.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# The files of a `model.save_pretrained(folder)` + `processor.save_pretrained(folder)` checkpoint that
# belong on the Hub (besides the weights, `*.safetensors`), plus the two records train/ leaves beside a
# model it selected (the resolved run config and which step was kept), which make it reproducible. Anything
# else (logs, optimizer state) stays local. README.md is not copied: push.py writes the card.
CHECKPOINT_FILES = (
    "training_config.yaml",
    "selection.json",
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")
# Beside the weights, not weights: the text encoder's features of the default prompts, and the face distance's fit.
# As `affectvlm.prompt_features.FILENAME` and `affectvlm.face_distance.FILENAME` name them (not imported: see
# above); tests/test_prompt_features.py and tests/test_face_distance.py check.
PROMPT_FEATURES = "prompt_features.safetensors"
FACE_DISTANCE = "face_distance.safetensors"
# A second model that reads the same scans as normal maps, in the subfolder its settings name (as
# `affectvlm.companion.FILENAME` names them; tests/test_companion.py checks): published with the checkpoint.
COMPANION = "companion.json"


class PublishError(Exception):
    """A problem with what the user gave (paths, repo id, results), worded for the command line."""


def check_repo_id(repo_id: str) -> str:
    """`USER/NAME` or `ORG/NAME`, valid on the Hub; raises PublishError otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    # The Hub would accept a bare NAME (it means "under my account"), but the scripts print and link the
    # repo, so the namespace must be explicit.
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id must look like USER/NAME or ORG/NAME, got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise PublishError(f"--repo-id {repo_id!r} is not a valid Hub repo id: {err}") from None
    return repo_id


def prepare_output_dir(path: Path) -> Path:
    """The `--dry-run` folder: created if missing; refused if it already holds files (never mix two runs), if
    it is a file, or if it cannot be created (a parent that is a file, no such place, no permission)."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise PublishError(f"--dry-run {path} is a file, not a folder: give a new or empty folder")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise PublishError(f"cannot create the --dry-run folder {path}: {blocker} is a file, not a folder")
        if path.is_dir() and any(path.iterdir()):
            raise PublishError(f"--dry-run folder {path} exists and is not empty: give a new or empty folder")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PublishError(f"cannot create the --dry-run folder {path}: {err.strerror or err}") from None
    return path


def list_files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted POSIX paths relative to it (what an upload would send)."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PublishError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise PublishError(f"{path} is not a JSON object")
    return data


def check_checkpoint(checkpoint: Path) -> dict:
    """Check a saved AffectVLM checkpoint folder before anything is copied; returns its config.json."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise PublishError(f"checkpoint folder not found: {checkpoint}")
    names = {p.name for p in checkpoint.iterdir() if p.is_file()}
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise PublishError(
            f"{checkpoint} holds pickle files ({', '.join(pickles)}): only safetensors are published, because "
            "loading a pickle runs arbitrary code. Re-save with `model.save_pretrained(folder)` (transformers 5 "
            "writes safetensors) into a clean folder."
        )
    missing = [n for n in ("config.json", "processor_config.json") if n not in names]
    if not any(n in names for n in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    # beside the weights, not weights: the text encoder's features of the default prompts, the face distance
    if not any(n.endswith(".safetensors") and n not in (PROMPT_FEATURES, FACE_DISTANCE) for n in names):
        missing.append("model.safetensors")
    if missing:
        raise PublishError(
            f"{checkpoint} is not a complete AffectVLM checkpoint: missing {', '.join(missing)} "
            "(save both `model.save_pretrained(folder)` and `processor.save_pretrained(folder)` there)"
        )
    config = _read_json(checkpoint / "config.json")
    if config.get("model_type") != "affectvlm":
        raise PublishError(
            f"{checkpoint / 'config.json'} has model_type {config.get('model_type')!r}, not 'affectvlm'"
        )
    if "model.safetensors.index.json" in names:
        index = _read_json(checkpoint / "model.safetensors.index.json")
        shards = sorted(set(index.get("weight_map", {}).values()) - names)
        if shards:
            raise PublishError(f"{checkpoint} is missing weight shards named in its index: {', '.join(shards)}")
    return config


def _with_remote_code(path: Path, auto_map: dict[str, str], custom_pipelines: dict | None = None) -> None:
    """Make sure `path` (a copied JSON config) points the Auto classes (and the pipeline) at the remote code."""
    data = _read_json(path)
    current = data.get("auto_map") or {}
    # A config saved from a model that was itself loaded from a Hub repo can carry "owner/repo--module.Class"
    # entries that point at that other repo: always point at the files shipped next to it.
    wanted = {"auto_map": {**current, **auto_map}}
    if custom_pipelines is not None:  # replaced, not merged: with two tasks `pipeline()` cannot pick one
        wanted["custom_pipelines"] = custom_pipelines
    if all(data.get(key) == value for key, value in wanted.items()):
        return
    data.update(wanted)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_checkpoint(checkpoint: Path, out: Path) -> list[str]:
    """Copy the publishable files of `checkpoint` into `out`; returns the names of the files left out."""
    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    companion = _companion_folder(checkpoint)
    left_out = []
    for src in sorted(checkpoint.iterdir()):
        if not src.is_file():
            if src.name == companion:
                _copy_weights_and_records(src, out / src.name)
            else:
                left_out.append(src.name + "/")
        elif src.name in CHECKPOINT_FILES or src.name.endswith(".safetensors") or src.name == COMPANION:
            shutil.copy2(src, out / src.name)
        elif src.name not in REMOTE_CODE_FILES:  # the remote code is copied by copy_remote_code
            left_out.append(src.name)
    _point_at_remote_code(out)
    return left_out


def _companion_folder(checkpoint: Path) -> str | None:
    """The subfolder a checkpoint's companion settings name, if it has them and it exists."""
    if not (checkpoint / COMPANION).is_file():
        return None
    folder = str(_read_json(checkpoint / COMPANION).get("folder") or "")
    return folder if folder and (checkpoint / folder).is_dir() else None


def _copy_weights_and_records(src: Path, out: Path) -> None:
    """A companion's publishable files (it is loaded by the affectvlm package, never as remote code)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.is_file() and (path.name in CHECKPOINT_FILES or path.name.endswith(".safetensors")):
            shutil.copy2(path, out / path.name)


def _point_at_remote_code(folder: Path) -> None:
    _with_remote_code(folder / "config.json", CONFIG_AUTO_MAP, CUSTOM_PIPELINES)
    _with_remote_code(folder / "processor_config.json", PROCESSOR_AUTO_MAP)


def _optional_imports(tree: ast.AST) -> set[ast.AST]:
    """Import statements inside a `try:` that catches ImportError: optional, the code runs without them
    (transformers' own check of remote code skips imports in `try:` blocks too)."""

    def catches_import_error(handler: ast.ExceptHandler) -> bool:
        types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        return any(isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError") for t in types)

    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(catches_import_error(h) for h in node.handlers):
            for statement in node.body:
                optional.update(n for n in ast.walk(statement) if isinstance(n, ast.Import | ast.ImportFrom))
    return optional


def check_remote_code(path: Path) -> None:
    """The remote code may import only torch/transformers/numpy, the standard library and its siblings
    (anything else only optionally: inside a `try:` that catches ImportError)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    optional = _optional_imports(tree)
    for node in ast.walk(tree):
        if node in optional:
            continue
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        for root in roots:
            if root not in REMOTE_CODE_IMPORTS and root not in sys.stdlib_module_names:
                raise PublishError(
                    f"{path.name} line {node.lineno} imports {root!r}: Hub remote code may import only "
                    f"{', '.join(sorted(REMOTE_CODE_IMPORTS))}, the standard library and its sibling files "
                    "(anything else only inside a `try:` that catches ImportError)"
                )


def copy_remote_code(checkpoint: Path, out: Path) -> dict[str, str]:
    """Copy the current remote-code files from `affectvlm/` into `out`.

    Returns file name -> what happened: "added" (the checkpoint had none), "unchanged", or "replaced" (the
    checkpoint's copy was stale: it was saved by older code). The current code is what the Hub serves
    from now on, so `push.py` then loads the folder with it to prove the weights still fit.
    """
    report = {}
    for name in REMOTE_CODE_FILES:
        source = PACKAGE_DIR / name
        check_remote_code(source)
        old = Path(checkpoint) / name
        if not old.is_file():
            report[name] = "added"
        elif old.read_bytes() == source.read_bytes():
            report[name] = "unchanged"
        else:
            report[name] = "replaced"
        shutil.copy2(source, Path(out) / name)
    return report


def refresh_remote_code(checkpoint: Path) -> dict[str, str]:
    """Bring a checkpoint folder's remote code up to date in place (weights untouched): the current files
    from `affectvlm/`, and config.json / processor_config.json pointing at them (`auto_map`,
    `custom_pipelines`). Returns `copy_remote_code`'s report.

        python -c "from hub.common import refresh_remote_code; print(refresh_remote_code('checkpoints/affectvlm-cpu'))"
    """
    checkpoint = Path(checkpoint)
    check_checkpoint(checkpoint)
    report = copy_remote_code(checkpoint, checkpoint)
    _point_at_remote_code(checkpoint)
    return report


# Why nothing was uploaded when the Hub cannot be reached, and what works without it.
NOT_PUSHED = "nothing was pushed; use --dry-run DIR to write the files locally"


def upload(
    folder: Path,
    repo_id: str,
    *,
    repo_type: str,
    commit_message: str,
    private: bool = False,
    space_sdk: str | None = None,
    space_variables: dict[str, str | None] | None = None,
    token: str | None = None,
):
    """Create the repo if needed, set the Space's variables (None: remove it), then upload `folder` as one
    commit; returns the `CommitInfo`. Raises PublishError, naming the cause, when the Hub cannot be reached
    (HF_HUB_OFFLINE set, no network); the Hub's own refusals (HfHubHTTPError) are left to the caller."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    api = HfApi(token=token)
    try:
        # private=None keeps the namespace's default visibility (an organisation may default to private).
        api.create_repo(
            repo_id, repo_type=repo_type, private=True if private else None, exist_ok=True, space_sdk=space_sdk
        )
        # Before the commit, so that the build the commit starts already runs with them.
        for key, value in (space_variables or {}).items():
            if value is not None:
                api.add_space_variable(repo_id, key, value)
            elif key in api.get_space_variables(repo_id):
                api.delete_space_variable(repo_id, key)
        return api.upload_folder(
            repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message=commit_message
        )
    except OfflineModeIsEnabled:
        raise PublishError(f"HF_HUB_OFFLINE is set: {NOT_PUSHED}") from None
    except _transport_errors() as err:  # no network, DNS, timeouts: the request never got an answer
        raise PublishError(f"the Hub cannot be reached ({type(err).__name__}: {err}): {NOT_PUSHED}") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's "no answer" errors: huggingface_hub 2 talks through httpx2, 1.x through httpx."""
    errors = []
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors) or (ConnectionError,)
