"""Generalisation report of a trained model on held-out render caches: what docs/RESULTS.md's tables come from.

    python train/evaluate.py --model checkpoints/affectvlm-cpu \
        --cache realistic=/data/eval96/synthboth-... --cache clean=/data/evalclean96/synthboth-... \
        --calibrate /data/train96/synthboth-... --calibrate-run runs/affectvlm-cpu/results.json \
        --out docs/results/affectvlm-cpu-eval.json

    python train/evaluate.py --model runs/cv-bu3dfe/full/fold_00/model --cache b3=/data/cache/bu3dfe-... \
        --subjects-from runs/cv-bu3dfe/folds.json --fold 0 --out runs/cv-bu3dfe/eval-fold0.json

Any render cache is scored (SynthFER-3D, BU-3DFE, Bosphorus, BU-4DFE, BP4D); `--subjects` or `--subjects-from`
(a folds file and `--fold`, or a training run's results.json) keeps only some subjects, e.g. a fold's test
subjects. Each cache's views are embedded once; every measure below is a scoring of those embeddings:
- **emotions**: accuracy over the model's labels per face model (where the cache records one) and kind (3D
  scans, 4D dynamic images: each sample's own `sequence`), per-class recall and the confusion matrix (with
  `--out`, also drawn: OUT-confusion-NAME.png), the six-emotion accuracy without neutral, accuracy per
  intensity level (where the cache has levels), neutral recall (where it has neutral samples), per cache (e.g.
  clean vs realistic scans);
- **open vocabulary**: the same scans scored against words and phrases no training prompt contains
  (`affectvlm.vocabulary.HELD_OUT_VOCABULARY`), each word alone and all of a class's words together, against
  the plain emotion words;
- **action units**: each AU description (`affectvlm.prompts.au_prompts`) scored against every sample with AU
  records (`affectvlm.data.aus.recorded_aus`: ICT FaceKit subjects, SFM subjects with the kit's shapes
  transferred, not the SFM blend binding's nominal AUs); ROC AUC per AU against the
  recorded AU activity (weight >= 0.15);
- **compound expressions** (evaluation-only samples): scored against the 15 compound names plus a prompt from
  their action-unit descriptions, never training labels; accuracy against chance;
- **calibration**: temperature fitted on the training run's validation subjects (`--calibrate`), expected
  calibration error before and after on the held-out scans, and accuracy against coverage when the model may
  answer "unsure";
- **scanner effects** (caches whose samples record them: SynthFER-3D with `--realism`): accuracy on the samples
  with each effect (holes, noise, a point cloud, ...) and on those without; where a cache of the same samples
  without any effect is scored in the same run (a clean twin: the same prepare command without `--realism`),
  the same samples' accuracy there, so that what each effect costs is measured on the same faces. Caches with
  no recorded effect (clean scans, real datasets) have none, and no line in `left_out` for it.

A section whose labels or metadata the cache lacks (face models, intensity levels, AU records, compound or
held-out-vocabulary labels) is left out, and `left_out` says why in one line each.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm import AffectVLMModel, AffectVLMProcessor  # noqa: E402
from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES  # noqa: E402
from affectvlm.data.aus import (  # noqa: E402
    AU_CATALOGUE,
    COMPOUND_LABELS,
    LABELS,
    PROTOTYPES,
    au_description,
    recorded_aus,
)
from affectvlm.data.cache import RenderCacheDataset  # noqa: E402
from affectvlm.data.folds import load_folds  # noqa: E402
from affectvlm.precision import serving_dtype  # noqa: E402
from affectvlm.prompts import au_prompts, inference_prompts  # noqa: E402
from affectvlm.vocabulary import HELD_OUT_VOCABULARY  # noqa: E402
from train.metrics import confusion_matrix  # noqa: E402
from train.metrics_calibration import (  # noqa: E402
    accuracy_at_coverage,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    softmax,
)

AU_ACTIVE_FROM = 0.15
KINDS = (("3d", (False, None)), ("4d", True), ("all", None))  # an entry's `sequence`: a scan or a sequence
LEFT_OUT = {
    "emotions": "no sample has one of the model's labels",
    "by_face_model": "no face-model metadata (a real dataset): every group is both/<kind>",
    "by_intensity": "no intensity levels (nor the six emotions at intensity 3-4)",
    "neutral_recall": "no neutral samples (or no neutral class in the model)",
    "open_vocabulary": "no sample has a label of the held-out vocabulary",
    "action_units": "no AU records (metadata `aus`: ICT FaceKit subjects, SFM ones with the kit's shapes)",
    "compound": "no compound-expression samples",
    "calibration": "no sample has one of the model's labels",
}


class Embedded:
    """A cache's samples as fused view embeddings (N, D) plus their entries; `unscored` counts the samples of
    the chosen subjects whose labels neither the model nor any section knows (label -> count), left out."""

    def __init__(self, model, processor, cache_dir, subjects=None, batch: int = 64, desc: str = "embed"):
        data = RenderCacheDataset(cache_dir)
        # a run on several caches names its subjects "<cache folder>/<subject>" (train.data.ConcatViews)
        prefix = Path(cache_dir).name
        mine = [
            i
            for i, e in enumerate(data.entries)
            if subjects is None or e["subject"] in subjects or f"{prefix}/{e['subject']}" in subjects
        ]
        known = {*LABELS, *model.config.label_names}
        keep = [i for i in mine if data.entries[i]["label"] in known]
        self.unscored = Counter(data.entries[i]["label"] for i in set(mine) - set(keep))
        self.entries = [data.entries[i] for i in keep]
        chunks = []
        info = json.loads((Path(cache_dir) / "cache.json").read_text())
        cache_views = [v["name"] for v in info.get("views") or []] or list(DEFAULT_VIEW_NAMES)
        pick = [list(cache_views).index(v) for v in model.config.view_names]  # the model's views, in order
        for start in tqdm(range(0, len(keep), batch), desc=desc, leave=False):
            views = data.read(np.asarray(keep[start : start + batch]))[:, pick]
            views = torch.from_numpy(np.ascontiguousarray(views))
            chunks.append(embed_views(model, processor, views))
        self.fused = torch.cat(chunks) if chunks else torch.zeros(0, model.config.projection_dim)
        self.scale = float(model.logit_scale.detach()) / model.config.temperature  # as served

    @classmethod
    def join(cls, parts: list[Embedded]) -> Embedded:
        """Several caches' embeddings as one (e.g. the validation subjects of a run on several caches)."""
        out = cls.__new__(cls)
        out.entries = [e for part in parts for e in part.entries]
        out.fused, out.scale = torch.cat([part.fused for part in parts]), parts[0].scale
        out.unscored = sum((part.unscored for part in parts), Counter())
        return out

    def where(self, **want) -> np.ndarray:
        """Indices of entries matching every `field=value` (fields of the entry or of its metadata; a tuple
        of values matches any of them)."""

        def ok(e, key, value):
            have = e.get(key, (e.get("metadata") or {}).get(key))
            return have in value if isinstance(value, tuple) else have == value

        return np.asarray(
            [i for i, e in enumerate(self.entries) if all(ok(e, k, v) for k, v in want.items())], dtype=int
        )

    def logits(self, class_embeds: torch.Tensor, rows) -> np.ndarray:
        return (self.scale * self.fused[rows] @ class_embeds.T).numpy()


@torch.no_grad()
def embed_views(model, processor, views: torch.Tensor) -> torch.Tensor:
    """(b, V, H, W, 3) uint8 views -> (b, D) fused, L2-normalised embeddings."""
    pixel_values = processor.normalize_views(views).to(model.device, model.dtype)
    mask = torch.ones(views.shape[:2], dtype=torch.bool, device=model.device)
    fused, _ = model.fuse(model.get_view_embeddings(pixel_values, mask), mask)
    return fused.float().cpu()


def label_rows(emb: Embedded, labels: list[str], rows: np.ndarray) -> np.ndarray:
    index = {name: i for i, name in enumerate(labels)}
    return np.asarray([index[emb.entries[i]["label"]] for i in rows])


def accuracy(logits: np.ndarray, truth: np.ndarray) -> float:
    return float((logits.argmax(-1) == truth).mean()) if len(truth) else float("nan")


def emotion_report(emb: Embedded, model, tokenizer) -> dict:
    """Accuracy over the model's labels per face model (where the cache records one) and kind (3D: entries
    that are no sequence, 4D: sequences); per-class recall and the confusion matrix; six-emotion accuracy;
    accuracy per intensity level (None where the cache has no levels); neutral recall (None: no neutral)."""
    labels = list(model.config.label_names)
    embeds = model.encode_prompts(inference_prompts(labels), tokenizer).float().cpu()
    levels = any(e.get("intensity") is not None for e in emb.entries)
    out = {}
    for face_model in (*face_models(emb), None):
        for kind, sequence in KINDS:
            want = {"label": tuple(labels)}
            if sequence is not None:
                want["sequence"] = sequence
            if face_model:
                want["face_model"] = face_model
            if len(emb.where(**want)):
                out[f"{face_model or 'both'}/{kind}"] = _emotion_group(emb, want, labels, embeds, levels)
    return out


def _emotion_group(emb: Embedded, want: dict, labels: list[str], embeds: torch.Tensor, levels: bool) -> dict:
    """emotion_report's measures on the entries matching `want` (Embedded.where)."""
    six = [name for name in labels if name != "neutral"]
    six_embeds = embeds[[labels.index(name) for name in six]]
    rows, six_rows = emb.where(**want), emb.where(**{**want, "label": tuple(six)})
    truth = label_rows(emb, labels, rows)
    logits = emb.logits(embeds, rows)
    intensity = np.asarray([emb.entries[i].get("intensity") or 0 for i in rows])
    by_intensity = {
        str(k): accuracy(logits[intensity == k], truth[intensity == k]) for k in np.unique(intensity)
    }
    six_accuracy = accuracy(emb.logits(six_embeds, six_rows), label_rows(emb, six, six_rows))
    recall, counts = class_recall(logits, truth, labels)
    return {
        "n": len(rows),
        "accuracy": accuracy(logits, truth),
        "by_intensity": by_intensity if levels else None,
        "six_emotion_accuracy": six_accuracy if len(six_rows) else None,
        "six_emotion_high_intensity": _six_high(emb, six_embeds, six, six_rows),
        "neutral_recall": recall.get("neutral"),
        "per_class_recall": recall,
        "confusion_matrix": {"labels": labels, "counts": counts.tolist()},
    }


def face_models(emb: Embedded) -> list[str]:
    """The face models the entries' metadata names (SynthFER-3D's sfm, ict), in that order; none for a real
    dataset."""
    found = {(e.get("metadata") or {}).get("face_model") for e in emb.entries} - {None}
    return [m for m in ("sfm", "ict") if m in found] + sorted(found - {"sfm", "ict"})


def class_recall(logits: np.ndarray, truth: np.ndarray, labels: list[str]) -> tuple[dict, np.ndarray]:
    """Recall of each label that occurs (label -> float) and the (C, C) confusion matrix over all `labels`
    (row: true label, column: predicted)."""
    counts = confusion_matrix(logits.argmax(-1), truth, len(labels))
    actual = counts.sum(1)
    return {name: float(counts[k, k] / actual[k]) for k, name in enumerate(labels) if actual[k]}, counts


def _six_high(emb: Embedded, six_embeds: torch.Tensor, six: list[str], rows: np.ndarray) -> float | None:
    """Six-emotion accuracy on intensity levels 3 and 4 only: the analogue of BU-3DFE's usual protocol
    ("Subset I": six expressions at the two highest of four intensities, neutral left out)."""
    rows = np.asarray([i for i in rows if (emb.entries[i].get("intensity") or 0) >= 3], dtype=int)
    return accuracy(emb.logits(six_embeds, rows), label_rows(emb, six, rows)) if len(rows) else None


def open_vocabulary_report(emb: Embedded, model, tokenizer, vocabulary=HELD_OUT_VOCABULARY) -> dict:
    """Plain emotion words against never-trained words: each held-out word alone, and all together
    (`vocabulary`: the test words; affectvlm.vocabulary.VALIDATION_VOCABULARY for choosing settings)."""
    labels = [name for name in model.config.label_names if name in vocabulary]
    rows = emb.where(label=tuple(labels))
    if not len(rows):
        return {}
    truth = label_rows(emb, labels, rows)
    plain = accuracy(
        emb.logits(model.encode_prompts(inference_prompts(labels), tokenizer).cpu(), rows), truth
    )
    words = min(len(vocabulary[name]) for name in labels)
    alone = []
    for j in range(words):
        prompts = {name: inference_prompts([vocabulary[name][j]])[vocabulary[name][j]] for name in labels}
        alone.append(accuracy(emb.logits(model.encode_prompts(prompts, tokenizer).cpu(), rows), truth))
    together = {
        name: [p for word in vocabulary[name] for p in inference_prompts([word])[word]] for name in labels
    }
    pooled = accuracy(emb.logits(model.encode_prompts(together, tokenizer).cpu(), rows), truth)
    mean_alone = float(np.mean(alone))
    return {
        "text_encoder_alone": _encoder_word_placement(model, tokenizer, labels, vocabulary),
        "n": len(rows),
        "plain_words": plain,
        "held_out_each_word_alone": alone,
        "held_out_one_word_mean": mean_alone,
        "held_out_all_words": pooled,
        "ratio_one_word": mean_alone / plain if plain else None,
        "ratio_all_words": pooled / plain if plain else None,
    }


def _encoder_word_placement(model, tokenizer, labels: list[str], vocabulary) -> float | None:
    """The language side's own ceiling: the share of the never-trained words whose prompts, in the text
    encoder's own space (before any projection), lie nearest their class's plain word of all the classes."""
    if getattr(model, "text_model", None) is None:
        return None
    plain = model.encode_prompts(inference_prompts(labels), tokenizer, projected=False).float()
    hits = []
    for i, name in enumerate(labels):
        words = {w: inference_prompts([w])[w] for w in vocabulary[name]}
        own = model.encode_prompts(words, tokenizer, projected=False).float()
        hits += ((own @ plain.T).argmax(-1) == i).tolist()
    return float(np.mean(hits))


def au_report(emb: Embedded, model, tokenizer) -> dict:
    """ROC AUC of each AU description's score against the recorded AU activity (scans with AU records)."""
    records = {i: recorded_aus(e.get("metadata")) for i, e in enumerate(emb.entries)}
    rows = np.asarray([i for i, aus in records.items() if aus is not None])
    if not len(rows):
        return {}
    numbers = sorted(AU_CATALOGUE)
    prompts = au_prompts(numbers)
    scores = emb.logits(model.encode_prompts(prompts, tokenizer).cpu(), rows)  # (N, A)
    per_au = {}
    for j, (name, number) in enumerate(zip(prompts, numbers)):
        active = [records[i].get(number, 0.0) >= AU_ACTIVE_FROM for i in rows]
        auc = roc_auc(scores[:, j], active)
        if auc is not None:
            per_au[name] = {"auc": auc, "positives": int(np.sum(active))}
    values = sorted(per_au.items(), key=lambda kv: kv[1]["auc"])
    return {
        "n": len(rows),
        "mean_auc": float(np.mean([v["auc"] for v in per_au.values()])) if per_au else None,
        "worst": [(name, v["auc"]) for name, v in values[:3]],
        "per_au": per_au,
    }


def compound_prompts() -> dict[str, list[str]]:
    """Each compound expression's name (inference templates) plus one prompt from its first variant's AUs."""
    out = {}
    for name in COMPOUND_LABELS:
        words = name.replace("_", " ")
        code = PROTOTYPES[name].variants[0].code
        described = ", ".join(au_description(int(au)) for au in code.split("+"))
        out[name] = [*inference_prompts([words])[words], f"a face with {described}."]
    return out


def compound_report(emb: Embedded, model, tokenizer) -> dict:
    rows = emb.where(label=tuple(COMPOUND_LABELS))
    if not len(rows):
        return {}
    truth = label_rows(emb, list(COMPOUND_LABELS), rows)
    logits = emb.logits(model.encode_prompts(compound_prompts(), tokenizer).cpu(), rows)
    acc = accuracy(logits, truth)
    chance = 1.0 / len(COMPOUND_LABELS)
    return {"n": len(rows), "accuracy": acc, "chance": chance, "times_chance": acc / chance}


def calibration_report(held_out: Embedded, calibration: Embedded | None, model, tokenizer) -> dict:
    labels = list(model.config.label_names)
    embeds = model.encode_prompts(inference_prompts(labels), tokenizer).float().cpu()
    rows = held_out.where(label=tuple(labels))
    if not len(rows):
        return {}
    logits, truth = held_out.logits(embeds, rows), label_rows(held_out, labels, rows)
    out = {"ece_before": expected_calibration_error(softmax(logits), truth)}
    temperature = 1.0
    if calibration is not None:
        cal_rows = calibration.where(label=tuple(labels))
        temperature = fit_temperature(
            calibration.logits(embeds, cal_rows), label_rows(calibration, labels, cal_rows)
        )
        out.update(temperature=temperature, fitted_on=f"{len(cal_rows)} validation-subject samples")
    probs = softmax(logits, temperature)
    out["ece_after"] = expected_calibration_error(probs, truth)
    out["accuracy_at_coverage"] = accuracy_at_coverage(probs, truth)
    return out


def scanner_report(emb: Embedded, twin: tuple[str, Embedded] | None, model, tokenizer) -> dict | None:
    """Accuracy over the model's labels on the samples with each recorded scanner effect and on those without;
    with a clean `twin` (its name and embeddings: the same samples, no effect), the same samples' accuracy there
    and the difference (`cost`), and how many answers the effects changed (`broken`, `fixed`). None where no
    sample records an effect."""
    labels = list(model.config.label_names)
    rows = emb.where(label=tuple(labels))
    effects = [tuple(emb.entries[i].get("realism") or ()) for i in rows]
    if not any(effects):
        return None
    embeds = model.encode_prompts(inference_prompts(labels), tokenizer).float().cpu()
    truth = label_rows(emb, labels, rows)
    right = emb.logits(embeds, rows).argmax(-1) == truth
    clean = None
    if twin is not None:
        twin_rows = twin[1].where(label=tuple(labels))
        clean = twin[1].logits(embeds, twin_rows).argmax(-1) == truth
    kinds = {}
    for kind in sorted({k for e in effects for k in e}):
        has = np.asarray([kind in e for e in effects])
        kinds[kind] = {"n": int(has.sum()), "accuracy": float(right[has].mean()),
                       "accuracy_without": float(right[~has].mean()) if (~has).any() else None}  # fmt: skip
        if clean is not None:
            kinds[kind].update(clean=float(clean[has].mean()), cost=float(clean[has].mean() - right[has].mean()))
    out = {"n": len(rows), "accuracy": float(right.mean()), "no_effect": int(sum(not e for e in effects)), "kinds": kinds}
    if clean is not None:
        out["twin"] = {"cache": twin[0], "accuracy": float(clean.mean()), "broken": int((clean & ~right).sum()),
                       "fixed": int((~clean & right).sum())}  # fmt: skip
    return out


def clean_twin(emb: Embedded, others: dict[str, Embedded]) -> tuple[str, Embedded] | None:
    """The first of `others` that holds the same samples (keys, in order) as `emb` with no scanner effect."""
    keys = [e["key"] for e in emb.entries]
    for name, other in others.items():
        if other is not emb and [e["key"] for e in other.entries] == keys:
            if not any(e.get("realism") for e in other.entries):
                return name, other
    return None


def cache_report(emb: Embedded, calibration: Embedded | None, model, tokenizer, twin=None) -> dict:
    """Every section for one cache, what was scored (samples, subjects) and why a section is left out; `twin`:
    a clean cache of the same samples (`clean_twin`), for the scanner effects' cost."""
    r = {
        "scored": {"samples": len(emb.entries), "subjects": len({e["subject"] for e in emb.entries})},
        "emotions": emotion_report(emb, model, tokenizer),
        "open_vocabulary": open_vocabulary_report(emb, model, tokenizer),
        "action_units": au_report(emb, model, tokenizer),
        "compound": compound_report(emb, model, tokenizer),
        "calibration": calibration_report(emb, calibration, model, tokenizer),
        "scanner": scanner_report(emb, twin, model, tokenizer),
    }
    return {**r, "left_out": left_out(r, emb, model.config.label_names)}


def left_out(r: dict, emb: Embedded, labels) -> dict[str, str]:
    """What of a cache's report is missing (a section, a split of the emotions, samples of labels no section
    scores) and why: `LEFT_OUT`."""
    unscored = getattr(emb, "unscored", Counter()) + Counter(
        e["label"] for e in emb.entries if e["label"] not in {*labels, *COMPOUND_LABELS}
    )
    groups = list(r["emotions"].values())
    missing = {
        "emotions": not groups,
        "by_face_model": bool(groups) and all(k.startswith("both/") for k in r["emotions"]),
        "by_intensity": bool(groups) and all(g["by_intensity"] is None for g in groups),
        "neutral_recall": bool(groups) and all(g["neutral_recall"] is None for g in groups),
        **{k: not r[k] for k in ("open_vocabulary", "action_units", "compound", "calibration")},
    }
    why = {k: LEFT_OUT[k] for k, gone in missing.items() if gone}
    if unscored:
        named = ", ".join(f"{label} ({n})" for label, n in sorted(unscored.items()))
        why["other_labels"] = f"samples of labels the model has no class for: {named}"
    return why


def run_subjects(path: str, side: str) -> set[str]:
    """One side (train, val, test) of a training run's fold, from its results.json."""
    return set(json.loads(Path(path).read_text())["fold"][side])


def chosen_subjects(args, parser: argparse.ArgumentParser) -> set[str] | None:
    """The subjects to score: `--subjects`, or one side of a fold from `--subjects-from` (a folds file of
    `python -m affectvlm.data folds` or train/cross_validate.py, with `--fold`; or a training run's
    results.json); None: every subject."""
    if args.fold is not None and not args.subjects_from:
        parser.error("--fold needs --subjects-from FOLDS.json")
    if args.subjects:
        return {s.strip() for s in args.subjects.split(",") if s.strip()}
    if not args.subjects_from:
        return None
    try:
        doc = json.loads(Path(args.subjects_from).read_text())
        if isinstance(doc, dict) and isinstance(doc.get("fold"), dict):
            return run_subjects(args.subjects_from, args.side)
        folds = load_folds(args.subjects_from)
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError, as load_folds's errors are
        parser.error(f"--subjects-from: {err}")
    if args.fold is None or not 0 <= args.fold < len(folds):
        parser.error(f"{args.subjects_from} holds {len(folds)} folds: give --fold 0..{len(folds) - 1}")
    return set(getattr(folds[args.fold], args.side))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved model folder (or a shipped checkpoint's folder)")
    p.add_argument(
        "--cache",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a held-out render cache to score, named (repeatable: e.g. clean=... realistic=...)",
    )
    p.add_argument(
        "--calibrate",
        action="append",
        help="render cache of the training run, for the temperature fit (repeat for a run on several caches)",
    )
    p.add_argument(
        "--calibrate-run", help="the training run's results.json: its validation subjects are used"
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("--subjects", help="score only these subjects (comma-separated: F0001,M0003)")
    who.add_argument(
        "--subjects-from",
        metavar="FILE",
        help="score only one side of a fold: a folds file (with --fold) or a training run's results.json",
    )
    p.add_argument("--fold", type=int, help="the fold of --subjects-from's folds file (0-based)")
    p.add_argument(
        "--side", choices=["test", "val", "train"], default="test", help="the fold's subjects to score"
    )
    p.add_argument("--out", help="write the report here (JSON), and OUT-confusion-NAME.png beside it")
    p.add_argument(
        "--mirror-average",
        choices=["checkpoint", "on", "off"],
        default="checkpoint",
        help="test-time mirror averaging of every view (config.mirror_average): as the checkpoint says, or forced",
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="weights' dtype (auto: bf16 on CPUs with AMX or AVX512-BF16 and on bf16 GPUs, as served; else fp32)",
    )
    p.add_argument(
        "--device", default="auto", help="where to embed the views: cpu, cuda, cuda:1 ... (auto: a GPU if any)"
    )
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    subjects = chosen_subjects(args, parser)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = serving_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    model = AffectVLMModel.from_pretrained(args.model).to(device=device, dtype=dtype).eval()
    if args.mirror_average != "checkpoint":
        model.config.mirror_average = args.mirror_average == "on"
    processor = AffectVLMProcessor.from_pretrained(args.model)
    tok = processor.tokenizer
    calibration = None
    if args.calibrate:
        val = run_subjects(args.calibrate_run, "val") if args.calibrate_run else None
        calibration = Embedded.join(
            [Embedded(model, processor, c, val, desc="calibration") for c in args.calibrate]
        )
    report = {
        "model": args.model,
        "dtype": str(model.dtype),
        "device": str(device),
        "mirror_average": model.config.mirror_average,
        **({"subjects": sorted(subjects)} if subjects is not None else {}),
        "caches": {},
    }
    embedded, folders = {}, {}
    for item in args.cache:
        name, _, folders[name] = item.partition("=")
        embedded[name] = Embedded(model, processor, folders[name], subjects, desc=name)
        if subjects is not None and not embedded[name].entries:
            parser.error(f"cache {name} ({folders[name]}) has no sample of the {len(subjects)} subjects given")
    for name, emb in embedded.items():
        twin = clean_twin(emb, embedded)
        report["caches"][name] = {"cache": folders[name], **cache_report(emb, calibration, model, tok, twin)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        confusion_pictures(report, Path(args.out))
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(summary(report))
    return report


def confusion_pictures(report: dict, out: Path) -> None:
    """Each cache's confusion matrix (its both/all group) drawn beside the JSON report as
    OUT-confusion-NAME.png; the path goes into the cache's report as `confusion_png`."""
    from train.cross_validate import plot_confusion

    for name, r in report["caches"].items():
        group = r["emotions"].get("both/all")
        if group is None:
            continue
        safe = re.sub(r"[^\w.-]+", "_", name)
        path = out.with_name(f"{out.stem}-confusion-{safe}.png")
        title = f"{Path(report['model']).name} on {name}: accuracy {group['accuracy']:.3f} (n={group['n']})"
        plot_confusion(group["confusion_matrix"]["counts"], group["confusion_matrix"]["labels"], title, path)
        r["confusion_png"] = str(path)


def _joined(values: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items() if v is not None)


def summary(report: dict) -> str:
    lines = []
    for name, r in report["caches"].items():
        if "subjects" in report:
            n, given = r["scored"], len(report["subjects"])
            lines.append(f"[{name}] {n['samples']} samples of {n['subjects']} of the {given} subjects given")
        lines += [f"[{name}] {line}" for line in _cache_summary(r)]
    return "\n".join(lines)


def _cache_summary(r: dict) -> list[str]:
    lines, e = [], r["emotions"]
    if e:
        lines.append("accuracy: " + _joined({k: v["accuracy"] for k, v in e.items()}))
        six = {k: v["six_emotion_accuracy"] for k, v in e.items() if not k.endswith("all")}
        high = {k: v["six_emotion_high_intensity"] for k, v in e.items() if k.endswith("3d")}
        if any(v is not None for v in six.values()):
            lines.append("six emotions: " + _joined(six))
        if any(v is not None for v in high.values()):
            lines.append("six emotions at intensity 3-4 (BU-3DFE Subset I analogue): " + _joined(high))
        if e.get("both/3d", {}).get("by_intensity"):
            by = e["both/3d"]["by_intensity"]
            lines.append("3D by intensity: " + ", ".join(f"{k}: {v:.3f}" for k, v in by.items()))
        if e["both/all"]["neutral_recall"] is not None:
            lines.append(f"neutral recall {e['both/all']['neutral_recall']:.3f}")
        lines.append("recall per class: " + _joined(e["both/all"]["per_class_recall"]))
    ov = r["open_vocabulary"]
    if ov:
        lines.append(
            f"open vocabulary: plain {ov['plain_words']:.3f}, one held-out word {ov['held_out_one_word_mean']:.3f}"
            f" (x{ov['ratio_one_word']:.2f}), all held-out words {ov['held_out_all_words']:.3f} (x{ov['ratio_all_words']:.2f})"
            + (
                f"; the text encoder alone puts {ov['text_encoder_alone']:.2f} of the words nearest their class"
                if ov.get("text_encoder_alone") is not None
                else ""
            )
        )
    au = r["action_units"]
    if au:
        lines.append(f"AU AUC mean {au['mean_auc']:.3f}, worst {au['worst']}")
    c = r["compound"]
    if c:
        lines.append(f"compound zero-shot {c['accuracy']:.3f} ({c['times_chance']:.1f}x chance)")
    cal = r["calibration"]
    if cal:
        lines.append(
            f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f} (T={cal.get('temperature', 1.0):.2f}); "
            + ", ".join(f"cov {k}: {v['accuracy']:.3f}" for k, v in cal["accuracy_at_coverage"].items())
        )
    lines += _scanner_summary(r.get("scanner"))
    lines += [f"left out: {what.replace('_', ' ')}: {why}" for what, why in r.get("left_out", {}).items()]
    if r.get("confusion_png"):
        lines.append(f"confusion matrix: {r['confusion_png']}")
    return lines


def _scanner_summary(sc: dict | None) -> list[str]:
    """One line: each scanner effect's cost against the clean twin (largest first), else its accuracy."""
    if not sc:
        return []
    if "twin" in sc:
        t = sc["twin"]
        head = (f"scanner effects, against the same samples in {t['cache']} ({t['accuracy']:.3f} -> "
                f"{sc['accuracy']:.3f}: {t['broken']} broken, {t['fixed']} fixed)")  # fmt: skip
        ranked = sorted(sc["kinds"].items(), key=lambda kv: -kv[1]["cost"])
        return [head + ": " + ", ".join(f"{k} {v['cost']:+.3f} (n {v['n']})" for k, v in ranked)]
    return ["scanner effects (accuracy with each): " + _joined({k: v["accuracy"] for k, v in sc["kinds"].items()})]


if __name__ == "__main__":
    main()
