"""End-to-end prediction speed: scan file -> load, normalise, render three views, encode, score.

    AFFECTVLM_SFM_DIR=../shared/sfm python bench/predict.py
    python bench/predict.py --scans 20 --skip-demo
    python bench/predict.py --scans 4 --skip-random --no-baseline   # the shipped models, start-up included

Timed: every checkpoint shipped in checkpoints/ (first what loading it and encoding the default prompts takes,
as each CLI call and each start of the app does, with the prompt features saved beside it and without; one with a
companion, `affectvlm.companion`, also without it), in fp32 and in bf16 (bf16 runs natively on
CPUs with AMX or AVX512-BF16), and a ViT-B/32-sized random AffectVLM.
The baseline is what a user would otherwise do with the same rendered views: the transformers
`zero-shot-image-classification` pipeline with a CLIP of the same size, called once per view with the same
prompts (it re-encodes the prompts on every call), its scores averaged over the views.
The scans are the Surrey Face Model's mean face with each expression, written as OBJ files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from affectvlm import AffectVLMModel
from affectvlm.predictor import AffectVLMPredictor, shipped_models
from affectvlm.scan import Scan, write_obj
from affectvlm.testing import tiny_config, tiny_processor, vit_b32_clip_config

LABELS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
TEMPLATE = "a photo of a face showing {}."


def make_scans(folder: Path, count: int) -> list[Path]:
    sfm = Path(os.environ.get("AFFECTVLM_SFM_DIR", Path(__file__).resolve().parents[2] / "shared" / "sfm"))
    data = np.load(sfm / "sfm_3448.npz")
    paths = []
    for i in range(count):
        vertices = data["mean"] + (0.5 + 0.5 * (i % 3) / 2) * data["expressions"][i % 6]
        path = folder / f"scan_{i:03d}.obj"
        write_obj(path, Scan(vertices=vertices, faces=data["triangles"].astype(np.int64)))
        paths.append(path)
    return paths


def time_per_scan(fn, paths: list[Path], warmup: int = 2) -> list[float]:
    for p in paths[:warmup]:
        fn(p)
    times = []
    for p in paths:
        start = time.perf_counter()
        fn(p)
        times.append(time.perf_counter() - start)
    return times


def pipeline_route(predictor: AffectVLMPredictor):
    """The transformers zero-shot pipeline on the same CLIP, once per rendered view, same prompts."""
    from PIL import Image
    from transformers import pipeline

    clip = predictor.model.clip
    if clip.vision_model is None:
        raise SystemExit("the baseline needs a CLIP vision tower")
    pipe = pipeline(
        "zero-shot-image-classification",
        model=clip,
        tokenizer=predictor.processor.tokenizer,
        image_processor=predictor.processor.image_processor,
        device=predictor.model.device,
    )

    def run(path: Path):
        views = predictor.render_scan(path)  # same load + normalise + render as AffectVLM
        per_view = [
            pipe(Image.fromarray(view), candidate_labels=LABELS, hypothesis_template=TEMPLATE) for view in views
        ]
        scores = {label: 0.0 for label in LABELS}
        for result in per_view:
            for item in result:
                scores[item["label"]] += item["score"] / len(per_view)
        return scores

    return run


def affectvlm_route(predictor: AffectVLMPredictor):
    labels = {label: [TEMPLATE.format(label)] for label in LABELS}
    predictor.class_embeddings(labels)  # cached, as in the app: once per label set

    def run(path: Path):
        return predictor(scan=str(path), labels=labels).scores()

    return run


def stage_breakdown(predictor: AffectVLMPredictor, path: Path) -> dict[str, float]:
    """One scan through the predictor's own path, stage by stage (load, normalise + render, encode + score)."""
    t0 = time.perf_counter()
    scan = predictor.load_scan(path)
    t1 = time.perf_counter()
    views = predictor.recipe.views_of([scan])
    t2 = time.perf_counter()
    inputs = predictor.processor(images=views)
    _, class_embeds = predictor.class_embeddings({label: [TEMPLATE.format(label)] for label in LABELS})
    predictor.model.score(inputs["pixel_values"], class_embeds)
    t3 = time.perf_counter()
    return {"load": t1 - t0, "normalise+render": t2 - t1, "encode+score": t3 - t2}


def encoder_throughput(predictor: AffectVLMPredictor, batch: int = 32, repeats: int = 5) -> float:
    """Samples (three views each) per second through the view encoder and scoring alone, batched."""
    size = predictor.processor.image_size[0]
    views = torch.randint(0, 255, (batch, len(predictor.processor.view_names), size, size, 3), dtype=torch.uint8)
    pixel_values = predictor.processor(images=views)["pixel_values"]
    _, class_embeds = predictor.class_embeddings({label: [TEMPLATE.format(label)] for label in LABELS})
    predictor.model.score(pixel_values, class_embeds)
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.model.score(pixel_values, class_embeds)
    return batch * repeats / (time.perf_counter() - start)


def startup(name: str) -> None:
    """What every CLI call and each start of the app pays before the first scan: loading the model and encoding
    what the default path scores against (`warm_up`), with the checkpoint's saved prompt features and without."""
    for saved in (True, False):
        start = time.perf_counter()
        AffectVLMPredictor.from_pretrained(name, prompt_features=saved).warm_up()
        how = "with its saved prompt features" if saved else "encoding every prompt   "
        print(f"  load + warm-up, {how}: {time.perf_counter() - start:6.1f} s")


def report(name: str, predictor: AffectVLMPredictor, paths: list[Path], baseline: bool) -> None:
    ours = time_per_scan(affectvlm_route(predictor), paths)
    med = statistics.median(ours)
    print(f"\n{name}")
    stages = stage_breakdown(predictor, paths[0])
    print("  stages (one scan): " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in stages.items()))
    print(f"  AffectVLM end to end:            median {med * 1e3:8.1f} ms/scan  ({1 / med:6.2f} scans/s)")
    print(f"  view encoder + scoring, batch 32: {encoder_throughput(predictor):8.1f} samples/s")
    if baseline and predictor.model.clip.vision_model is None:
        print("  (no CLIP vision tower in this model: the zero-shot pipeline baseline does not apply)")
    elif baseline:
        theirs = time_per_scan(pipeline_route(predictor), paths)
        med_b = statistics.median(theirs)
        print(f"  zero-shot pipeline, per view:    median {med_b * 1e3:8.1f} ms/scan  ({1 / med_b:6.2f} scans/s)")
        print(f"  throughput ratio (AffectVLM / pipeline): {med_b / med:.2f}x   (target >= 3x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=12, help="scans timed per route (default 12)")
    parser.add_argument("--skip-demo", action="store_true", help="skip the shipped checkpoints")
    parser.add_argument("--models", default=None, help="comma-separated shipped checkpoints (default: all)")
    parser.add_argument("--skip-random", action="store_true", help="skip the ViT-B/32-sized random model")
    parser.add_argument("--no-baseline", action="store_true", help="skip the zero-shot pipeline baseline")
    parser.add_argument("--skip-startup", action="store_true", help="skip timing load + warm-up of the shipped models")
    args = parser.parse_args()

    torch.manual_seed(0)
    print(f"CPU threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        paths = make_scans(Path(tmp), args.scans)
        names = [] if args.skip_demo else (args.models.split(",") if args.models else shipped_models())
        for name in names:
            if not args.skip_startup:
                print(f"\nshipped checkpoint {name}, start-up (serving dtype)")
                startup(name)
            for dtype in (torch.float32, torch.bfloat16):
                predictor = AffectVLMPredictor.from_pretrained(name, device="cpu", dtype=dtype)
                report(f"shipped checkpoint {name}, {str(dtype).removeprefix('torch.')}", predictor, paths,
                       baseline=not args.no_baseline)  # fmt: skip
                if predictor.companion is not None:  # what its companion (normal maps of each scan too) costs
                    alone = AffectVLMPredictor.from_pretrained(name, device="cpu", dtype=dtype, companion=False)
                    report(f"  the same without its companion, {str(dtype).removeprefix('torch.')}", alone, paths,
                           baseline=False)  # fmt: skip
        if not names:
            print("\n(no shipped checkpoint timed)")
        if args.skip_random:
            return
        model = AffectVLMModel(tiny_config(clip_config=vit_b32_clip_config())).eval()
        predictor = AffectVLMPredictor(model, tiny_processor(image_size=224), source="ViT-B/32-sized random")
        report("ViT-B/32-sized random AffectVLM (224x224 views)", predictor, paths, baseline=not args.no_baseline)


if __name__ == "__main__":
    main()
