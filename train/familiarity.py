"""Fit what tells a checkpoint's predictor that a scan looks like none of the faces it learnt from: the face
distance (`affectvlm.face_distance`) and the familiarity floor.

A scan's familiarity (`affectvlm.predictor.Prediction.familiarity`) is the cosine similarity between its fused
embedding and the nearest of the model's own labels. Faces making the expressions a model was trained on lie near
one of them; shapes that pass the scan door's face tests but are no face (a box held corner first, a cylinder's
point cloud, an office scene) lie far from all, and so do the faces the model reads worst. This tool scores
synthetic scans of validation identities (never the test ones: a seed no training or held-out set uses; scanner
realism on, both face models, neutral and every emotion at every intensity) through the predictor, as a user's scan
is scored, and writes the `--percentile`-th percentile of their familiarity into a copy of the checkpoint as
`config.familiarity_floor`. It also fits the face distance on the same scans' embeddings, its ceiling the
`--distance-percentile`-th percentile of the distances of the identities the fit left out, and saves it beside the
weights (`face_distance.safetensors`): where it is, the predictor notes by it instead of the floor (it separates
faces from such shapes better: docs/RESULTS.md). It prints how many of those scans each test notes and how often the
model is right on them and on the rest.

    python train/familiarity.py --model checkpoints/affectvlm-cpu --out /tmp/floored --seed 13 --subjects 160

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm.data.aus import BASIC_LABELS, NEUTRAL  # noqa: E402
from affectvlm.face_distance import DEFAULT_PERCENTILE as DISTANCE_PERCENTILE  # noqa: E402

DEFAULT_PERCENTILE = 5.0


@dataclass
class Served:
    """Validation samples as the predictor serves them: (N,) familiarity and whether the top label was right, (N, D)
    fused embeddings, and each sample's label and identity (`affectvlm.face_distance.fit`)."""

    familiar: np.ndarray
    right: np.ndarray
    embeds: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def validation_scans(seed: int, subjects: int, neutral: bool = True):
    """(identity, label, scan) of `subjects` synthetic identities of `seed`: both face models, scanner realism,
    neutral (for a model that has the label) and the six emotions at intensities 1-4."""
    from affectvlm.data.realism import RealismConfig
    from affectvlm.data.synth import SynthConfig, SynthFER3D

    data = SynthFER3D(
        SynthConfig(seed=seed, num_subjects=subjects, face_model="both", neutral=True, realism=RealismConfig())
    )
    for subject in range(subjects):
        if neutral:
            yield subject, NEUTRAL, data.scan(subject, NEUTRAL)
        for label in BASIC_LABELS:
            for level in range(1, len(data.config.intensity_levels) + 1):
                yield subject, label, data.scan(subject, label, level)


def measure(predictor, seed: int, subjects: int, batch: int = 50) -> Served:
    """Each validation scan the predictor reads (refused scans are left out), rendered as `predictor(scan=...)`
    renders it and embedded as it embeds it (`served_embeddings`), `batch` scans at a time."""
    neutral = NEUTRAL in predictor.default_labels
    scans = validation_scans(seed, subjects, neutral)
    total = subjects * (neutral + len(BASIC_LABELS) * 4)
    views, labels, groups = [], [], []
    for subject, label, scan in tqdm(scans, total=total, desc="validation scans", unit="scan"):
        try:
            views.append(predictor.render_scan(scan.to_scan()))
        except ValueError:  # a scan with next to nothing in view: refused, as a user's would be
            continue
        labels.append(label)
        groups.append(subject)
    names = predictor.default_labels
    embeds, right = [], []
    for start in range(0, len(views), batch):
        e, probs = served_embeddings(predictor, np.stack(views[start : start + batch]))
        embeds.append(e.float().cpu())
        right.extend(names[i] == label for i, label in zip(probs.argmax(-1).tolist(), labels[start : start + batch]))
    embeds = torch.cat(embeds)
    familiar = predictor.familiarity(embeds)
    return Served(familiar, np.asarray(right), embeds.numpy(), np.asarray(labels), np.asarray(groups))


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


def samples_served(predictor, dataset, batch: int = 64, desc: str = "validation samples", progress=True) -> Served:
    """Every sample of `dataset` (a `train.data.ViewsDataset` over the model's labels: a run's validation subjects, a
    render cache), by `served_embeddings` and `AffectVLMPredictor.familiarity`; its persons are the groups."""
    embeds, labels, right = [torch.zeros(0, predictor.model.config.projection_dim)], [np.zeros(0, str)], []
    for start in tqdm(range(0, len(dataset), batch), desc=desc, unit="batch", leave=False, disable=not progress):
        items = dataset.__getitems__(list(range(start, min(start + batch, len(dataset)))))
        e, probs = served_embeddings(predictor, items["views"], items["view_mask"])
        embeds.append(e.float().cpu())
        right.append(probs.argmax(-1).cpu().numpy() == items["labels"].numpy())
        labels.append(np.asarray(dataset.label_names)[items["labels"].numpy()])
    embeds = torch.cat(embeds)
    right = np.concatenate(right) if right else np.zeros(0, dtype=bool)
    groups = np.asarray(dataset.persons)
    return Served(predictor.familiarity(embeds), right, embeds.numpy(), np.concatenate(labels), groups)


def fit_distance(served: Served, folder, percentile: float | None, record: dict | None = None) -> dict:
    """Fit the face distance on `served` (`affectvlm.face_distance.fit`, its ceiling the `percentile`-th
    percentile of the left-out identities' distances) and save it into the checkpoint `folder`, or, with no
    percentile or too few faces to fit, take any fit out of it; what was done."""
    from affectvlm import face_distance

    face_distance.remove(folder)
    if not percentile:
        return {"ceiling": None, "skipped": "no percentile"}
    try:
        fitted = face_distance.fit(served.embeds, served.labels, served.groups, percentile, record=record)
    except ValueError as err:
        return {"ceiling": None, "skipped": str(err)}
    face_distance.save(fitted, folder)
    over = fitted(served.embeds) > fitted.ceiling
    return {"ceiling": fitted.ceiling, **fitted.record, **note_report(over, served.right)}


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


def fit_floor(
    folder, dataset, percentile: float | None, device=None, batch: int = 64, progress=True, distance_percentile=None
) -> dict:
    """train/train.py's end of run: the floor of the checkpoint `folder` from the samples of `dataset` (the run's
    validation subjects), written into its config in place, and with `distance_percentile` the face distance
    (`fit_distance`) saved beside it; what was written. With no percentile or no samples the floor, and the face
    distance, are removed (a fine-tuned checkpoint's were fitted on other weights)."""
    from affectvlm import face_distance
    from affectvlm.predictor import AffectVLMPredictor

    record = {"floor": None, "percentile": percentile or 0, "validation_samples": len(dataset)}
    if not percentile or not len(dataset):
        write_floor(folder, folder, None)
        face_distance.remove(folder)
        why = "the run has no validation samples" if percentile else "train.familiarity_percentile is 0 or null"
        return {**record, "skipped": why}
    predictor = AffectVLMPredictor.from_pretrained(folder, device=device)
    served = samples_served(predictor, dataset, batch, progress=progress)
    record["floor"] = percentile_floor(served.familiar, percentile)
    write_floor(folder, folder, record["floor"])
    report = floor_report(served.familiar, served.right, record["floor"])
    distance = fit_distance(served, folder, distance_percentile, {"fitted_on": "the run's validation subjects"})
    return {**record, **{k: v for k, v in report.items() if k != "scans"}, "face_distance": distance}


def cache_samples(caches: list[str], config, run: str | None = None):
    """The samples of render `caches` over the model's labels and views (`config`: its AffectVLMConfig), as a
    `train.data` dataset; with `run` (a training run's results.json) only its fold's validation subjects."""
    from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES
    from train.data import CacheViews, ConcatViews, cache_names

    def cache_views(folder) -> list[str]:  # the cache's view order (as train/evaluate.py's Embedded reads it)
        info = json.loads((Path(folder) / "cache.json").read_text())
        return [v["name"] for v in info.get("views") or []] or list(DEFAULT_VIEW_NAMES)

    labels, views = list(config.label_names), list(config.view_names)
    parts = [CacheViews(c, labels, views, cache_view_names=cache_views(c)) for c in caches]
    data = parts[0] if len(parts) == 1 else ConcatViews(parts, cache_names(caches))
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
    report = note_report(familiar < floor, right)
    return {
        "scans": report["scans"], "under_floor": report["noted"], "accuracy_under": report["accuracy_noted"],
        "accuracy_rest": report["accuracy_rest"], "accuracy_all": report["accuracy_all"],
    }  # fmt: skip


def note_report(noted: np.ndarray, right: np.ndarray) -> dict:
    """How many scans a test notes, and the accuracy on them and on the rest."""
    accuracy = lambda mask: float(right[mask].mean()) if mask.any() else None  # noqa: E731
    return {
        "scans": int(len(noted)),
        "noted": int(noted.sum()),
        "accuracy_noted": accuracy(noted),
        "accuracy_rest": accuracy(~noted),
        "accuracy_all": accuracy(np.ones_like(noted)),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The synthetic scans (without --cache) need the face models: AFFECTVLM_SFM_DIR and AFFECTVLM_ICT_DIR "
        "(docs/data.md).",
    )  # fmt: skip
    parser.add_argument("--model", required=True, help="a trained checkpoint folder")
    parser.add_argument("--out", required=True, help="where to write the checkpoint with its floor and face distance")
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
    parser.add_argument(
        "--subjects", type=int, default=160,
        help="validation identities (default 160: 4,000 scans; the face distance is fitted on half of them and its "
        "ceiling set on the other half)",
    )  # fmt: skip
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_PERCENTILE,
        help="the floor: this percentile of the validation scans' familiarity (default %(default)s); 0 removes it",
    )  # fmt: skip
    parser.add_argument(
        "--distance-percentile", type=float, default=DISTANCE_PERCENTILE,
        help="the face distance's ceiling: this percentile of the distances of the validation identities its fit "
        "left out (default %(default)s); 0: no face distance (the floor notes)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit("--out must differ from --model: the original checkpoint is kept")
    if not 0 <= args.percentile < 50:
        raise SystemExit("--percentile must be in [0, 50)")
    if args.distance_percentile and not 50 <= args.distance_percentile < 100:
        raise SystemExit("--distance-percentile must be 0 or in [50, 100)")
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
        served = samples_served(predictor, samples, desc="cache samples")
        source = {"caches": list(args.cache), "run": args.run}
    else:
        served = measure(predictor, args.seed, args.subjects)
        source = {"seed": args.seed, "subjects": args.subjects}
    floor = percentile_floor(served.familiar, args.percentile)
    shutil.copytree(args.model, args.out, dirs_exist_ok=True)
    write_floor(args.model, args.out, floor)
    fitted_on = {k: v for k, v in source.items() if v is not None and k != "run"}
    result = {
        "floor": floor, "percentile": args.percentile, **source,
        **(floor_report(served.familiar, served.right, floor) if floor is not None else {}),
        "face_distance": fit_distance(served, args.out, args.distance_percentile, {"fitted_on": fitted_on}),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
