"""Time SynthFER-3D generated and rendered straight into the render cache (no mesh files).

    python bench/synth.py                                  # the full sets: 100 x 25 scans + 100 x 6 sequences
    python bench/synth.py --subjects 10 --workers 2        # a smaller run, two rendering processes

Prints the time of the BU-3DFE-sized static set and of the BU-4DFE-sized 4D set (each sequence rendered as a
dynamic image from --frames evenly spread frames), generation alone per sample, and the total against the
30-minute budget of issue 4. The caches go to --out (default: a folder under /tmp, removed unless --keep).
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
    p.add_argument("--subjects", type=int, default=100, help="subjects (default 100: BU-3DFE / BU-4DFE sized)")
    p.add_argument("--preset", default="medium", choices=["easy", "medium", "hard"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=224, help="image side (default 224)")
    p.add_argument("--frames", type=int, default=12, help="frames per sequence for the dynamic image (default 12)")
    p.add_argument("--batch", type=int, default=25, help="static scans per render call (default 25)")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    p.add_argument("--kind", default="both", choices=["3d", "4d", "both"])
    p.add_argument("--out", help="parent folder for the caches (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the caches")
    p.add_argument("--sfm-dir", default=None)
    args = p.parse_args(argv)

    import torch

    from affectvlm.data.cache import RenderCacheDataset, RenderSettings, prepare_cache
    from affectvlm.data.sfm import load_sfm
    from affectvlm.data.synth import EMOTIONS, SynthConfig, SynthFER3D

    config = SynthConfig.preset(args.preset, seed=args.seed, num_subjects=args.subjects)
    settings = RenderSettings(size=args.size, frames=args.frames, batch=args.batch)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="affectvlm-synth-bench-"))
    print(f"SynthFER-3D {args.preset}, {args.subjects} subjects, {args.size}px, {args.frames} frames/sequence, "
          f"workers {args.workers}, torch threads {torch.get_num_threads()}, out {out}")  # fmt: skip

    gen = SynthFER3D(config, load_sfm(args.sfm_dir))
    t0 = time.perf_counter()
    for i in range(50):
        gen.scan(i % args.subjects, EMOTIONS[i % 6], 1 + i % 4)
    per_scan = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for i in range(6):
        gen.sequence(i % args.subjects, EMOTIONS[i], num_frames=args.frames)
    per_seq = (time.perf_counter() - t0) / 6
    print(f"generation alone: {per_scan * 1e3:.1f} ms per scan, {per_seq * 1e3:.1f} ms per sequence of {args.frames} frames")

    total, times = 0.0, {}
    for kind in (["3d", "4d"] if args.kind == "both" else [args.kind]):
        t0 = time.perf_counter()
        folder = prepare_cache(
            "synth", out=out / kind, settings=settings, synth_config=config, synth_kind=kind, sfm_dir=args.sfm_dir,
            workers=args.workers,
        )  # fmt: skip
        dt = time.perf_counter() - t0
        n = len(RenderCacheDataset(folder))
        times[kind] = dt
        total += dt
        print(f"{kind}: {n} samples generated and rendered in {dt:.0f} s ({n / dt:.1f} samples/s) -> {folder}")
    print(f"total: {total:.0f} s = {total / 60:.1f} min (budget 30 min): " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    if not args.keep and not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
