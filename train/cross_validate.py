r"""Subject-independent k-fold cross-validation, ablations and baselines, end to end, with a report.

    python train/cross_validate.py --config synth-cpu --output-dir runs/cv-synth3d --task 3d \
        --prepare-synth 100 --size 48 --k 10 --variants all
    python train/cross_validate.py --config paper --output-dir runs/cv-bu3dfe --prepare bu3dfe \
        --root /data/BU-3DFE --protocol bu3dfe-subset1 --k 10 --launch "--multi_gpu --num_processes 8"
    python train/cross_validate.py --config paper --output-dir runs/cv-bu4dfe --cache-dir /data/cache/bu4dfe-<hash>

The data: `--prepare-synth SUBJECTS` renders SynthFER-3D, `--prepare DATASET --root DIR [--protocol P]` renders
a real dataset (BU-3DFE, Bosphorus, BU-4DFE, BP4D, read in its own layout) and `--cache-dir` takes a cache
made by `python -m affectvlm.data prepare`; a cache already rendered is reused. `--task` picks static scans
(3d) or sequences (4d) of a SynthFER-3D cache; a real dataset's cache holds its own kind.

For every variant and fold, `train/train.py` runs in its own process on the fold's training subjects, picks
its model on the fold's validation subjects and scores the held-out test subjects. The fold lists are made
once from the cache's subjects that have samples of the config's labels and saved (`folds.json`), so every
variant sees exactly the same folds. A run whose `results.json` exists is skipped and an interrupted one resumes
from its last checkpoint, so the whole command can simply be run again after a crash; both only with the
settings they were made with (cache, --k, --fold-seed, the run's config): otherwise the command stops and says
what differs.

Writes to the output folder: `results.json` (per variant: per-fold accuracy, mean and std, macro F1, per-class
F1 over all test predictions, the summed confusion matrix; the fold lists; the commands), `results.md` (a
markdown table), `confusion_<variant>.png` and `curves.png` (training loss and validation accuracy).

Variants (`--variants`, comma-separated, or `all`): the full model; the paper's ablations (Figure 3)
no_augmented_prompts, no_mixed_view_aug, no_contrastive, no_triplet, fixed_margin, single_view (frontal);
and the baselines zero_shot (the initial model, no fine-tuning) and single_view_clip (plain CLIP fine-tuning
of the frontal view: one prompt per class, image-text loss only).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.config import DEFAULTS, load_config, output_folder  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_augmented_prompts": ["prompts.mode=fixed"],
    "no_mixed_view_aug": ["augment.enabled=false"],
    "no_contrastive": ["model.affectvlm.contrastive_weight=0"],
    "no_triplet": ["model.affectvlm.triplet_weight=0"],
    "fixed_margin": ["model.affectvlm.learnable_margin=false"],
    "single_view": ["data.views=[frontal]"],
    "zero_shot": ["train.max_steps=0"],
    "single_view_clip": [
        "data.views=[frontal]",
        "prompts.mode=fixed",
        "model.affectvlm.contrastive_weight=0",
        "model.affectvlm.triplet_weight=0",
        "model.affectvlm.view_itc_weight=0",
    ],
}
# The task picks the cache entries to train and test on: a SynthFER-3D "both" cache holds static scans
# (synth3d) and sequences (synth4d); a real dataset's cache holds one kind, its own.
TASKS = {"3d": ["synth3d"], "4d": ["synth4d"], "all": None}
DATASET_TASK = {"bu3dfe": "3d", "bosphorus": "3d", "bu4dfe": "4d", "bp4d": "4d"}
DATASET_TITLE = {"synth": "SynthFER-3D", "bu3dfe": "BU-3DFE", "bosphorus": "Bosphorus", "bu4dfe": "BU-4DFE",
                 "bp4d": "BP4D"}  # fmt: skip


def prepare_synth_cache(out: Path, subjects: int, size: int, frames: int, preset: str, seed: int) -> Path:
    """Render SynthFER-3D (static scans and 4D sequences) into a cache under `out` (resumable, reused)."""
    from affectvlm.data.cache import RenderSettings, prepare_cache
    from affectvlm.data.synth import SynthConfig

    settings = RenderSettings(size=size, frames=frames)
    config = SynthConfig.preset(preset, num_subjects=subjects, seed=seed)
    return prepare_cache("synth", out=out, settings=settings, synth_config=config, synth_kind="both")


def prepare_dataset_cache(
    out: Path, dataset: str, root: Path, protocol: str | None, size: int, frames: int, workers: int
) -> Path:
    """Render a real dataset (or a SynthFER-3D tree in its layout) from `root` into a cache under
    `out/<protocol or all>` (resumable, reused): one folder per sample selection, so two protocols of the same
    dataset never share a cache."""
    from affectvlm.data.cache import RenderSettings, prepare_cache
    from affectvlm.data.datasets import DatasetError, read_dataset, select_protocol

    try:
        samples = read_dataset(dataset, root)
        if protocol:
            samples = select_protocol(samples, protocol)
    except DatasetError as e:  # a wrong folder or protocol: say so, no traceback
        raise SystemExit(f"--prepare {dataset}: {e}") from None
    settings = RenderSettings(size=size, frames=frames)
    return prepare_cache(
        dataset, root, out=out / (protocol or "all"), settings=settings, samples=samples, workers=workers
    )


def resolve_task(cache_dir: Path, task: str | None) -> tuple[str, str, list[str] | None]:
    """(dataset, task, the cache `dataset` values to keep) for a cache and the --task asked for."""
    info = cache_dir / "cache.json"
    if not info.is_file():
        raise SystemExit(
            f"{cache_dir} is not a render cache (no cache.json): python -m affectvlm.data prepare"
        )
    dataset = json.loads(info.read_text()).get("dataset", "synth")
    if dataset == "synth":
        task = task or "3d"
        return dataset, task, TASKS[task]
    own = DATASET_TASK.get(dataset)
    if task not in (None, "all", own):
        raise SystemExit(
            f"--task {task}: a {DATASET_TITLE.get(dataset, dataset)} cache holds {own} data only"
        )
    return dataset, own or "all", None


def make_folds(cache_dir: Path, config: dict, datasets, k: int, seed: int, path: Path):
    """Subject folds over the subjects with samples of the run's labels (and the task's datasets), saved to
    `path`, or read back when they were made with these settings (else the run stops: other folds)."""
    from affectvlm.data.cache import RenderCacheDataset
    from affectvlm.data.folds import labelled_persons, load_folds, save_folds, subject_folds

    d = config["data"]
    grouped = d.get("group_persons", True)
    info = {"k": k, "seed": seed, "val_fraction": d["val_fraction"], "cache": str(cache_dir),
            "datasets": datasets, "labels": d["labels"], "group_persons": grouped}  # fmt: skip
    if path.is_file():
        saved = json.loads(path.read_text()).get("info", {})
        refuse_other_settings(path, {key: (saved[key], want) for key, want in info.items() if key in saved})
        return load_folds(path)
    runs = sorted(p.name for p in path.parent.iterdir() if p.name in VARIANTS and p.is_dir())
    if runs:
        raise SystemExit(
            f"{path.parent} holds runs ({', '.join(runs)}) but no folds.json: they were made on folds that "
            f"are gone; use a new --output-dir or remove {', '.join(str(path.parent / r) for r in runs)}"
        )
    persons = labelled_persons(RenderCacheDataset(cache_dir).entries, d["labels"], datasets)
    try:
        folds = subject_folds(
            sorted(persons), k=k, seed=seed, val_fraction=d["val_fraction"],
            person=persons.__getitem__ if grouped else None,
        )  # fmt: skip
    except ValueError as err:  # too few subjects for k: say how many have samples of the labels
        labels = d["labels"]
        raise SystemExit(f"{cache_dir}: {len(persons)} subjects with samples of {labels}: {err}") from None
    save_folds(path, folds, **info)
    return folds


def refuse_other_settings(path: Path, pairs: dict) -> None:
    """Stop when `path` (saved folds or a run folder) was made with settings other than this run's: `pairs`
    maps a setting to (saved, this run's). Paths count as the same when they resolve to the same folder."""

    def same(key: str, a, b) -> bool:
        if key in ("cache", "data.cache_dir") and a and b:
            a, b = ([str(Path(c).resolve()) for c in (x if isinstance(x, list) else [x])] for x in (a, b))
        return a == b

    differ = [f"{key}={a} (this run: {key}={b})" for key, (a, b) in pairs.items() if not same(key, a, b)]
    if differ:
        raise SystemExit(
            f"{path} was made with other settings: {'; '.join(differ[:5])}: use a new --output-dir or remove "
            f"{path}" + (" and the run folders beside it" if path.name == "folds.json" else "")
        )


def check_run_settings(run_dir: Path, config: str, overrides: list[str]) -> None:
    """A run folder is skipped or resumed only when its config.yaml is the config this run would write (its
    folds file aside: the folds were checked). A field the run's code did not have yet counts as the same
    while this run leaves it at its default."""
    import yaml

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return

    def flat(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    old = flat(yaml.safe_load(saved.read_text()) or {})
    new = flat(yaml.safe_load(yaml.safe_dump(load_config(config, overrides))))
    defaults = flat(yaml.safe_load(yaml.safe_dump(DEFAULTS)))
    keys = sorted((old.keys() | new.keys()) - {"data.folds_file"})
    pairs = {key: (old.get(key), new.get(key)) for key in keys if key in old or new[key] != defaults.get(key)}
    refuse_other_settings(run_dir, pairs)


def train_run(config: str, run_dir: Path, overrides: list[str], what: str, launch: str | None = None) -> dict:
    """Train and test one run of `train/train.py` in its own process (resumed if interrupted, skipped if
    done); returns its results.json."""
    result_path = run_dir / "results.json"
    check_run_settings(run_dir, config, overrides)
    if result_path.is_file():
        return json.loads(result_path.read_text())
    script = [str(Path(__file__).resolve().parent / "train.py"), "--config", config]
    script += ["--output-dir", str(run_dir), "--resume", "auto", "--no-progress"]
    for item in overrides:
        script += ["--set", item]
    if launch:
        launcher = [sys.executable, str(Path(__file__).resolve().parent / "launch.py"), *shlex.split(launch)]
        cmd = [*launcher, *script]
    else:
        cmd = [sys.executable, *script]
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {what}: {shlex.join(cmd)}", flush=True)
    with open(run_dir / "stdout.log", "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}); see {run_dir / 'stdout.log'}")
    return json.loads(result_path.read_text())


def run_one(args, variant: str, fold: int, run_dir: Path, common: list[str]) -> dict:
    """Train and test one (variant, fold) in its own process; returns its results.json."""
    overrides = [*common, f"data.fold={fold}", *VARIANTS[variant]]
    return train_run(args.config, run_dir, overrides, f"{variant} fold {fold}", args.launch)


def summarise(runs: dict[str, list[dict]], label_names: list[str]) -> dict:
    """Per variant: per-fold accuracy, mean/std, macro F1, and per-class F1 + confusion over all test samples."""
    from train.metrics import classification_metrics

    out = {}
    for variant, results in runs.items():
        accs = [r["test"]["accuracy"] for r in results]
        f1s = [r["test"]["macro_f1"] for r in results]
        preds = [p for r in results for p in r["test"]["predictions"]]
        labels = [y for r in results for y in r["test"]["labels"]]
        pooled = classification_metrics(preds, labels, label_names)
        out[variant] = {
            "folds": [r["fold"]["index"] for r in results],
            "accuracy_per_fold": accs,
            "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "macro_f1_mean": statistics.fmean(f1s),
            "pooled_accuracy": pooled["accuracy"],
            "per_class_f1": pooled["per_class_f1"],
            "confusion_matrix": pooled["confusion_matrix"],
            "num_test_samples": pooled["num_samples"],
            "selected_step_per_fold": [r["selected"]["step"] for r in results],
            "train_samples_per_s": [r.get("train_samples_per_s") for r in results],
        }
    add_paired_differences(out)
    return out


def add_paired_differences(summary: dict, reference: str = "full") -> None:
    """Each variant's accuracy minus the reference's on the same folds: mean and std of the per-fold
    differences, and on how many folds it is lower or higher. Fold-to-fold spread (some folds' subjects are
    harder for every variant) cancels in the difference, so it resolves smaller effects than the two means."""
    ref = summary.get(reference)
    if ref is None:
        return
    ref_acc = dict(zip(ref["folds"], ref["accuracy_per_fold"]))
    for variant, s in summary.items():
        if variant == reference:
            continue
        diffs = [a - ref_acc[f] for f, a in zip(s["folds"], s["accuracy_per_fold"]) if f in ref_acc]
        if not diffs:
            continue
        s[f"vs_{reference}"] = {
            "folds": len(diffs),
            "mean_difference": statistics.fmean(diffs),
            "std_difference": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "folds_lower": sum(d < 0 for d in diffs),
            "folds_higher": sum(d > 0 for d in diffs),
        }


def markdown_table(summary: dict, label_names: list[str]) -> str:
    short = [name[:3] for name in label_names]
    head = (
        "| variant | accuracy (mean ± std) | per fold | macro F1 | "
        + " | ".join(f"F1 {s}" for s in short)
        + " |"
    )
    paired = any("vs_full" in s for s in summary.values())
    if paired:
        head = head.replace(" | per fold |", " | minus full, paired (folds lower/higher) | per fold |")
    rule = "|" + "---|" * (4 + paired + len(short))
    rows = [head, rule]
    for variant, s in summary.items():
        folds = ", ".join(f"{a:.3f}" for a in s["accuracy_per_fold"])
        f1 = " | ".join(f"{s['per_class_f1'][n]:.2f}" for n in label_names)
        diff = ""
        if paired:
            d = s.get("vs_full")
            diff = (
                f" {d['mean_difference']:+.3f} ± {d['std_difference']:.3f} ({d['folds_lower']}/{d['folds_higher']}) |"
                if d
                else " |"
            )
        rows.append(
            f"| {variant} | {s['accuracy_mean']:.3f} ± {s['accuracy_std']:.3f} |{diff} {folds} | {s['macro_f1_mean']:.3f} | {f1} |"
        )
    return "\n".join(rows) + "\n"


def plot_confusion(matrix, label_names: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_curves(run_dir: Path) -> tuple[list, list, list, list]:
    steps, losses, val_steps, val_accs = [], [], [], []
    log = run_dir / "logs" / "metrics.jsonl"
    if not log.is_file():
        return steps, losses, val_steps, val_accs
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if "loss" in r:
            steps.append(r["step"])
            losses.append(r["loss"])
        if "val/accuracy" in r:
            val_steps.append(r["step"])
            val_accs.append(r["val/accuracy"])
    return steps, losses, val_steps, val_accs


def _mean_curve(curves: list[tuple[list, list]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over folds at the steps every fold logged."""
    common = sorted(set.intersection(*(set(steps) for steps, _ in curves))) if curves else []
    if not common:
        return np.array([]), np.array([]), np.array([])
    rows = np.array([[dict(zip(steps, values))[s] for s in common] for steps, values in curves], dtype=float)
    return np.array(common), rows.mean(0), rows.std(0)


def plot_curves(run_dirs: dict[str, list[Path]], path: Path) -> None:
    """Training loss and validation accuracy against the step: each fold faint, the mean over folds bold (with
    a +-1 std band for accuracy), one colour per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.get_cmap("tab10")
    for i, (variant, dirs) in enumerate(run_dirs.items()):
        color = colors(i % 10)
        losses, accs = [], []
        for run_dir in dirs:
            steps, loss, val_steps, val_accs = read_curves(run_dir)
            if steps:
                ax_loss.plot(steps, loss, color=color, alpha=0.15, lw=0.6)
                losses.append((steps, loss))
            if val_steps:
                ax_acc.plot(val_steps, val_accs, color=color, alpha=0.15, lw=0.6)
                accs.append((val_steps, val_accs))
        folds = f"{variant} ({len(dirs)} fold{'s' if len(dirs) != 1 else ''})"
        x, mean, _ = _mean_curve(losses)
        if len(x):
            ax_loss.plot(x, mean, color=color, lw=1.8, label=folds)
        x, mean, std = _mean_curve(accs)
        if len(x):
            ax_acc.plot(x, mean, color=color, lw=1.8, marker=".", label=folds)
            ax_acc.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, lw=0)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss (weighted sum)")
    ax_loss.set_title("training loss: mean over folds (bold), each fold (faint)")
    ax_acc.set_xlabel("optimizer step")
    ax_acc.set_ylabel("validation accuracy")
    ax_acc.set_title("validation-subject accuracy: mean +- std over folds")
    for ax in (ax_loss, ax_acc):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train/cross_validate.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", default="synth-cpu", help="training config name or file (default: synth-cpu)"
    )
    parser.add_argument("--output-dir", required=True, help="folder for runs, folds and the report")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--cache-dir", default=None, help="a prepared render cache (python -m affectvlm.data prepare)"
    )
    data.add_argument("--prepare-synth", type=int, default=None, metavar="SUBJECTS",
                      help="render SynthFER-3D with this many subjects first (into <output-dir>/cache unless "
                      "--cache-root), reused when already rendered")  # fmt: skip
    data.add_argument("--prepare", default=None, choices=sorted(DATASET_TASK), metavar="DATASET",
                      help="render this dataset from --root first (bu3dfe, bosphorus, bu4dfe, bp4d; into "
                      "<output-dir>/cache unless --cache-root), reused when already rendered")  # fmt: skip
    data.add_argument("--root", default=None, help="--prepare: the dataset folder")
    data.add_argument(
        "--protocol", default=None, help="--prepare: only this protocol's samples, e.g. bu3dfe-subset1"
    )
    data.add_argument(
        "--cache-root", default=None, help="where --prepare(-synth) renders (default: <output-dir>/cache)"
    )
    data.add_argument("--size", type=int, default=None,
                      help="--prepare(-synth): view size in pixels (default: the config's image size: 48 for "
                      "synth-cpu, 224 for paper)")  # fmt: skip
    data.add_argument(
        "--frames", type=int, default=8, help="--prepare(-synth): frames per 4D dynamic image (default: 8)"
    )
    data.add_argument(
        "--render-workers", type=int, default=1, help="--prepare: rendering processes (default: 1)"
    )
    data.add_argument(
        "--preset", default="medium", help="--prepare-synth: SynthFER-3D difficulty (default: medium)"
    )
    data.add_argument("--task", default=None, choices=sorted(TASKS),
                      help="3d: static scans; 4d: sequences; all: both (default: 3d for SynthFER-3D, a real "
                      "dataset's own kind)")  # fmt: skip
    cv = parser.add_argument_group("cross-validation")
    cv.add_argument("--k", type=int, default=10, help="number of subject folds (default: 10)")
    cv.add_argument("--folds", default=None, help="run only these fold indices, e.g. 0,1,2 (default: all k)")
    cv.add_argument("--fold-seed", type=int, default=0, help="seed of the subject partition (default: 0)")
    cv.add_argument("--variants", default="full,single_view_clip,zero_shot",
                    help=f"comma-separated from {', '.join(VARIANTS)}, or all")  # fmt: skip
    cv.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run"
    )
    cv.add_argument("--report-suffix", default="",
                    help="write results<suffix>.json/.md, so reports over different fold subsets sit side by side")  # fmt: skip
    cv.add_argument("--launch", default=None,
                    help="run each fold through train/launch.py with these accelerate arguments, e.g. "
                    "'--multi_gpu --num_processes 8'")  # fmt: skip
    return parser


def default_view_size(config: dict) -> int:
    """The side the model sees: a from-scratch config's image size, else 224 (CLIP ViT-B/16 and L/14)."""
    m = config["model"]
    return int(m["clip"]["image_size"]) if m["init"] == "scratch" else 224


def _cache_dir(args, out: Path) -> Path:
    """The render cache the folds run on: given, or prepared now (SynthFER-3D or a dataset's folder)."""
    if sum(bool(x) for x in (args.cache_dir, args.prepare_synth, args.prepare)) != 1:
        raise SystemExit("give one of --cache-dir, --prepare-synth SUBJECTS or --prepare DATASET --root DIR")
    if args.cache_dir:
        return Path(args.cache_dir)
    size = args.size or default_view_size(load_config(args.config, args.set))
    cache_root = Path(args.cache_root) if args.cache_root else out / "cache"
    if args.prepare_synth:
        return prepare_synth_cache(cache_root, args.prepare_synth, size, args.frames, args.preset, seed=0)
    if not args.root:
        raise SystemExit(f"--prepare {args.prepare} needs --root (the dataset folder)")
    return prepare_dataset_cache(
        cache_root, args.prepare, Path(args.root), args.protocol, size, args.frames, args.render_workers
    )


def _environments(runs: dict[str, list[dict]]) -> list[dict]:
    """Every distinct library/hardware setting the runs were made with (one, unless runs were moved)."""
    distinct = {
        json.dumps(r.get("environment"), sort_keys=True): r.get("environment")
        for rs in runs.values()
        for r in rs
        if r.get("environment")
    }
    return [dict(e) for e in distinct.values()]


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    out = output_folder(args.output_dir)
    variants = (
        list(VARIANTS)
        if args.variants == "all"
        else [v.strip() for v in args.variants.split(",") if v.strip()]
    )
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")

    cache_dir = _cache_dir(args, out)
    dataset, task, datasets = resolve_task(cache_dir, args.task)
    datasets_override = "null" if datasets is None else "[" + ",".join(datasets) + "]"
    common = [f"data.cache_dir={cache_dir}", f"data.datasets={datasets_override}", *args.set]
    config = load_config(args.config, common)
    folds = make_folds(cache_dir, config, datasets, args.k, args.fold_seed, out / "folds.json")
    common.append(f"data.folds_file={out / 'folds.json'}")
    fold_ids = [int(f) for f in args.folds.split(",")] if args.folds else list(range(len(folds)))

    label_names = config["data"]["labels"]
    runs: dict[str, list[dict]] = {}
    run_dirs: dict[str, list[Path]] = {}
    for variant in variants:
        for fold in fold_ids:
            run_dir = out / variant / f"fold_{fold:02d}"
            runs.setdefault(variant, []).append(run_one(args, variant, fold, run_dir, common))
            run_dirs.setdefault(variant, []).append(run_dir)

    summary = summarise(runs, label_names)
    report = {
        "config": args.config,
        "dataset": dataset,
        "task": task,
        "cache_dir": str(cache_dir),
        "k": len(folds),
        "folds_run": fold_ids,
        "fold_lists": [f.to_dict() for f in folds],
        "overrides": common,
        "variant_overrides": {v: VARIANTS[v] for v in variants},
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "variants": summary,
        "environments": _environments(runs),
    }
    (out / f"results{args.report_suffix}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_table(summary, label_names)
    title = DATASET_TITLE.get(dataset, dataset)
    header = f"{title} cross-validation: config `{args.config}`, task `{task}`, folds {fold_ids} of k={len(folds)}\n\n"
    (out / f"results{args.report_suffix}.md").write_text(header + table)
    for variant, s in summary.items():
        title = f"{variant}: {s['pooled_accuracy']:.3f} accuracy over {s['num_test_samples']} test samples"
        plot_confusion(
            s["confusion_matrix"], label_names, title, out / f"confusion_{variant}{args.report_suffix}.png"
        )
    plot_curves(
        {v: d for v, d in run_dirs.items() if v != "zero_shot"}, out / f"curves{args.report_suffix}.png"
    )
    print(table)
    return report


if __name__ == "__main__":
    if os.environ.get("OMP_NUM_THREADS") is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1)))
    main()
