"""The paper's view encoder trained and scored on a lent GPU in a fixed time (docs/RESULTS.md, "The paper's view
encoder on a lent GPU").

CLIP's ViT-B/16 at 224 px from random weights (train/configs/paper-scratch.yaml: no pretrained CLIP can be had
offline) against the default's frozen text encoder. In `--minutes` of wall clock, all of it planned ahead:
1. render SynthFER-3D caches at 224 px on the CPU cores, held-out identities first (seed 21, 40 subjects,
   realism on: the held-out set of docs/RESULTS.md), then training chunks of new identities (seeds 8 to 13:
   120 in 3D, 60 in 4D a chunk; both face models and recipes, sampled realism) for as long as the plan
   allows; a chunk not finished by then is left out;
2. train three runs side by side on the one GPU, each fitted to the same minutes (`train.max_minutes`): both
   face models; the SFM alone; the ICT FaceKit alone (the cross-face-model protocol);
3. score each on the held-out identities (train/evaluate.py on the GPU) and print one table.
bench/gpu.sh takes the speed and MFU figures: run it before or after this, not beside it (on an H200 machine
its CPU steps slowed these renders threefold). A ViT from random weights needs thousands of steps: with a
lease of minutes, render the caches ahead and give the training most of the time.

    python bench/gpu_paper.py --out runs/gpu-paper --minutes 9.5      # a CUDA GPU; SFM and ICT FaceKit files
    python bench/gpu_paper.py --out /tmp/gp --minutes 4 --quick      # the whole flow on a CPU, tiny and fast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELD = "held21"
# name, kind, seed, subjects, recipe: the held-out set first, then training chunks in the order they are kept
# (chunks of new identities, so whatever the time allows is a whole set of subjects).
CACHES = [(f"{HELD}_3d", "3d", 21, 40, "held"), (f"{HELD}_4d", "4d", 21, 40, "held")] + [
    (f"s{seed}_{kind}", kind, seed, subjects, "train")
    for seed in range(8, 14)
    for kind, subjects in (("3d", 120), ("4d", 60))
]
RECIPES = {
    "held": ["--realism", "on"],
    "train": ["--realism", "sampled", "--expressions", "mixed", "--sfm-binding", "transfer"],
}
RUNS = {"both": None, "sfm_only": "sfm", "ict_only": "ict"}
QUICK_MODEL = [  # --quick: a two-layer ViT on the same 224 px views, so a CPU gets through the flow in minutes
    (
        "model.clip={hidden_size: 64, num_layers: 2, num_heads: 2, image_size: 224, patch_size: 32, "
        "projection_dim: 64, max_position_embeddings: 77}"
    ),
    "train.batch_size=8", "train.eval_every=20", "train.eval_batch_size=16", "train.log_every=2",
    "train.warmup_steps=5", "data.k=3", "data.val_fraction=0.3",
]  # fmt: skip


def log(msg: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {msg}", flush=True)


def run_logged(cmd: list[str], logfile: Path, timeout: float, env: dict) -> int:
    """Run `cmd` with its output in `logfile`; killed (-9) when `timeout` seconds pass."""
    with open(logfile, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            f.write(f"killed after {timeout:.0f} s\n")
            return -9


def cache_dir(out: Path, name: str) -> Path | None:
    """The finished cache folder of `name` (one with an index), else None."""
    found = sorted((out / "caches" / name).glob("synth*-*/index.json"))
    return found[0].parent if found else None


def render_chain(names: list[str], args, env: dict, until: float, t0: float) -> None:
    """Render caches one after another: the held-out ones and the first 3D training chunk may run late, the
    other training chunks stop at `until` (a chunk cut short is left out)."""
    spec, first = {c[0]: c for c in CACHES}, True
    for name in names:
        _, kind, seed, subjects, recipe = spec[name]
        subjects = 6 if args.quick else subjects
        end = args.deadline if recipe == "held" else until
        if recipe == "train" and first and kind == "3d":  # one training chunk at least, even past the plan
            end, first = args.deadline - args.eval_s - args.finish_s - args.train_min_s / 3, False
        limit = end - time.monotonic()
        if limit < 5:
            log(f"render {name}: no time left, skipped", t0)
            continue
        cmd = [sys.executable, "-m", "affectvlm.data", "prepare", "--dataset", "synth", "--face-model", "both",
               "--kind", kind, "--neutral", "--frames", "8", "--size", "224", "--shard-size", "10",
               "--workers", str(args.workers // 2 or 1), "--subjects", str(subjects), "--seed", str(seed),
               *RECIPES[recipe], "--out", str(args.out / "caches" / name)]  # fmt: skip
        code = run_logged(cmd, args.out / "render.log", limit, env)
        log(f"render {name}: exit {code}, {'done' if cache_dir(args.out, name) else 'NOT finished'}", t0)


def render(args, env: dict, t0: float) -> list[Path]:
    """Two chains side by side (3D scans, 4D sequences); returns the finished training caches."""
    until = args.deadline - args.eval_s - args.finish_s - args.train_min_s
    chains = [[c[0] for c in CACHES if c[1] == kind] for kind in ("3d", "4d")]
    threads = [in_thread(render_chain, c, args, env, until, t0) for c in chains]
    for t in threads:
        t.join()
    return [d for c in CACHES if c[4] == "train" and (d := cache_dir(args.out, c[0]))]


def in_thread(fn, *fn_args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=fn_args)
    thread.start()
    return thread


def train_one(name: str, cmd: list[str], args, env: dict, t0: float) -> None:
    code = run_logged(cmd, args.out / f"train_{name}.log", args.deadline - args.eval_s - time.monotonic(), env)
    log(f"train {name}: exit {code}", t0)


def train(args, env: dict, caches: list[Path], t0: float) -> dict:
    """The three runs side by side, each fitted to the minutes left; returns their output folders."""
    minutes = (args.deadline - args.eval_s - args.finish_s - time.monotonic()) / 60
    log(f"training 3 runs for {minutes:.2f} min each on {[c.parent.name for c in caches]}", t0)
    threads, folders = [], {}
    for name, face_model in RUNS.items():
        folders[name] = args.out / "runs" / name
        sets = [f"data.cache_dir=[{','.join(map(str, caches))}]", f"train.max_minutes={minutes:.3f}",
                f"model.affectvlm.text_model_name_or_path={args.text_model}"]  # fmt: skip
        if face_model:
            sets.append(f"data.face_models=[{face_model}]")
        if args.quick:
            sets += QUICK_MODEL
        cmd = [sys.executable, "train/train.py", "--config", "paper-scratch", "--output-dir", str(folders[name]),
               "--no-progress"] + [a for s in sets for a in ("--set", s)]  # fmt: skip
        threads.append(in_thread(train_one, name, cmd, args, env, t0))
    for thread in threads:
        thread.join()
    return folders


def evaluate(args, env: dict, folders: dict, t0: float) -> dict:
    """train/evaluate.py on the held-out caches for every run that saved a model, side by side."""
    held = [f"{name}={d}" for name in (f"{HELD}_3d", f"{HELD}_4d") if (d := cache_dir(args.out, name))]
    threads = {}
    for name, folder in folders.items():
        if not (folder / "model" / "config.json").is_file():
            log(f"evaluate {name}: no model saved", t0)
            continue
        cmd = [sys.executable, "train/evaluate.py", "--model", str(folder / "model"), "--device", args.device,
               "--out", str(args.out / f"eval_{name}.json")] + [a for h in held for a in ("--cache", h)]
        threads[name] = in_thread(run_logged, cmd, args.out / f"eval_{name}.log", args.deadline - time.monotonic(), env)
    for t in threads.values():
        t.join()
    return {name: json.loads(p.read_text()) for name in folders if (p := args.out / f"eval_{name}.json").is_file()}


def summary(reports: dict, folders: dict) -> list[dict]:
    rows = []
    for name, folder in folders.items():
        row = {"run": name}
        res = folder / "results.json"
        if res.is_file():
            r = json.loads(res.read_text())
            row.update(steps=r.get("steps"), samples_per_s=r.get("train_samples_per_s"),
                       train_samples=r.get("num_train_samples"), selected_step=(r.get("selected") or {}).get("step"),
                       val_accuracy=(r.get("selected") or {}).get("accuracy"))  # fmt: skip
        for cache, rep in reports.get(name, {}).get("caches", {}).items():
            kind = cache.rsplit("_", 1)[1]
            for face_model in ("sfm", "ict", "both"):
                cell = rep["emotions"].get(f"{face_model}/{kind}", {})
                row[f"{face_model}_{kind}"] = cell.get("accuracy")
                if face_model == "both" and cell.get("neutral_recall") is not None:
                    row[f"neutral_{kind}"] = cell["neutral_recall"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for caches, runs, logs and summary.json")
    p.add_argument("--minutes", type=float, default=9.5, help="wall-clock budget of the whole flow")
    p.add_argument("--workers", type=int, default=max(2, (os.cpu_count() or 4) - 2), help="render processes")
    p.add_argument("--device", default="cuda", help="where evaluate.py embeds the views")
    p.add_argument("--text-model", default="sentence-transformers/all-MiniLM-L6-v2",
                   help="the text encoder (a Hub id, an installed package's copy, or a folder)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="6 subjects a cache and a 2-layer ViT: the flow on a CPU")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    args.deadline = t0 + 60 * args.minutes
    # reserves (s): scoring at the end; a run's start (model, data) and end (test split, saving); least training
    args.eval_s, args.finish_s, args.train_min_s = (60, 90, 60) if args.quick else (75, 60, 180)
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1" if args.quick else "2", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    caches = render(args, env, t0)
    if not caches:
        log("no training cache finished: nothing to train", t0)
        return []
    folders = train(args, env, caches, t0)
    rows = summary(evaluate(args, env, folders, t0), folders)
    (args.out / "summary.json").write_text(json.dumps({"caches": [str(c) for c in caches], "runs": rows}, indent=1))
    for row in rows:
        log(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), t0)
    return rows


if __name__ == "__main__":
    main()
