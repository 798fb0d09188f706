"""Publish the demo app as a Hugging Face Space (Gradio SDK), in one commit.

    python hub/space.py --repo-id USER/NAME --dry-run /tmp/space-folder
    python hub/space.py --repo-id USER/NAME

The Hub reads a Space's settings only from the YAML front matter of its README.md; this repo keeps them
in `space.yaml`, and this script stamps them into the README it writes. The Space folder holds:

    README.md                          space.yaml as front matter (licence: the bundled model's) + a description
    app.py                             the Gradio app
    requirements.txt                   the repo's requirements.txt (run time only), gradio pinned, no `-e .`
    affectvlm/**.py                    the package, Python sources only (no tests, no caches)
    checkpoints/NAME/                  the model (default: the repo's default model, if present), with its card
    examples/                          the app's example inputs whose licence the Space's allows

The app serves `checkpoints/NAME` because the Space variable AFFECTVLM_MODEL=NAME says so (set on upload;
locally: `AFFECTVLM_MODEL=NAME python app.py`): the folder keeps its name, so the app names the model it serves
and shows its card's summary and licence.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as `python hub/space.py`: make the `hub` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.predictor import DEFAULT_MODEL  # noqa: E402
from hub.card import SFM_LICENSE_NAME  # noqa: E402
from hub.common import (  # noqa: E402
    PACKAGE_DIR,
    REPO_ROOT,
    PublishError,
    check_repo_id,
    copy_checkpoint,
    copy_remote_code,
    list_files,
    prepare_output_dir,
    upload,
)

SPACE_YAML = REPO_ROOT / "space.yaml"
# The model bundled when --model-dir is not given (affectvlm.predictor.DEMO_CHECKPOINT).
DEMO_CHECKPOINT = REPO_ROOT / "checkpoints" / DEFAULT_MODEL
# The app serves the model this environment variable names (a folder name under checkpoints/, or a Hub id).
MODEL_VARIABLE = "AFFECTVLM_MODEL"
LICENCE_KEYS = ("license", "license_name", "license_link")
# The app's example inputs (app.py's EXAMPLES: views_*.png, scan_*.ply, sequence_*.zip). Per examples/README.md
# the `*_ict_*` files derive from the ICT FaceKit (MIT), all others from the Surrey Face Model (non-commercial).
EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLE_SUFFIXES = (".png", ".ply", ".zip")
ICT_EXAMPLE = "*_ict_*"

REQUIRED_SETTINGS = ("title", "sdk", "sdk_version", "python_version", "app_file")


def _dist_name(requirement: str) -> str:
    """'transformers>=5.23,<6' -> 'transformers' (normalised as pip compares names: case, '-', '_', '.')."""
    return re.sub(r"[-_.]+", "_", re.split(r"[\s<>=!~;\[@]", requirement.strip(), maxsplit=1)[0]).lower()


def load_space_settings(path: Path = SPACE_YAML) -> dict:
    """space.yaml -> the front-matter settings, checked the way the Hub would read them."""
    import yaml

    try:
        settings = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise PublishError(f"cannot read the Space settings {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise PublishError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(settings, dict):
        raise PublishError(f"{path} must be a YAML mapping of Space settings")
    missing = [key for key in REQUIRED_SETTINGS if key not in settings]
    if missing:
        raise PublishError(f"{path} lacks {', '.join(missing)}")
    if settings["sdk"] != "gradio":
        raise PublishError(f"{path}: sdk is {settings['sdk']!r}; this app is a gradio Space")
    # Unquoted, `python_version: 3.10` is the float 3.1 in YAML: the Hub then builds the wrong Python.
    for key in ("sdk_version", "python_version"):
        if not isinstance(settings[key], str):
            raise PublishError(f'{path}: {key} must be a quoted string (e.g. "3.11"), got {settings[key]!r}')
    if not (REPO_ROOT / settings["app_file"]).is_file():
        raise PublishError(f"{path}: app_file {settings['app_file']!r} does not exist in {REPO_ROOT}")
    return settings


def space_requirements(settings: dict, repo_requirements: Path = REPO_ROOT / "requirements.txt") -> str:
    """The Space's requirements.txt: the repo's requirements.txt, which holds exactly what the app and the
    library need at run time (training and test tools live in requirements-train.txt and
    requirements-test.txt), without its pip options (`-e .`: the Space copies the package instead) and with
    gradio pinned to the SDK version."""
    try:
        text = repo_requirements.read_text(encoding="utf-8")
    except OSError as err:
        raise PublishError(
            f"cannot read the requirements {repo_requirements}: {err.strerror or err}"
        ) from None
    # The Space SDK installs gradio==sdk_version itself; the same pin here makes a local
    # `pip install -r requirements.txt` run the very gradio the Space runs, and cannot conflict with it.
    gradio = f"gradio=={settings['sdk_version']}"
    lines = [
        "# Runtime requirements of the AffectVLM Space (written by hub/space.py from the repo's requirements.txt).",
        "# On a machine without a GPU, `pip install torch==2.13.0` from the CPU index first avoids the CUDA wheels.",
    ]
    for line in text.splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement and not requirement.startswith("-"):
            lines.append(gradio if _dist_name(requirement) == "gradio" else requirement)
    if gradio not in lines:
        lines.append(gradio)
    return "\n".join(lines) + "\n"


def model_card_metadata(checkpoint: Path) -> dict:
    """The YAML metadata of a checkpoint's own README.md (its model card), as the app reads it; {} without one."""
    import yaml
    from huggingface_hub.repocard import metadata_load

    path = Path(checkpoint) / "README.md"
    if not path.is_file():
        return {}
    try:
        return metadata_load(path) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: undecodable, or metadata not a mapping
        raise PublishError(f"cannot read the model card {path}: {err}") from None


def space_licence(settings: dict, card: dict) -> dict:
    """The Space's licence keys: the bundled model's (from its card) when it names one, else space.yaml's
    (space.yaml's link completes a card that names the same licence without one)."""
    if not card.get("license"):
        return {key: settings[key] for key in LICENCE_KEYS if settings.get(key)}
    licence = {key: card[key] for key in LICENCE_KEYS if card.get(key)}
    if settings.get("license_link") and all(card.get(k) == settings.get(k) for k in ("license", "license_name")):
        licence.setdefault("license_link", settings["license_link"])
    return licence


def space_examples(licence: dict) -> list[Path]:
    """The example inputs a Space under `licence` may bundle: all under the Surrey Face Model's non-commercial
    licence; otherwise only the ICT FaceKit's (MIT), so that nothing non-commercial comes in with them."""
    files = sorted(p for p in EXAMPLES_DIR.glob("*") if p.is_file() and p.suffix in EXAMPLE_SUFFIXES)
    if licence.get("license_name") == SFM_LICENSE_NAME:
        return files
    return [p for p in files if p.match(ICT_EXAMPLE)]


def _licence_text(model: str | None, card: dict, licence: dict, examples: list[Path]) -> str:
    """The README's licence line: the code's, the model's (from its card) and the examples', as bundled."""
    sfm = licence.get("license_name") == SFM_LICENSE_NAME
    text = "the app code is Apache-2.0."
    if model is not None and card.get("license"):
        text += f" The model `{model}` is under `{licence.get('license_name') or licence['license']}` (its model card)."
    elif model is not None:
        text += f" The model `{model}` has no licence in a model card: this Space takes space.yaml's."
    ict = sum(p.match(ICT_EXAMPLE) for p in examples)
    if ict and ict < len(examples):
        text += (
            f" Of the example inputs, the {ict} `*_ict_*` files derive from the ICT FaceKit (MIT), the other "
            f"{len(examples) - ict} from the Surrey Face Model."
        )
    elif examples:
        text += f" The example inputs derive from the {'ICT FaceKit (MIT)' if ict else 'Surrey Face Model'}."
    if sfm:
        text += (
            " The Surrey Face Model is free for non-commercial use only (research and teaching), and so is what "
            "derives from it: this Space is for non-commercial use."
        )
    else:
        text += " Nothing in this Space derives from the Surrey Face Model (non-commercial)."
    return text


def space_readme(settings: dict, model: str | None, card: dict, examples: list[Path]) -> str:
    """README.md: the settings (the licence: the bundled model's) as YAML front matter, then a description."""
    import yaml

    licence = space_licence(settings, card)
    # space.yaml's keys in their order, its licence keys replaced by the Space's (where its `license` was)
    front_matter = {}
    for key, value in {**settings, "license": None}.items():
        if key == "license":
            front_matter.update(licence)
        elif key not in LICENCE_KEYS:
            front_matter[key] = value
    front = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, default_flow_style=False)
    if model is None:
        model_line = "no checkpoint was bundled, so the app runs a small **random, untrained** model and says so"
        run = "python app.py"
    else:
        summary = f" {card['summary']}" if card.get("summary") else ""
        model_line = (
            f"`{model}`, bundled in `checkpoints/{model}` with its model card.{summary} The Space variable "
            f"`{MODEL_VARIABLE}={model}` selects it (`hub/space.py` sets it on upload)"
        )
        run = f"{MODEL_VARIABLE}={model} python app.py"
    example_line = (
        f"{len(examples)} files in `examples/`; the app shows them as example rows"
        if examples else "none are bundled, so the app shows no example rows"
    )
    return f"""---
{front}---

# {settings["title"]}

{settings.get("short_description", "Facial expression recognition from 3D/4D face scans with a multiview CLIP.")}

Give three rendered views of a face, a 3D scan (obj, ply, stl, off, glb, wrl, bnt) or a 4D sequence (a zip
of frames), and any labels or prompts: AffectVLM renders the scan into views, embeds each view with CLIP,
fuses the views and scores every label, showing each view's contribution.

- **Model:** {model_line}. Set the Space variable `{MODEL_VARIABLE}` to a Hub model id to use another checkpoint.
- **Examples:** {example_line}.
- **Licence:** {_licence_text(model, card, licence, examples)}
- **Run it locally:** `pip install torch==2.13.0 && pip install -r requirements.txt && {run}`.
"""


def _copy_package(out: Path) -> None:
    """affectvlm/ as Python sources only: no tests, no caches, no data files."""
    for src in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = src.relative_to(PACKAGE_DIR)
        if (
            "__pycache__" in rel.parts
            or "tests" in rel.parts
            or rel.name.startswith("test_")
            or rel.name == "conftest.py"
        ):
            continue
        dst = out / "affectvlm" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def build_space_folder(out: Path, *, model_dir: Path | None = None, settings_path: Path = SPACE_YAML) -> dict:
    """Assemble the Space in `out`. `model_dir=None`: the demo checkpoint if it exists; a given folder must.

    The model is bundled under its own folder name, with its model card (the app shows its name, summary and
    licence from there), and selected by the Space variable MODEL_VARIABLE. Returns {"settings", "checkpoint":
    the bundled folder or None, "model": its name or None, "left_out": checkpoint files left out, "examples"}.
    """
    out = Path(out)
    settings = load_space_settings(settings_path)
    if model_dir is not None and not Path(model_dir).is_dir():
        raise PublishError(f"--model-dir {model_dir} does not exist")
    checkpoint = Path(model_dir).resolve() if model_dir is not None else DEMO_CHECKPOINT
    has_checkpoint = (checkpoint / "config.json").is_file() or model_dir is not None
    model = checkpoint.name if has_checkpoint else None
    card = model_card_metadata(checkpoint) if has_checkpoint else {}
    left_out = []
    if has_checkpoint:
        bundled = out / "checkpoints" / model
        left_out = [name for name in copy_checkpoint(checkpoint, bundled) if name != "README.md"]
        # The app loads it with the package's own classes; the remote code makes the bundled folder also
        # loadable on its own with trust_remote_code=True, as its config.json's auto_map promises.
        copy_remote_code(checkpoint, bundled)
        if (checkpoint / "README.md").is_file():
            shutil.copy2(checkpoint / "README.md", bundled / "README.md")
    examples = space_examples(space_licence(settings, card))
    for src in examples:
        (out / "examples").mkdir(exist_ok=True)
        shutil.copy2(src, out / "examples" / src.name)
    shutil.copy2(REPO_ROOT / settings["app_file"], out / settings["app_file"])
    _copy_package(out)
    (out / "requirements.txt").write_text(space_requirements(settings), encoding="utf-8")
    (out / "README.md").write_text(space_readme(settings, model, card, examples), encoding="utf-8")
    return {"settings": settings, "checkpoint": checkpoint if has_checkpoint else None, "model": model,
            "left_out": left_out, "examples": [f"examples/{p.name}" for p in examples]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python hub/space.py",
        description=(
            "Publish the AffectVLM demo app as a Hugging Face Space (Gradio SDK) in one commit. The Space "
            "settings come from space.yaml and are stamped into the Space README's YAML front matter (the "
            "only place the Hub reads them), with the licence of the bundled model. The folder holds README.md, "
            "app.py, the affectvlm package (Python sources only), the Space's own runtime requirements.txt "
            "(gradio pinned to sdk_version), the model with its card (under its own folder name, selected by the "
            f"Space variable {MODEL_VARIABLE}) and the example inputs its licence allows (the ICT FaceKit's "
            "only, unless the model is under the Surrey Face Model's non-commercial licence). Log in first with "
            "`hf auth login` or set HF_TOKEN."
        ),
        epilog="Example: python hub/space.py --repo-id me/affectvlm --dry-run /tmp/affectvlm-space",
    )
    parser.add_argument("--repo-id", required=True, help="the Space, USER/NAME or ORG/NAME")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help=f"checkpoint folder to bundle as checkpoints/<its name>, with its model card (default: the repo's "
        f"checkpoints/{DEFAULT_MODEL} if it exists; without one the app runs a random model and says so)",
    )
    parser.add_argument(
        "--space-yaml", type=Path, default=SPACE_YAML, help="the Space settings (default: space.yaml)"
    )
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument(
        "--dry-run",
        type=Path,
        metavar="DIR",
        help="write the folder to DIR (new or empty) and upload nothing",
    )
    parser.add_argument("--commit-message", default="Update the AffectVLM Space", help="the commit's title")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_repo_id(args.repo_id)
        if args.dry_run is not None:
            return _run(args, prepare_output_dir(args.dry_run))
        with tempfile.TemporaryDirectory(prefix="affectvlm-space-") as tmp:
            return _run(args, Path(tmp))
    except PublishError as err:
        print(f"space.py: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: Path) -> int:
    report = build_space_folder(out, model_dir=args.model_dir, settings_path=args.space_yaml)
    if report["checkpoint"] is None:
        print(f"no checkpoint in {DEMO_CHECKPOINT}: the Space will run a small random model (it says so)")
    else:
        print(f"model: checkpoints/{report['model']}, served as the Space variable {MODEL_VARIABLE}={report['model']} "
              "says (set on upload)")
        if report["left_out"]:
            print(f"left out of the bundled checkpoint: {', '.join(report['left_out'])}")
    print(f"examples: {len(report['examples'])} bundled" + ("" if report["examples"] else " (no example rows)"))
    files = list_files(out)
    if args.dry_run is not None:
        print(f"dry run: {len(files)} files in {out} (nothing uploaded)")
        if report["model"] is not None:
            print(f"run it there with: {MODEL_VARIABLE}={report['model']} python app.py")
        for name in files:
            print(f"  {name}")
        return 0
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = upload(
            out,
            args.repo_id,
            repo_type="space",
            space_sdk=report["settings"]["sdk"],
            commit_message=args.commit_message,
            private=args.private,
            space_variables={MODEL_VARIABLE: report["model"]},  # None: no bundled model, the variable removed
        )
    except (HfHubHTTPError, ValueError) as err:  # ValueError: the Hub rejected the README metadata
        print(f"space.py: error: the Hub refused the upload: {err}", file=sys.stderr)
        return 1
    print(
        f"uploaded {len(files)} files to https://huggingface.co/spaces/{args.repo_id} in one commit: {info.commit_url}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
