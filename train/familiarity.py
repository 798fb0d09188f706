"""Fit a checkpoint's familiarity floor: below it, a scan is noted as looking like none of the faces it learnt from.

A scan's familiarity (`affectvlm.predictor.Prediction.familiarity`) is the cosine similarity between its fused
embedding and the nearest of the model's own labels. Faces making the expressions a model was trained on lie near
one of them; shapes that pass the scan door's face tests but are no face (a box held corner first, a cylinder's
point cloud, an office scene) lie far from all, and so do the faces the model reads worst. This tool scores
synthetic scans of validation identities (never the test ones: a seed no training or held-out set uses; scanner
realism on, both face models, neutral and every emotion at every intensity) through the predictor, as a user's scan
is scored, and writes the `--percentile`-th percentile of their familiarity into a copy of the checkpoint as
`config.familiarity_floor`. It prints how many of those scans fall under the floor and how often the model is right
on them and on the rest.

    python train/familiarity.py --model checkpoints/affectvlm-cpu --out /tmp/floored --seed 13 --subjects 20

`--cache DIR` (repeatable) fits the floor on a render cache's samples instead, e.g. a user's own dataset's
validation subjects (`--run RESULTS`: only the validation subjects of that training run's fold): their views are
embedded as the predictor embeds a scan's (`served_embeddings`). train/train.py fits the floor the same way on its
validation subjects at the end of every run (`fit_floor`, `train.familiarity_percentile`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm.data.aus import BASIC_LABELS, NEUTRAL  # noqa: E402

DEFAULT_PERCENTILE = 5.0


def validation_scans(seed: int, subjects: int, neutral: bool = True):
    """(label, scan) of `subjects` synthetic identities of `seed`: both face models, scanner realism, neutral (for a
    model that has the label) and the six emotions at intensities 1-4."""
    from affectvlm.data.realism import RealismConfig
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    data = SynthFER3D(
        SynthConfig(seed=seed, num_subjects=subjects, face_model="both", neutral=True, realism=RealismConfig())
    )
    for subject in range(subjects):
        if neutral:
            yield NEUTRAL, data.scan(subject, NEUTRAL)
        for label in BASIC_LABELS:
            for level in range(1, len(data.config.intensity_levels) + 1):
                yield label, data.scan(subject, label, level)


def measure(predictor, seed: int, subjects: int) -> tuple[np.ndarray, np.ndarray]:
    """(familiarity, right) of each validation scan the predictor reads (refused scans are left out)."""
    familiar, right = [], []
    neutral = NEUTRAL in predictor.default_labels
    scans = validation_scans(seed, subjects, neutral)
    total = subjects * (neutral + len(BASIC_LABELS) * 4)
    for label, scan in tqdm(scans, total=total, desc="validation scans", unit="scan"):
        try:
            result = predictor(scan=scan.to_scan())
        except ValueError:  # a scan with next to nothing in view: refused, as a user's would be
            continue
        familiar.append(result.familiarity)
        right.append(result.label == label)
    return np.asarray(familiar), np.asarray(right)


@torch.no_grad()
def served_embeddings(predictor, views, view_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V, H, W, 3) uint8 views -> (N, D) fused embeddings and (N, C) probabilities over the model's own labels,
    as `AffectVLMPredictor.__call__` computes them for a scan rendered to these views: its processor, device and
    serving dtype, the model in eval mode (mirror-image averaging where the config asks for it)."""
    _, trained = predictor.class_embeddings(None)
    device = predictor.model.device
    pixels = predictor.processor(images=torch.as_tensor(views))["pixel_values"].to(device)
    mask = None if view_mask is None else torch.as_tensor(view_mask, dtype=torch.bool).to(device)
    scores = predictor.model.score(pixels, trained.to(device), view_mask=mask)
    return scores.embeds, scores.probs


def samples_familiarity(predictor, dataset, batch: int = 64, desc: str = "validation samples", progress=True):
    """(familiarity, right) of every sample of `dataset` (a `train.data.ViewsDataset` over the model's labels: a
    run's validation subjects, a render cache), by `served_embeddings` and `AffectVLMPredictor.familiarity`."""
    familiar, right = [np.zeros(0)], [np.zeros(0, dtype=bool)]
    for start in tqdm(range(0, len(dataset), batch), desc=desc, unit="batch", leave=False, disable=not progress):
        items = dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))
        embeds, probs = served_embeddings(predictor, items["views"], items["view_mask"])
        familiar.append(predictor.familiarity(embeds))
        right.append(probs.argmax(-1).cpu().numpy() == items["labels"].numpy())
    return np.concatenate(familiar), np.concatenate(right)


def percentile_floor(familiar: np.ndarray, percentile: float | None) -> float | None:
    """The floor: the `percentile`-th percentile of `familiar`, to four places; None for 0, None or no samples."""
    if not percentile or not len(familiar):
        return None
    return round(float(np.percentile(familiar, percentile)), 4)


def write_floor(source, target, floor: float | None) -> None:
    """Write `floor` into the config of `source` (as saved, not as served: the serving dtype follows the machine)
    and save it into `target` (`source` itself to write in place)."""
    from affectvlm import AffectVLMConfig

    config = AffectVLMConfig.from_pretrained(source)
    config.familiarity_floor = floor
    config.save_pretrained(target)


def fit_floor(folder, dataset, percentile: float | None, device=None, batch: int = 64, progress=True) -> dict:
    """train/train.py's end of run: the floor of the checkpoint `folder` from the samples of `dataset` (the run's
    validation subjects), written into its config in place; what was written. With no percentile or no samples
    the floor is removed (a fine-tuned checkpoint's was fitted on other weights)."""
    from affectvlm.predictor import AffectVLMPredictor

    record = {"floor": None, "percentile": percentile or 0, "validation_samples": len(dataset)}
    if not percentile or not len(dataset):
        write_floor(folder, folder, None)
        why = "the run has no validation samples" if percentile else "train.familiarity_percentile is 0 or null"
        return {**record, "skipped": why}
    predictor = AffectVLMPredictor.from_pretrained(folder, device=device)
    familiar, right = samples_familiarity(predictor, dataset, batch, progress=progress)
    record["floor"] = percentile_floor(familiar, percentile)
    write_floor(folder, folder, record["floor"])
    report = floor_report(familiar, right, record["floor"])
    return {**record, **{k: v for k, v in report.items() if k != "scans"}}


def cache_samples(caches: list[str], config, run: str | None = None):
    """The samples of render `caches` over the model's labels and views (`config`: its AffectVLMConfig), as a
    `train.data` dataset; with `run` (a training run's results.json) only its fold's validation subjects."""
    from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES
    from train.data import CacheViews, ConcatViews

    def cache_views(folder) -> list[str]:  # the cache's view order (as train/evaluate.py's Embedded reads it)
        info = json.loads((Path(folder) / "cache.json").read_text())
        return [v["name"] for v in info.get("views") or []] or list(DEFAULT_VIEW_NAMES)

    labels, views = list(config.label_names), list(config.view_names)
    parts = [CacheViews(c, labels, views, cache_view_names=cache_views(c)) for c in caches]
    data = parts[0] if len(parts) == 1 else ConcatViews(parts, [Path(c).name for c in caches])
    if run is None:
        return data
    val = set(json.loads(Path(run).read_text())["fold"]["val"])
    prefix = Path(caches[0]).name  # a run on several caches names its subjects "<cache folder>/<subject>"
    keep = [i for i, s in enumerate(data.subjects) if s in val or (len(parts) == 1 and f"{prefix}/{s}" in val)]
    if not keep:
        where = ", ".join(caches)
        raise SystemExit(f"error: none of the {len(val)} validation subjects of {run} is in {where}")
    return data.subset(keep)


def floor_report(familiar: np.ndarray, right: np.ndarray, floor: float) -> dict:
    """How many scans fall under `floor`, and the accuracy on them and on the rest."""
    under = familiar < floor
    accuracy = lambda mask: float(right[mask].mean()) if mask.any() else None  # noqa: E731
    return {
        "scans": int(len(familiar)),
        "under_floor": int(under.sum()),
        "accuracy_under": accuracy(under),
        "accuracy_rest": accuracy(~under),
        "accuracy_all": accuracy(np.ones_like(under)),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The synthetic scans (without --cache) need the face models: AFFECTVLM_SFM_DIR and AFFECTVLM_ICT_DIR "
        "(docs/data.md).",
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="a trained checkpoint folder")
    parser.add_argument("--out", required=True, help="where to write the checkpoint with its floor")
    parser.add_argument(
        "--cache", action="append", metavar="DIR",
        help="fit on this render cache's samples (repeatable; a run on several caches: all of them, in its "
        "order) instead of synthetic scans, e.g. your own dataset's validation subjects",
    )  # fmt: skip
    parser.add_argument(
        "--run", metavar="RESULTS",
        help="with --cache: a training run's results.json; only its fold's validation subjects are scored",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=13, help="seed of the validation identities (default 13)")
    parser.add_argument("--subjects", type=int, default=20, help="validation identities (default 20: 500 scans)")
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_PERCENTILE,
        help="the floor: this percentile of the validation scans' familiarity (default %(default)s); 0 removes it",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit("--out must differ from --model: the original checkpoint is kept")
    if not 0 <= args.percentile < 50:
        raise SystemExit("--percentile must be in [0, 50)")
    if args.run and not args.cache:
        raise SystemExit("--run needs --cache: the render cache(s) the run was trained on")
    from affectvlm.predictor import AffectVLMPredictor
    from train.data import DataError

    predictor = AffectVLMPredictor.from_pretrained(args.model)
    if args.cache:
        try:
            samples = cache_samples(args.cache, predictor.model.config, args.run)
        except DataError as err:
            raise SystemExit(f"error: {err}") from None
        familiar, right = samples_familiarity(predictor, samples, desc="cache samples")
        source = {"caches": list(args.cache), "run": args.run}
    else:
        familiar, right = measure(predictor, args.seed, args.subjects)
        source = {"seed": args.seed, "subjects": args.subjects}
    floor = percentile_floor(familiar, args.percentile)
    shutil.copytree(args.model, args.out, dirs_exist_ok=True)
    write_floor(args.model, args.out, floor)
    result = {
        "floor": floor, "percentile": args.percentile, **source,
        **(floor_report(familiar, right, floor) if floor is not None else {}),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
