"""What generalises across face models: ablations on the cross-face-model protocol, paired per direction.

Each variant trains twice from the same config: on the SFM subjects of the training caches only, and on the
ICT FaceKit subjects only. Each model is then scored by `train/evaluate.py` on held-out identities (another
seed) of both face models: its own face model (held-out identities) and the other one (cross-face-model),
with the plain emotion words and with never-trained words (open vocabulary). The difference from `full` is
taken per direction (the pairing). Variants that need other renders (clean scans, 48 px, SFM action units)
name the training cache they use: give each with `--cache NAME=DIR`.

    python train/ablate.py --config affectvlm-cpu --output-dir runs/ablate --steps 1000 \
        --cache default=/data/train96/synthboth-... --cache clean=/data/trainclean96/... \
        --cache px48=/data/train48/... --cache sfm_aus=/data/trainaus96/... \
        --eval default=/data/eval96/... --eval px48=/data/eval48/... --variants all
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.cross_validate import train_run  # noqa: E402

# name -> (overrides, training cache name, evaluation cache name)
VARIANTS: dict[str, tuple[list[str], str, str]] = {
    "full": ([], "default", "default"),
    # The language side: CLIP's text transformer from scratch with the character-level tokenizer (the old
    # demo model's), and the pretrained encoder with its top two layers tuned.
    "scratch_text": (
        [
            "model.affectvlm.text_backbone=clip",
            "model.clip.hidden_size=96",
            "model.clip.num_layers=3",
            "model.clip.num_heads=4",
        ],
        "default",
        "default",
    ),  # fmt: skip
    "text_tuned_top2": (["model.affectvlm.text_trainable_layers=2"], "default", "default"),
    "locked_text": (
        ["model.clip.projection_dim=384", "model.affectvlm.text_projection=identity"],
        "default",
        "default",
    ),
    "no_au_text": (["au.weight=0"], "default", "default"),
    "no_realism": ([], "clean", "default"),
    "px48": (["model.clip.image_size=48"], "px48", "px48"),
    "sfm_aus": ([], "sfm_aus", "default"),
    "no_augmented_prompts": (["prompts.mode=fixed"], "default", "default"),
    "no_mixed_view_aug": (["augment.enabled=false"], "default", "default"),
    "no_metric_losses": (
        ["model.affectvlm.contrastive_weight=0", "model.affectvlm.triplet_weight=0"],
        "default",
        "default",
    ),
    "single_view": (["data.views=[frontal]"], "default", "default"),
}
DIRECTIONS = {"sfm": "ict", "ict": "sfm"}


def run_variant(args, name: str, caches: dict, evals: dict) -> dict:
    from train.evaluate import main as evaluate

    overrides, train_cache, eval_cache = VARIANTS[name]
    out = {}
    for source, target in DIRECTIONS.items():
        run_dir = Path(args.output_dir) / name / f"train-{source}"
        common = [f"data.cache_dir={caches[train_cache]}", f"data.face_models=[{source}]",
                  f"train.max_steps={args.steps}", f"train.eval_every={args.steps // 4}",
                  f"train.save_every={args.steps // 4}", *args.set]  # fmt: skip
        train_run(args.config, run_dir, [*common, *overrides], f"{name} train on {source}")
        report_path = run_dir / "evaluation.json"
        if not report_path.is_file():
            evaluate(["--model", str(run_dir / "model"), "--cache", f"heldout={evals[eval_cache]}",
                      "--out", str(report_path)])  # fmt: skip
        r = json.loads(report_path.read_text())["caches"]["heldout"]
        out[source] = {
            "same_model": r["emotions"][f"{source}/all"]["accuracy"],
            "cross_model": r["emotions"][f"{target}/all"]["accuracy"],
            "cross_model_3d": r["emotions"][f"{target}/3d"]["accuracy"],
            "open_vocabulary_ratio": r["open_vocabulary"]["ratio_one_word"],
            "au_auc": (r["action_units"] or {}).get("mean_auc"),
        }
    return out


def table(results: dict) -> str:
    cols = ["same_model", "cross_model", "cross_model_3d", "open_vocabulary_ratio", "au_auc"]
    head = (
        "| variant | "
        + " | ".join(f"{c} (SFM→ / ICT→)" for c in cols)
        + " | cross-model minus full, paired |"
    )
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    full = results.get("full")
    for name, r in results.items():
        cells = []
        for c in cols:
            vals = [r[d][c] for d in DIRECTIONS]
            cells.append(" / ".join("–" if v is None else f"{v:.3f}" for v in vals))
        diff = (
            ""
            if full is None or name == "full"
            else " / ".join(f"{r[d]['cross_model'] - full[d]['cross_model']:+.3f}" for d in DIRECTIONS)
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {diff} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="affectvlm-cpu")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps per run (default 1000)")
    p.add_argument("--cache", action="append", default=[], metavar="NAME=DIR", help="training caches")
    p.add_argument("--eval", action="append", default=[], metavar="NAME=DIR", help="held-out caches")
    p.add_argument("--variants", default="all", help=f"comma-separated, or all: {', '.join(VARIANTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for all")
    args = p.parse_args(argv)
    caches = dict(item.split("=", 1) for item in args.cache)
    evals = dict(item.split("=", 1) for item in args.eval)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    results = {}
    for name in names:
        if VARIANTS[name][1] not in caches or VARIANTS[name][2] not in evals:
            print(
                f"skipping {name}: needs --cache {VARIANTS[name][1]}=... and --eval {VARIANTS[name][2]}=..."
            )
            continue
        results[name] = run_variant(args, name, caches, evals)
    summary = {"steps": args.steps, "config": args.config, "results": results}
    out = Path(args.output_dir) / "ablations.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(table(results))
    if "full" in results:
        mean = np.mean([results["full"][d]["cross_model"] for d in DIRECTIONS])
        print(f"full model, cross-face-model accuracy (mean of both directions): {mean:.3f}")
    return summary


if __name__ == "__main__":
    main()
