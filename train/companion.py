"""Give a checkpoint a companion that reads the same scans as normal maps, and measure what the pair reads.

`affectvlm.companion` serves it: the predictor scores a scan or a sequence with the main model (grey views) and
with the companion (normal maps of the same normalised scan) and pools their label probabilities, weight `w` on
the companion's. Both are fitted here on validation subjects, never on test ones: the companion's temperature
(its own NLL), then `w` over a grid (the most right answers; among equals, the lowest NLL of the pooled answer).
Each sample is given twice, as two render caches of the same scans (the same settings and seed, one rendered
with `--mode normal_map`), matched by key:

    python train/companion.py --model checkpoints/affectvlm-cpu --companion runs/normal-one-run-served \\
        --fit GREY21=NORMAL21 --fit GREY21_4D=NORMAL21 --out runs/affectvlm-cpu-with-companion
    python train/companion.py --model runs/affectvlm-cpu-with-companion --report test=GREY1=NORMAL1 \\
        --report test4d=GREY1_4D=NORMAL1 --out report.json

`--out` with `--fit`: a copy of the main checkpoint with the companion in its subfolder `normal_maps` (its
temperature in its config.json) and `companion.json`. With `--report`: a JSON report, per name, of the main model
alone, the companion alone and the pair as served: accuracy by face model and kind, at level 1, neutral recall,
ECE, the never-trained words (`affectvlm.vocabulary.HELD_OUT_VOCABULARY`, one word a class) against the plain
ones, on the 3D scans, and the mean ROC AUC of the action units each reads against the recorded ones (`au_auc`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.companion import FILENAME, pool  # noqa: E402
from affectvlm.data.aus import COMPOUND_LABELS, recorded_aus  # noqa: E402
from affectvlm.predictor import AffectVLMPredictor  # noqa: E402
from affectvlm.prompts import inference_prompts  # noqa: E402
from affectvlm.vocabulary import HELD_OUT_VOCABULARY  # noqa: E402
from train.evaluate import AU_ACTIVE_FROM, Embedded, compound_prompts  # noqa: E402
from train.metrics_calibration import expected_calibration_error, fit_temperature, roc_auc, softmax  # noqa: E402

FOLDER = "normal_maps"
WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.05), 2)
# what the companion folder keeps of a checkpoint: the predictor loads it with the package, never as remote code
KEEP = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
        "prompt_features.safetensors", "selection.json", "training_config.yaml")  # fmt: skip


class Pair:
    """The same samples embedded by both models, in the main cache's order: `main`, `companion` (Embedded)."""

    def __init__(self, main: AffectVLMPredictor, companion: AffectVLMPredictor, grey: str, normal: str):
        self.main = Embedded(main.model, main.processor, grey, desc="grey")
        other = Embedded(companion.model, companion.processor, normal, desc="normal maps")
        index = {e["key"]: i for i, e in enumerate(other.entries)}
        missing = [e["key"] for e in self.main.entries if e["key"] not in index]
        if missing:
            raise SystemExit(f"{normal} lacks {len(missing)} of {grey}'s samples, e.g. {missing[0]}")
        rows = np.asarray([index[e["key"]] for e in self.main.entries])
        other.fused, other.entries = other.fused[rows], [other.entries[i] for i in rows]
        self.companion = other

    def where(self, labels, kind: str | None = None) -> np.ndarray:
        """The samples whose label is one of `labels` (and, given `kind`, "3d" or "4d", of that kind)."""
        return np.asarray([i for i, e in enumerate(self.main.entries) if e["label"] in labels
                           and kind in (None, "4d" if e["sequence"] else "3d")], dtype=int)  # fmt: skip

    def logits(self, predictors, rows, prompts=None) -> tuple[np.ndarray, np.ndarray]:
        """(main, companion) logits of samples `rows` at each model's served temperature; `prompts`: label ->
        prompts (default: each model's own labels as it serves them)."""
        out = []
        for emb, predictor in zip((self.main, self.companion), predictors):
            if prompts is None:
                embeds = predictor.class_embeddings(None)[1]
            else:
                embeds = predictor.model.encode_prompts(prompts, tokenizer=predictor.processor.tokenizer)
            out.append(emb.logits(embeds.float().cpu(), rows))
        return out[0], out[1]

    def truth(self, names: list[str], rows) -> np.ndarray:
        return np.asarray([names.index(self.main.entries[i]["label"]) for i in rows])


def _joined(pairs: list[Pair], predictors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = predictors[0].default_labels
    rows = [pair.where(names) for pair in pairs]
    main, other = zip(*(pair.logits(predictors, r) for pair, r in zip(pairs, rows)))
    return np.concatenate(main), np.concatenate(other), np.concatenate([p.truth(names, r) for p, r in zip(pairs, rows)])


def fit(pairs: list[Pair], predictors) -> dict:
    """The companion's temperature (a factor on the one it serves with), then the weight: the most right answers,
    ties to the lowest NLL."""
    main, other, y = _joined(pairs, predictors)
    temperature = fit_temperature(other, y)
    p_main, p_other = softmax(main), softmax(other, temperature)
    table = []
    for w in WEIGHTS:
        mixed = pool(p_main, p_other, float(w)).astype(np.float64)
        nll = float(-np.log(np.clip(mixed[np.arange(len(y)), y], 1e-12, None)).mean())
        table.append({"weight": float(w), "accuracy": float((mixed.argmax(-1) == y).mean()), "nll": nll})
    best = max(table, key=lambda r: (round(r["accuracy"], 6), -r["nll"]))
    return {"temperature": round(temperature, 4), "weight": best["weight"], "samples": len(y), "table": table}


def write(main_dir: Path, companion_dir: Path, fitted: dict, out: Path) -> None:
    if out.resolve() != main_dir.resolve():
        shutil.copytree(main_dir, out, dirs_exist_ok=True)
    (out / FOLDER).mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (companion_dir / name).is_file():
            shutil.copy2(companion_dir / name, out / FOLDER / name)
    config = json.loads((out / FOLDER / "config.json").read_text())
    # fitted on logits already divided by the companion's own temperature (1 after a training run)
    config["temperature"] = round(float(config.get("temperature", 1.0)) * fitted["temperature"], 4)
    (out / FOLDER / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    about = (
        f"normal maps of the same scans; weight and the companion's temperature fitted on {fitted['samples']} "
        "validation samples by train/companion.py"
    )
    settings = {"folder": FOLDER, "weight": fitted["weight"], "about": about}
    (out / FILENAME).write_text(json.dumps(settings, indent=2) + "\n")


def _groups(pair: Pair, rows: np.ndarray) -> dict[str, np.ndarray]:
    entries = [pair.main.entries[i] for i in rows]
    kind = np.asarray(["4d" if e["sequence"] else "3d" for e in entries])
    face = np.asarray([(e.get("metadata") or {}).get("face_model", "?") for e in entries])
    out = {"all": np.ones(len(rows), bool)}
    out |= {f"{f}/{k}": (face == f) & (kind == k) for f in sorted(set(face)) for k in ("3d", "4d")}
    out["3d level 1"] = np.asarray([e.get("intensity") == 1 and not e["sequence"] for e in entries])
    out["neutral recall"] = np.asarray([e["label"] == "neutral" for e in entries])
    return {k: v for k, v in out.items() if v.any()}


def _right(pair: Pair, predictors, weight: float, rows, y, prompts=None) -> float:
    main, other = pair.logits(predictors, rows, prompts)
    return float((pool(softmax(main), softmax(other), weight).argmax(-1) == y).mean())


def _open_vocabulary(pair: Pair, predictors, weight: float) -> dict:
    names = [n for n in predictors[0].default_labels if n in HELD_OUT_VOCABULARY]
    rows = pair.where(names, "3d")
    y = pair.truth(names, rows)

    def right(prompts):
        return _right(pair, predictors, weight, rows, y, prompts)

    plain = right(inference_prompts(names))
    words = min(len(HELD_OUT_VOCABULARY[n]) for n in names)
    one = [right({n: inference_prompts([HELD_OUT_VOCABULARY[n][j]])[HELD_OUT_VOCABULARY[n][j]] for n in names})
           for j in range(words)]  # fmt: skip
    return {"plain_words": plain, "held_out_one_word_mean": float(np.mean(one)), "ratio": float(np.mean(one)) / plain}


def _au_auc(pair: Pair, predictors, weight: float) -> dict | None:
    """Mean ROC AUC of the action units each model serves (`AffectVLMModel.action_unit_probs`) against the recorded
    AU activity, for the main model, the companion and their log-odds pooled with `weight` (None: no AU records)."""
    records = [recorded_aus(e.get("metadata")) for e in pair.main.entries]
    rows = np.asarray([i for i, r in enumerate(records) if r is not None], dtype=int)
    if not len(rows) or any(p._au_embeddings() is None for p in predictors):
        return None
    numbers, logits = None, []
    for emb, predictor in zip((pair.main, pair.companion), predictors):
        own, au_embeds = predictor._au_embeddings()
        if numbers not in (None, own):
            raise SystemExit(f"the models read different action units: {numbers} and {own}")
        numbers = own
        probs = predictor.model.action_unit_probs(emb.fused[rows], au_embeds.float().cpu()).double().numpy()
        logits.append(np.log(probs) - np.log1p(-probs))
    active = np.asarray([[records[i].get(n, 0.0) >= AU_ACTIVE_FROM for n in numbers] for i in rows])
    out = {}
    for name, w in (("main", 0.0), ("companion", 1.0), ("served", weight)):
        scores = (1 - w) * logits[0] + w * logits[1]
        aucs = [roc_auc(scores[:, j], active[:, j]) for j in range(len(numbers))]
        out[name] = round(float(np.mean([a for a in aucs if a is not None])), 4)
    out["samples"] = len(rows)
    return out


def report(pair: Pair, predictors, weight: float) -> dict:
    names = predictors[0].default_labels
    rows = pair.where(names)
    main, other = pair.logits(predictors, rows)
    y = pair.truth(names, rows)
    groups = _groups(pair, rows)
    compound = pair.where(COMPOUND_LABELS)
    out = {}
    for name, w in (("main", 0.0), ("companion", 1.0), ("served", weight)):
        probs = pool(softmax(main), softmax(other), w)
        right = probs.argmax(-1) == y
        out[name] = {g: round(float(right[m].mean()), 4) for g, m in groups.items()}
        out[name]["ece"] = round(expected_calibration_error(probs, y), 4)
        if len(pair.where(names, "3d")):
            out[name]["open_vocabulary"] = _open_vocabulary(pair, predictors, w)
        if len(compound):  # scored against the compound expressions' names and AUs, never trained as labels
            truth = pair.truth(list(COMPOUND_LABELS), compound)
            right = _right(pair, predictors, w, compound, truth, compound_prompts())
            out[name]["compound_times_chance"] = round(right * len(COMPOUND_LABELS), 3)
    out["samples"], out["compound_samples"] = len(y), len(compound)
    out["au_auc"] = _au_auc(pair, predictors, weight)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the main checkpoint (grey views)")
    parser.add_argument("--companion", help="with --fit: the normal-map checkpoint to add")
    parser.add_argument("--fit", action="append", default=[], metavar="GREY=NORMAL",
                        help="validation caches, the same samples twice (repeatable)")  # fmt: skip
    parser.add_argument("--report", action="append", default=[], metavar="NAME=GREY=NORMAL",
                        help="held-out caches to report on (repeatable)")  # fmt: skip
    parser.add_argument("--out", required=True, help="--fit: the checkpoint to write; --report: the JSON report")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if bool(args.fit) == bool(args.report) or bool(args.fit) != bool(args.companion):
        raise SystemExit("give --fit with --companion, or --report with a checkpoint that has a companion")
    if args.fit:
        predictors = [AffectVLMPredictor.from_pretrained(p, companion=False) for p in (args.model, args.companion)]
        pairs = [Pair(*predictors, *spec.split("=", 1)) for spec in args.fit]
        fitted = fit(pairs, predictors)
        write(Path(args.model), Path(args.companion), fitted, Path(args.out))
        result = {k: v for k, v in fitted.items() if k != "table"}
    else:
        served = AffectVLMPredictor.from_pretrained(args.model)
        if served.companion is None:
            raise SystemExit(f"{args.model} has no companion ({FILENAME})")
        predictors = [served, served.companion.predictor]
        result = {}
        for spec in args.report:
            name, grey, normal = spec.split("=", 2)
            result[name] = report(Pair(*predictors, grey, normal), predictors, served.companion.weight)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
