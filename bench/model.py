"""Model speed: forward latency, and zero-shot scoring with cached class embeddings vs re-encoding prompts.

    python bench/model.py                 # ViT-B/32-sized random model, batch 8 x 3 views, CPU
    python bench/model.py --device cuda --batch 64

The model has ViT-B/32's architecture with random weights (no download); the tokenizer is the offline
character-level one, so prompts are longer in tokens than with CLIP's BPE (a pessimistic text cost).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from affectvlm import AffectVLMModel
from affectvlm.testing import tiny_config, tiny_tokenizer, vit_b32_clip_config

LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
TEMPLATES = [
    "a face showing {}",
    "a photo of a {} face",
    "a 3D scan of a face expressing {}",
    "a rendered face with a look of {}",
    "a person feeling {}",
    "the facial expression of {}",
    "a depth map of a face showing {}",
    "someone whose face shows {}",
    "a close-up of a face in {}",
    "an expression of {}",
]


def timeit(fn, repeat: int, warmup: int = 2, sync=lambda: None) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="samples per batch (default 8)")
    parser.add_argument("--views", type=int, default=3, help="views per sample (default 3)")
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights dtype")
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    config = tiny_config(clip_config=vit_b32_clip_config(), num_views=args.views, label_names=LABELS)
    model = AffectVLMModel(config).to(device=device, dtype=dtype).eval()
    tokenizer = tiny_tokenizer()
    prompts = {label: [t.format(label) for t in TEMPLATES] for label in LABELS}
    pixels = torch.randn(args.batch, args.views, 3, 224, 224, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: ViT-B/32-sized AffectVLM, {params:.1f} M parameters, {args.dtype} on {device}, "
          f"{torch.get_num_threads()} threads")

    with torch.inference_mode():
        fwd = timeit(lambda: model(pixels), args.repeat, sync=sync)
        class_embeds = model.encode_prompts(prompts, tokenizer=tokenizer)
        cached = timeit(lambda: model.score(pixels, class_embeds), args.repeat, sync=sync)
        fresh = timeit(lambda: model.score(pixels, model.encode_prompts(prompts, tokenizer=tokenizer)),
                       args.repeat, sync=sync)
        encode = timeit(lambda: model.encode_prompts(prompts, tokenizer=tokenizer), args.repeat, sync=sync)

    def report(name, times):
        ms = [t * 1e3 for t in times]
        print(f"{name:<52} median {statistics.median(ms):8.1f} ms   min {min(ms):8.1f} ms")

    n = args.batch * args.views
    report(f"forward, {args.batch} samples x {args.views} views ({n} images)", fwd)
    report(f"score, cached class embeddings ({len(LABELS)} classes)", cached)
    report(f"score, re-encoding {len(LABELS)} x {len(TEMPLATES)} prompts every call", fresh)
    report(f"encode_prompts alone ({len(LABELS) * len(TEMPLATES)} prompts)", encode)
    speedup = statistics.median(fresh) / statistics.median(cached)
    print(f"caching class embeddings makes score {speedup:.2f}x faster; "
          f"per sample (cached): {statistics.median(cached) * 1e3 / args.batch:.1f} ms")


if __name__ == "__main__":
    main()
