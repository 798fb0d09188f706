"""Time SynthFER-3D generated and rendered straight into the render cache (no mesh files).

    python bench/synth.py                                  # the full sets: 100 x 25 scans + 100 x 6 sequences
    python bench/synth.py --subjects 10 --workers 2        # a smaller run, two rendering processes
    python bench/synth.py --face-model both --subjects 20 --neutral   # v2: both face models, AUs, neutral 4D
    python bench/synth.py --difficulty                     # is the task non-trivial but learnable, per preset?

Prints the time of the BU-3DFE-sized static set and of the BU-4DFE-sized 4D set (each sequence rendered as a
dynamic image from --frames evenly spread frames), generation alone per sample, and the total against the
30-minute budget of issue 4, samples per second and the caches' size on disk. The caches go to --out
(default: a folder under /tmp, removed unless --keep). --face-model, --expressions, --sfm-binding, --ict-binding, --neutral, --compound and
--realism choose the SynthFER-3D v2 set as `python -m affectvlm.data prepare` does.

--difficulty instead renders 30 subjects per preset as 64 px depth maps and reports the subject-independent
5-fold accuracy of a deliberately weak classifier (an MLP on the pooled pixels) on the six emotions: well
above chance (16.7 %) but far from perfect, and falling from easy to hard.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--subjects", type=int, default=100, help="subjects (default 100: BU-3DFE / BU-4DFE sized)"
    )
    p.add_argument("--preset", default="medium", choices=["easy", "medium", "hard"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument(
        "--frames", type=int, default=12, help="frames per sequence for the dynamic image (default 12)"
    )
    p.add_argument("--batch", type=int, default=25, help="static scans per render call (default 25)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--kind", default="both", choices=["3d", "4d", "both"])
    p.add_argument("--out", help="parent folder for the caches (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the caches")
    p.add_argument("--sfm-dir", default=None)
    p.add_argument("--ict-dir", default=None)
    p.add_argument("--face-model", default="sfm", choices=["sfm", "ict", "both"])
    p.add_argument("--expressions", default="blendshapes", choices=["blendshapes", "aus", "mixed"])
    p.add_argument("--sfm-binding", default="blend", choices=["blend", "transfer"])
    p.add_argument("--ict-binding", default="aus", choices=["aus", "blend"])
    p.add_argument("--neutral", action="store_true", help="a neutral sequence per subject too")
    p.add_argument("--compound", action="store_true", help="the compound expressions too (evaluation only)")
    p.add_argument("--realism", default="off", choices=["off", "on", "surface", "scene"])
    p.add_argument("--difficulty", action="store_true", help="run the per-preset learnability check instead")
    args = p.parse_args(argv)
    if args.difficulty:
        return difficulty(args)

    import torch

    from affectvlm.data.cache import RenderCacheDataset, RenderSettings, prepare_cache
    from affectvlm.data.synth import EMOTIONS, SynthConfig, SynthFER3D, realism_preset

    config = SynthConfig.preset(
        args.preset, seed=args.seed, num_subjects=args.subjects, face_model=args.face_model,
        expressions=args.expressions, sfm_binding=args.sfm_binding, ict_binding=args.ict_binding, neutral=args.neutral, compound=args.compound, realism=realism_preset(args.realism),
    )  # fmt: skip
    settings = RenderSettings(size=args.size, frames=args.frames, batch=args.batch)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="affectvlm-synth-bench-"))
    print(f"SynthFER-3D {args.preset}, face model {args.face_model} ({args.expressions}, SFM binding {args.sfm_binding}, ICT binding {args.ict_binding}), "
          f"{args.subjects} subjects, "
          f"{args.size}px, {args.frames} frames/sequence, neutral {args.neutral}, compound {args.compound}, "
          f"realism {args.realism}, workers {args.workers}, torch threads {torch.get_num_threads()}, out {out}")  # fmt: skip

    gen = SynthFER3D(config, args.sfm_dir, args.ict_dir)
    t0 = time.perf_counter()
    for i in range(50):
        gen.scan(i % args.subjects, EMOTIONS[i % 6], 1 + i % 4)
    per_scan = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for i in range(6):
        gen.sequence(i % args.subjects, EMOTIONS[i], num_frames=args.frames)
    per_seq = (time.perf_counter() - t0) / 6
    print(
        f"generation alone: {per_scan * 1e3:.1f} ms per scan, {per_seq * 1e3:.1f} ms per sequence of {args.frames} frames"
    )

    total, times, count, size = 0.0, {}, 0, 0
    for kind in ["3d", "4d"] if args.kind == "both" else [args.kind]:
        t0 = time.perf_counter()
        folder = prepare_cache(
            "synth", out=out / kind, settings=settings, synth_config=config, synth_kind=kind, sfm_dir=args.sfm_dir,
            ict_dir=args.ict_dir, workers=args.workers,
        )  # fmt: skip
        dt = time.perf_counter() - t0
        n = len(RenderCacheDataset(folder))
        mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
        times[kind], total, count, size = dt, total + dt, count + n, size + mb
        counts = RenderCacheDataset(folder).report().get("counts", {})
        print(f"{kind}: {n} samples generated and rendered in {dt:.0f} s ({n / dt:.2f} samples/s), {mb:.0f} MB, "
              f"face models {counts.get('face_model')}, realism {counts.get('realism')} -> {folder}")  # fmt: skip
    print(f"total: {count} samples in {total:.0f} s = {total / 60:.1f} min ({count / total:.2f} samples/s; budget 30 min), "
          f"caches {size:.0f} MB: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))  # fmt: skip
    if not args.keep and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


def difficulty(args) -> int:
    """Subject-independent accuracy of a weak pixel MLP on each preset (see the module docstring)."""
    import numpy as np
    import torch

    from affectvlm.data.cache import RenderCacheDataset, RenderSettings, prepare_cache
    from affectvlm.data.folds import subject_folds
    from affectvlm.data.synth import EMOTIONS, SynthConfig

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="affectvlm-synth-difficulty-"))
    for preset in ("easy", "medium", "hard"):
        config = SynthConfig.preset(preset, seed=args.seed, num_subjects=30)
        folder = prepare_cache(
            "synth", out=out, settings=RenderSettings(size=64, mode="depth"), synth_config=config, synth_kind="3d",
            sfm_dir=args.sfm_dir, progress=False,
        )  # fmt: skip
        ds = RenderCacheDataset(folder, labels=EMOTIONS)
        x = torch.from_numpy(ds.read(range(len(ds)))[..., 0]).float() / 255  # (N, V, 64, 64) depth
        x = torch.nn.functional.avg_pool2d(x, 2).flatten(1)
        y = torch.as_tensor([EMOTIONS.index(e["label"]) for e in ds.entries])
        subjects = np.array([e["subject"] for e in ds.entries])
        accs = []
        for fold in subject_folds(list(subjects), k=5, seed=0, val_fraction=0):
            tr, te = (
                torch.from_numpy(np.isin(subjects, fold.train)),
                torch.from_numpy(np.isin(subjects, fold.test)),
            )
            mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-3
            torch.manual_seed(0)
            mlp = torch.nn.Sequential(
                torch.nn.Linear(x.shape[1], 256),
                torch.nn.ReLU(),
                torch.nn.Dropout(0.3),
                torch.nn.Linear(256, 6),
            )
            opt = torch.optim.AdamW(mlp.parameters(), 1e-3, weight_decay=0.05)
            for _ in range(150):
                mlp.train()
                opt.zero_grad()
                torch.nn.functional.cross_entropy(mlp((x[tr] - mu) / sd), y[tr]).backward()
                opt.step()
            mlp.eval()
            with torch.no_grad():
                accs.append((mlp((x[te] - mu) / sd).argmax(1) == y[te]).float().mean().item())
        print(
            f"{preset}: subject-independent 5-fold accuracy {np.mean(accs):.3f} (folds {np.round(accs, 3).tolist()}; chance 0.167)"
        )
    if not args.keep and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
