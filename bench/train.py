"""Training speed: samples per second (three views) through the real training step, and model-FLOPs utilisation.

    python bench/train.py                                   # synth-cpu config on this CPU
    python bench/train.py --config synth-cpu --cache /tmp/cache/synthboth-<hash>   # also time the cache loader
    python bench/train.py --device cuda --config paper      # ViT-B/16, 224 px, bf16; MFU vs --peak-tflops

One step is exactly what train/train.py runs per micro-batch: mixed-view augmentation, view normalisation,
this step's prompts (tokenised), forward, the AffectVLM loss, backward, gradient clipping, AdamW. Inputs are
random uint8 views held in memory, so the number is the model's speed; with `--cache`, the data loader is
timed on its own and compared (it must deliver more samples/s than the step consumes, or it is the
bottleneck). FLOPs per step are counted once with torch's FlopCounterMode (matmuls and convolutions,
forward + backward); MFU = FLOPs/s / peak. The paper config starts from `openai/clip-vit-base-patch16`
(downloaded); `--random-init` builds the same architecture with random weights (no download).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train.config import load_config  # noqa: E402
from train.train import (  # noqa: E402
    PromptSource,
    TrainModule,
    _mixed_precision,
    build_augment,
    build_model_and_processor,
    model_inputs,
    param_groups,
)


def random_batch(batch: int, views: int, size: int, num_classes: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    meta = [{"gender": "female", "age": 30, "ethnicity": "WH", "intensity": 1 + i % 4} for i in range(batch)]
    return {
        "views": torch.randint(0, 256, (batch, views, size, size, 3), generator=g, dtype=torch.uint8),
        "view_mask": torch.ones(batch, views, dtype=torch.bool),
        "labels": torch.randint(0, num_classes, (batch,), generator=g),
        "metadata": meta,
    }


def build(config: dict, device: torch.device, random_init: bool):
    if random_init and config["model"]["init"] == "clip":
        # Same architecture as the pretrained checkpoint, random weights: a speed test needs no download.
        from affectvlm import AffectVLMConfig, AffectVLMModel
        from affectvlm.testing import tiny_processor, vit_b32_clip_config

        # ViT-B/32's config with the offline tokenizer's vocabulary and special tokens, at patch 16: ViT-B/16.
        clip_config = vit_b32_clip_config()
        clip_config.vision_config.patch_size = 16
        d = config["data"]
        model = AffectVLMModel(
            AffectVLMConfig(
                clip_config=clip_config,
                label_names=d["labels"],
                view_names=d["views"],
                num_views=len(d["views"]),
            )
        )
        processor = tiny_processor(image_size=224, view_names=d["views"])
    else:
        model, processor = build_model_and_processor(config)
    return TrainModule(model).to(device), processor


def _median_ms(fn, repeats: int, sync, warmup: int = 2) -> float:
    """Median wall time of `fn()` in ms, the device synchronised after each call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=None, help="training config (default: synth-cpu on CPU, paper on CUDA)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default: 8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=None,
        help="bf16 autocast (default: on CUDA, and on CPUs with AMX or AVX512-BF16)",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s for MFU (H100 SXM: 989)"
    )
    parser.add_argument(
        "--random-init", action="store_true", help="paper config: random weights, no download"
    )
    parser.add_argument("--cache", default=None, help="a render cache: also time the data loader over it")
    parser.add_argument("--workers", type=int, default=None, help="data loader workers for --cache")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--inputs-only", action="store_true",
        help="time only the CPU-side step inputs (prompt drawing and tokenising; with augmentation and "
        "normalisation), no model step: e.g. the paper setting's batch-64 prompts on a CPU",
    )  # fmt: skip
    return parser


def main() -> None:
    args = _parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = args.config or ("paper" if device.type == "cuda" else "synth-cpu")
    config = load_config(name, args.set)
    bf16 = args.bf16 if args.bf16 is not None else _mixed_precision("auto") == "bf16"
    torch.manual_seed(0)
    module, processor = build(config, device, args.random_init)
    d = config["data"]
    batch_size = args.batch or config["train"]["batch_size"]
    prompts = PromptSource(config, d["labels"], d["views"], processor.tokenizer, module.model.max_text_length)
    augment = build_augment(config, d["views"]).train()
    batch = random_batch(batch_size, len(d["views"]), processor.image_size[0], len(d["labels"]))
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    rows = slice(0, batch_size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def inputs():
        return model_inputs(batch, augment, processor, prompts, batch_size, rows, 1, device)

    if args.inputs_only:
        prompt_ms = _median_ms(
            lambda: prompts.step_inputs(batch["metadata"], None, rows), max(5, args.steps), sync
        )
        all_ms = _median_ms(inputs, max(3, args.steps), sync)
        n = {"sample": batch_size * len(d["views"]) * len(d["labels"])}.get(prompts.mode, "C x P")
        print(f"config {name}, batch {batch_size}, prompts mode {prompts.mode} ({n} prompts a step), {device}")
        print(f"prompts (draw + tokenise): median {prompt_ms:.1f} ms a step")
        print(f"all inputs (+ augmentation and normalisation on {device}): median {all_ms:.1f} ms a step")
        return
    optimizer = torch.optim.AdamW(param_groups(module, 0.05), lr=1e-5, fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = module(**inputs())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    per_step, flops_per_step = _time_steps(step, args.warmup, args.steps, sync)
    # The input side of a step on its own: augmentation, prompt drawing and tokenising (in `sample` mode
    # B x V x C prompts), part of the step time above.
    prep_ms = _median_ms(inputs, max(3, args.steps), sync, warmup=0)
    samples_per_s = batch_size / per_step
    params = sum(p.numel() for p in module.parameters())
    size = processor.image_size[0]
    print(
        f"config {name}: {params / 1e6:.1f}M parameters, {len(d['views'])} views of {size}x{size}, batch {batch_size}"
    )
    print(
        f"device {device} ({torch.get_num_threads()} CPU threads), bf16 autocast {bf16}, prompts mode {prompts.mode}"
    )
    print(
        f"training step: median {per_step * 1000:.0f} ms over {args.steps} steps -> {samples_per_s:.1f} samples/s"
    )
    print(f"inputs (augmentation, prompts, tokens): median {prep_ms:.1f} ms a step")
    tflops = flops_per_step / per_step / 1e12
    print(f"model FLOPs per step {flops_per_step / 1e9:.1f} GFLOP -> {tflops:.3f} TFLOP/s", end="")
    if device.type == "cuda":
        print(f", MFU {100 * tflops / args.peak_tflops:.1f}% of {args.peak_tflops:g} TFLOP/s peak")
    else:
        print(" (MFU is reported for GPUs only)")
    if args.cache:
        workers = args.workers if args.workers is not None else d["num_workers"]
        _time_loader(args.cache, d, batch_size, workers, samples_per_s)


def _time_steps(step, warmup: int, steps: int, sync) -> tuple[float, int]:
    """(median seconds a training step, model FLOPs a step): one counted step, `warmup` more, `steps` timed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return _median_ms(step, steps, sync, warmup=warmup) / 1000, counter.get_total_flops()


def _time_loader(cache: str, d: dict, batch_size: int, workers: int, samples_per_s: float) -> None:
    """One epoch of the data loader over a render cache, against the training step's rate."""
    from torch.utils.data import DataLoader

    from train.data import CacheViews, EpochBatchSampler, collate_batched

    ds = CacheViews(cache, d["labels"], d["views"], datasets=d["datasets"])
    sampler = EpochBatchSampler(len(ds), batch_size, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batched, num_workers=workers)
    start, n = time.perf_counter(), 0
    for b in loader:
        n += len(b["labels"])
    loader_rate = n / (time.perf_counter() - start)
    verdict = "not the bottleneck" if loader_rate > samples_per_s else "THE BOTTLENECK"
    print(f"data loader ({workers} workers): {loader_rate:.0f} samples/s over {n} samples -> {verdict}")


if __name__ == "__main__":
    main()
