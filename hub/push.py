"""Publish an AffectVLM checkpoint to the Hugging Face Hub as a model repo, in one commit.

    python hub/push.py checkpoints/affectvlm-cpu --repo-id USER/NAME --results results.json
    python hub/push.py checkpoints/affectvlm-cpu --repo-id USER/NAME --dry-run /tmp/model-folder

One folder is assembled: the safetensors weights, config.json (with `auto_map` and `custom_pipelines`), the
processor and tokenizer files, the current remote-code files from `affectvlm/` (the pipeline included), and
a model card (README.md) with the cross-validation results. The folder is then loaded in a separate Python
process with `AutoModel.from_pretrained(folder, trust_remote_code=True)` and `pipeline(model=folder,
trust_remote_code=True)` while the local `affectvlm` package is blocked, exactly as a Hub user would load
it, and only then uploaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

if __package__ in (None, ""):  # run as `python hub/push.py`: make the `hub` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.card import load_results, model_card  # noqa: E402
from hub.common import (  # noqa: E402
    PublishError,
    check_checkpoint,
    check_repo_id,
    copy_checkpoint,
    copy_remote_code,
    list_files,
    prepare_output_dir,
    upload,
)

# Run by `verify_model_folder` in a fresh interpreter. `sys.modules["affectvlm"] = None` makes any import
# of the local package fail, so the model can only come from the folder's own remote-code files.
_VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["affectvlm"] = None
    from transformers import AutoModel, AutoProcessor
    folder = sys.argv[1]
    try:
        model, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    except ValueError as err:  # the model's CheckpointError: missing or non-finite weights, named
        if type(err).__name__ != "CheckpointError":
            raise
        print(json.dumps({"refused": str(err)}))
        raise SystemExit(0)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    problems = {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs" and v}
    from transformers import pipeline
    classifier = pipeline(model=folder, trust_remote_code=True, device="cpu")  # the card's pipeline call
    print(json.dumps({"model": type(model).__module__ + "." + type(model).__name__,
                      "processor": type(processor).__name__, "problems": problems,
                      "pipeline": f"{classifier.task}: {type(classifier).__name__}"}))
    """
)


def verify_model_folder(folder: Path, timeout: float = 600) -> dict:
    """Load `folder` with the Auto classes and remote code only (separate process, temporary cwd and cache).

    Returns {"model": class path, "processor": class name, "pipeline": "task: class name"}; raises
    PublishError if loading fails (the pipeline included) or any weight is missing, unexpected, of the wrong
    shape or not finite.
    """
    folder = Path(folder).resolve()
    with tempfile.TemporaryDirectory(prefix="affectvlm-verify-") as tmp:
        env = dict(os.environ)
        # A private modules cache: a stale copy of the remote code from an earlier run is never reused.
        env.update(HF_MODULES_CACHE=str(Path(tmp) / "modules"), HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
        proc = subprocess.run(
            [sys.executable, "-c", _VERIFY_SCRIPT, str(folder)],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout,
        )
    if proc.returncode != 0:
        raise PublishError(
            f"the assembled folder does not load with trust_remote_code=True:\n{proc.stderr.strip()[-3000:]}"
        )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "refused" in result:
        raise PublishError(f"the weights do not fit the current remote code: {result['refused']}")
    if result["problems"]:
        raise PublishError(
            "the weights do not fit the current remote code (was the checkpoint saved by older code?): "
            f"{result['problems']}"
        )
    return result


def build_model_folder(
    checkpoint: Path,
    out: Path,
    repo_id: str,
    *,
    results: Path | None = None,
    license: str = "other",
    sfm_notice: bool = True,
    base_model: str | None = None,
    dataset: str | None = None,
    protocol: str | None = None,
    variant: str | None = None,
    fresh_card: bool = False,
) -> dict:
    """Assemble the model repo in `out`; returns what happened (files left out, remote code status).

    `variant` picks the summary of cross_validate.py's results (default "full"); `dataset` / `protocol`
    override what the results file says or implies. A README.md in the checkpoint is the base of the card
    (its text kept, the metadata, usage and results completed) unless `fresh_card`.
    """
    if (dataset or protocol or variant) and results is None:
        raise PublishError("--dataset, --protocol and --variant describe the --results file: give it too")
    # The card must not say two things: the SFM notice means non-commercial, whatever the metadata says.
    if sfm_notice and license != "other":
        raise PublishError(
            f"--license {license} contradicts the Surrey Face Model notice (non-commercial weights); "
            "add --no-sfm-notice if this checkpoint was trained on no SFM-derived data"
        )
    if not sfm_notice and license == "other":
        raise PublishError("--no-sfm-notice needs the weights' licence: give --license (an SPDX id)")
    config = check_checkpoint(checkpoint)
    cv = load_results(results, variant) if results is not None else None  # fail on bad results before copying
    if cv is not None:
        cv.dataset, cv.protocol = dataset or cv.dataset, protocol or cv.protocol
    left_out = copy_checkpoint(checkpoint, out)
    remote_code = copy_remote_code(checkpoint, out)
    processor_config = json.loads((Path(out) / "processor_config.json").read_text(encoding="utf-8"))
    own_card = Path(checkpoint) / "README.md"
    base_card = own_card.read_text(encoding="utf-8") if own_card.is_file() and not fresh_card else None
    card = model_card(
        repo_id, config, processor_config, cv, license=license, sfm_notice=sfm_notice, base_model=base_model,
        base_card=base_card,
    )
    card.save(Path(out) / "README.md")
    left_out = [name for name in left_out if not (name == "README.md" and base_card is not None)]
    return {"left_out": left_out, "remote_code": remote_code, "results": cv, "own_card": base_card is not None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python hub/push.py",
        description=(
            "Publish an AffectVLM checkpoint (a folder written by model.save_pretrained + "
            "processor.save_pretrained) to the Hugging Face Hub as a model repo, in one commit: safetensors "
            "weights, config.json with auto_map, processor and tokenizer files, the remote-code files "
            "(copied fresh from affectvlm/), and a model card with the cross-validation results and usage. "
            "Log in first with `hf auth login` or set HF_TOKEN."
        ),
        epilog=(
            "Before uploading, the folder is loaded with AutoModel/AutoProcessor.from_pretrained(folder, "
            "trust_remote_code=True) and pipeline(model=folder, trust_remote_code=True) in a separate process "
            "with the local affectvlm package blocked. "
            "Example: python hub/push.py checkpoints/affectvlm-cpu --repo-id me/affectvlm-cpu "
            "--results runs/cv/results.json --dry-run /tmp/affectvlm-model"
        ),
    )
    parser.add_argument("checkpoint", type=Path, help="the saved checkpoint folder")
    parser.add_argument("--repo-id", required=True, help="the Hub model repo, USER/NAME or ORG/NAME")
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)"
    )
    parser.add_argument(
        "--results", type=Path, metavar="RESULTS_JSON",
        help="results.json of train/cross_validate.py: dataset, protocol, accuracy per fold, mean and std "
        "go into the card and its model-index",
    )
    parser.add_argument(
        "--variant", help="which variant of cross_validate.py's results this checkpoint is (default: full)"
    )
    parser.add_argument("--dataset", help="dataset name for the card, instead of the one in --results")
    parser.add_argument("--protocol", help="evaluation protocol for the card, instead of the one in --results")
    parser.add_argument(
        "--dry-run", type=Path, metavar="DIR",
        help="write the folder to DIR (new or empty) and upload nothing",
    )
    parser.add_argument(
        "--license", default="other",
        help="licence of the weights in the card metadata (default: other = the Surrey Face Model's "
        "non-commercial terms, which bind every checkpoint trained on SynthFER-3D)",
    )
    parser.add_argument(
        "--sfm-notice", action=argparse.BooleanOptionalAction, default=True,
        help="say in the card that the weights derive from the Surrey Face Model, non-commercial use only "
        "(default: on; turn off only for a checkpoint trained on no SFM-derived data)",
    )
    parser.add_argument("--base-model", help="Hub id of the CLIP the training started from, for the card")
    parser.add_argument("--commit-message", default=None, help="default: 'Upload AffectVLM checkpoint <name>'")
    parser.add_argument(
        "--fresh-card", action="store_true",
        help="ignore the checkpoint's own README.md (by default its text is kept and completed)",
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip loading the assembled folder before uploading"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_repo_id(args.repo_id)
        if args.dry_run is not None:
            out = prepare_output_dir(args.dry_run)
            return _run(args, out)
        with tempfile.TemporaryDirectory(prefix="affectvlm-push-") as tmp:
            return _run(args, Path(tmp))
    except PublishError as err:
        print(f"push.py: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: Path) -> int:
    report = build_model_folder(
        args.checkpoint, out, args.repo_id, results=args.results, license=args.license,
        sfm_notice=args.sfm_notice, base_model=args.base_model, dataset=args.dataset, protocol=args.protocol,
        variant=args.variant, fresh_card=args.fresh_card,
    )
    if report["own_card"]:
        print("model card: the checkpoint's README.md, completed (metadata, remote-code usage, results)")
    for name, status in report["remote_code"].items():
        if status != "unchanged":
            print(f"remote code {name}: {status} (current affectvlm/{name})")
    if report["left_out"]:
        print(f"left out of the upload: {', '.join(report['left_out'])}")
    if report["results"] is None:
        print("no --results: the card says no evaluation results were given")
    elif report["results"].dataset == "unknown dataset":
        print("the results name no dataset: the card says 'unknown dataset' (give --dataset)")
    if not args.no_verify:
        loaded = verify_model_folder(out)
        print(
            f"checked: the folder loads as {loaded['model']} + {loaded['processor']} with remote code only, "
            f"and as the pipeline {loaded['pipeline']}"
        )
    files = list_files(out)
    if args.dry_run is not None:
        print(f"dry run: {len(files)} files in {out} (nothing uploaded)")
        for name in files:
            print(f"  {name}")
        return 0
    message = args.commit_message or f"Upload AffectVLM checkpoint {Path(args.checkpoint).resolve().name}"
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = upload(out, args.repo_id, repo_type="model", commit_message=message, private=args.private)
    except (HfHubHTTPError, ValueError) as err:  # ValueError: the Hub rejected the README metadata
        print(f"push.py: error: the Hub refused the upload: {err}", file=sys.stderr)
        return 1
    print(f"uploaded {len(files)} files to https://huggingface.co/{args.repo_id} in one commit: {info.commit_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
