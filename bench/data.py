"""How many samples per second a training loop reads from a render cache.

    python bench/data.py --cache /tmp/cache/synth-<hash>          # a prepared cache
    python bench/data.py --fake 4000                               # a throwaway cache of random views in /tmp

Reads shuffled batches through a torch DataLoader exactly as training does (batched ``__getitems__``, one
memmap read per shard), touches every batch (sums a byte per image so that nothing is lazily skipped) and
prints samples/s. Target: >= 2,000 samples of three 224x224 views per second. The first pass may read from
disk; later passes from the page cache (what a multi-epoch run sees): both are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fake_cache(folder: Path, n: int, views: int, size: int, shard_size: int) -> Path:
    """Write a cache of `n` random samples with the real shard/index format (no rendering)."""
    from affectvlm.data.cache import _write_index, _write_shard, label_vocabulary

    rng = np.random.default_rng(0)
    labels = label_vocabulary([])
    shards = 0
    for start in range(0, n, shard_size):
        rows = min(shard_size, n - start)
        images = list(rng.integers(0, 256, (rows, views, size, size, 3), dtype=np.uint8))
        entries = [
            {"key": f"fake/{start + r}", "label": labels[(start + r) % 7], "subject": f"S{(start + r) % 50:03d}",
             "intensity": None, "dataset": "fake", "sequence": False, "metadata": {}, "shard": shards, "row": r}
            for r in range(rows)
        ]  # fmt: skip
        _write_shard(folder, shards, images, entries, [])
        shards += 1
    _write_index(folder, shards, labels)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", help="a prepared cache folder (<out>/<dataset>-<hash>)")
    p.add_argument("--fake", type=int, default=0, help="instead, write a throwaway cache of this many random samples")
    p.add_argument("--views", type=int, default=3, help="--fake: views per sample (default 3)")
    p.add_argument("--size", type=int, default=224, help="--fake: image side (default 224)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0: the main process)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the cache (default 3)")
    args = p.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader

    from affectvlm.data.cache import RenderCacheDataset

    tmp = None
    if args.cache:
        folder = Path(args.cache)
    elif args.fake:
        tmp = tempfile.TemporaryDirectory(prefix="affectvlm-bench-")
        t0 = time.perf_counter()
        folder = fake_cache(Path(tmp.name), args.fake, args.views, args.size, 250)
        print(f"wrote a fake cache of {args.fake} samples in {time.perf_counter() - t0:.1f} s: {folder}")
    else:
        p.error("give --cache or --fake N")
    ds = RenderCacheDataset(folder)
    loader = DataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, collate_fn=RenderCacheDataset.collate,
        generator=torch.Generator().manual_seed(0), persistent_workers=args.workers > 0,
    )  # fmt: skip
    shape = tuple(ds[0]["pixel_values"].shape)
    print(f"{len(ds)} samples of {shape} uint8, batch {args.batch_size}, workers {args.workers}, torch threads {torch.get_num_threads()}")
    for epoch in range(args.epochs):
        t0, n, check = time.perf_counter(), 0, 0
        for batch in loader:
            x = batch["pixel_values"]
            check += int(x[:, :, 0, 0, 0].sum()) + int(batch["labels"].sum())
            n += len(x)
        dt = time.perf_counter() - t0
        print(f"epoch {epoch}: {n} samples in {dt:.2f} s = {n / dt:,.0f} samples/s ({n * np.prod(shape) / dt / 1e9:.2f} GB/s)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
