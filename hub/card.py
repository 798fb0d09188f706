"""The model card: cross-validation results read from `results.json`, and the README.md written from them.

`results.json` is what `train/cross_validate.py` writes: one summary per variant (the full model, ablations,
baselines), the fold lists and the command. The card uses one variant (default "full"):

    {
      "config": "synth-cpu", "task": "3d", "k": 3, "folds_run": [0, 1, 2], "fold_lists": [...],
      "variants": {
        "full": {"folds": [0, 1, 2], "accuracy_per_fold": [0.81, 0.79, 0.83],
                 "accuracy_mean": 0.81, "accuracy_std": 0.02,           # std over folds (sample, ddof=1)
                 "macro_f1_mean": 0.80, "per_class_f1": {"anger": 0.7, ...},   # pooled over all test samples
                 "pooled_accuracy": 0.81, "confusion_matrix": [...], ...},
        ...
      }
    }

The reader is lenient, because the card must not break when that file gains or loses a key. It also takes
a flat file ({"dataset", "protocol", "folds": [{"fold", "accuracy", "macro_f1", "per_class_f1"}],
"mean_accuracy", "std_accuracy", "per_class_f1"}; accuracy may sit under "test"/"metrics") and a single
run's results.json from `train/train.py` (metrics under "test"). What is missing is filled in: the mean and
the sample std from the folds, the dataset ("SynthFER-3D" for cross_validate.py's tasks, which run only on
SynthFER-3D), the protocol from k, the folds run and the task. A file in percent (any accuracy above 1) is
read as percent throughout: every score becomes a fraction.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python hub/card.py`: make the `hub` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES  # noqa: E402
from hub.common import CUSTOM_PIPELINES, PublishError  # noqa: E402

# The card's pipeline_tag is the task of the pipeline shipped with the weights (config.json's custom_pipelines):
# `pipeline(TASK, model=repo_id, trust_remote_code=True)` is a call that works.
TASK = next(iter(CUSTOM_PIPELINES))
TAGS = ["affectvlm", "facial-expression-recognition", "3d", "4d", "multiview", "clip", "zero-shot"]
SFM_LICENSE_NAME = "surrey-face-model-non-commercial"
SFM_NOTICE = (
    "**Licence of these weights.** This checkpoint was trained on SynthFER-3D, synthetic 3D/4D face scans "
    "generated from the **Surrey Face Model** (distributed with the eos library, github.com/patrikhuber/eos). "
    "The face model is free for **non-commercial use only (research and teaching)**, and so are the weights "
    "derived from it: do not use this checkpoint commercially. The AffectVLM code is Apache-2.0."
)

INTRO = (
    "An AffectVLM checkpoint: a multiview CLIP that recognises facial expressions from 3D and 4D face "
    "scans. A scan is rendered into views, each view is embedded by the vision backbone, the views are "
    "fused, and the result is scored against CLIP text embeddings of prompts, so any label can be scored."
)

_FOLD_KEYS = ("folds", "per_fold", "fold_results", "fold_metrics")
# cross_validate.py's tasks, all on SynthFER-3D (its TASKS: 3d -> synth3d, 4d -> synth4d, all -> both)
_TASKS = {"3d": "static 3D scans", "4d": "4D sequences (dynamic images)", "all": "3D scans and 4D sequences"}
_NESTED = ("test", "metrics", "eval", "evaluation")


@dataclass
class FoldResult:
    fold: str
    accuracy: float
    macro_f1: float | None = None
    num_samples: int | None = None
    per_class_f1: dict[str, float] = field(default_factory=dict)


@dataclass
class CrossValidation:
    """Cross-validation results, as fractions (accuracy 0.81, not 81)."""

    dataset: str
    protocol: str
    folds: list[FoldResult]
    mean_accuracy: float
    std_accuracy: float
    per_class_f1: dict[str, float] = field(default_factory=dict)
    per_class_f1_note: str = ""  # how the per-class F1 were computed
    macro_f1: float | None = None
    variant: str | None = None
    std_computed: bool = False  # True when the std came from the folds, not from the file


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _find(entry: Mapping, keys: tuple[str, ...]):
    """The first of `keys` in `entry` or in one of its nested metric dicts ("test", "metrics", ...)."""
    for scope in (entry, *(entry[k] for k in _NESTED if isinstance(entry.get(k), Mapping))):
        for key in keys:
            if key in scope:
                return scope[key]
    return None


def _label_scores(value) -> dict[str, float]:
    """{label: score} from {label: score} or {label: {"mean": score, ...}}; {} for anything else."""
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for label, score in value.items():
        score = score.get("mean") if isinstance(score, Mapping) else score
        if _number(score) is not None:
            out[str(label)] = float(score)
    return out


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if isinstance(value.get("name"), str):
            return value["name"]
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _fold_results(section: Mapping) -> list[FoldResult]:
    """The per-fold results of one summary: cross_validate.py's parallel lists, or a list of fold dicts."""
    accuracies = section.get("accuracy_per_fold")
    if isinstance(accuracies, list) and accuracies:
        if not all(_number(a) is not None for a in accuracies):
            raise PublishError("accuracy_per_fold must hold numbers")
        names = section.get("folds")
        names = names if isinstance(names, list) and len(names) == len(accuracies) else range(len(accuracies))
        return [FoldResult(fold=str(name), accuracy=float(a)) for name, a in zip(names, accuracies)]
    entries = next(
        (section[k] for k in _FOLD_KEYS if isinstance(section.get(k), list) and section[k]
         and all(isinstance(e, Mapping) and _find(e, ("accuracy", "acc")) is not None for e in section[k])),
        None,
    )
    if entries is None and isinstance(section.get("test"), Mapping) and "accuracy" in section["test"]:
        entries = [section]  # a single training run's results.json (train/train.py): one held-out fold
    folds = []
    for i, entry in enumerate(entries or []):
        accuracy = _number(_find(entry, ("accuracy", "acc")))
        if accuracy is None:
            raise PublishError(f"fold {i} of the results has a non-numeric accuracy")
        name = entry.get("fold", entry.get("index", i))
        if isinstance(name, Mapping):  # a Fold.to_dict() (index + subject lists)
            name = name.get("index", i)
        count = _number(_find(entry, ("num_samples", "n_test", "num_test")))
        folds.append(
            FoldResult(
                fold=str(name),
                accuracy=accuracy,
                macro_f1=_number(_find(entry, ("macro_f1", "f1_macro"))),
                num_samples=None if count is None else int(count),
                per_class_f1=_label_scores(_find(entry, ("per_class_f1",))),
            )
        )
    return folds


def _pick_variant(data: Mapping, variant: str | None) -> tuple[Mapping, str | None]:
    """cross_validate.py's file: the summary of `variant` (default "full", or the only one)."""
    variants = data.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        if variant is not None:
            raise PublishError(f"--variant {variant}: the results have no per-variant summaries")
        return data, None
    if variant is None:
        variant = "full" if "full" in variants else (next(iter(variants)) if len(variants) == 1 else None)
    if variant not in variants or not isinstance(variants[variant], Mapping):
        raise PublishError(
            f"choose the variant this checkpoint is (--variant): the results have {', '.join(variants)}"
            + (f", not {variant!r}" if variant else "")
        )
    return variants[variant], variant


def _protocol(data: Mapping, k: int, variant: str | None) -> str:
    """'subject-independent 10-fold cross-validation, static 3D scans' from cross_validate.py's keys."""
    total = data.get("k") if isinstance(data.get("k"), int) else k
    if total == 1:  # a single training run: one fold's test subjects, not a cross-validation
        text = "subject-independent train/test split (one fold)"
    else:
        text = f"subject-independent {total}-fold cross-validation"
    run = data.get("folds_run")
    if isinstance(run, list) and isinstance(total, int) and 0 < len(run) < total:
        text += f" (folds {', '.join(map(str, run))} run)"
    if data.get("task") in _TASKS:
        text += f", {_TASKS[data['task']]}"
    if variant not in (None, "full"):
        text += f", variant {variant}"
    return text


def parse_results(data, variant: str | None = None) -> CrossValidation:
    """Results dict (see the module docstring) -> CrossValidation; raises PublishError if unusable."""
    if not isinstance(data, Mapping):
        raise PublishError("results must be a JSON object")
    section, variant = _pick_variant(data, variant)
    folds = _fold_results(section)

    summary = section.get("accuracy")
    summary = summary if isinstance(summary, Mapping) else {"mean": summary}
    mean = _number(section.get("mean_accuracy", section.get("accuracy_mean", summary.get("mean"))))
    std = _number(section.get("std_accuracy", section.get("accuracy_std", summary.get("std"))))
    if mean is None and not folds:
        raise PublishError("results have neither per-fold accuracies nor a mean accuracy")
    # One scale for the whole file, decided on the accuracies: a per-value guess would misread a std of
    # 0.8 (percent) as 80%.
    scale = 0.01 if any(a > 1.0 for a in [f.accuracy for f in folds] + ([mean] if mean is not None else [])) else 1.0
    for f in folds:
        f.accuracy *= scale
        f.macro_f1 = None if f.macro_f1 is None else f.macro_f1 * scale
        f.per_class_f1 = {label: v * scale for label, v in f.per_class_f1.items()}
    accuracies = [f.accuracy for f in folds]
    std_computed = std is None
    mean = mean * scale if mean is not None else statistics.fmean(accuracies)
    # The sample std (ddof=1) over folds when the file gives none, as cross_validate.py computes it.
    std = std * scale if std is not None else (statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0)

    per_class = {label: v * scale for label, v in _label_scores(section.get("per_class_f1")).items()}
    note = "over the test predictions of all folds together" if "pooled_accuracy" in section else ""
    if not per_class and folds and all(f.per_class_f1 for f in folds):
        per_class = {
            label: statistics.fmean(f.per_class_f1.get(label, 0.0) for f in folds) for label in folds[0].per_class_f1
        }
        note = "averaged over the folds"
    macro = _number(section.get("macro_f1_mean", section.get("mean_macro_f1", section.get("macro_f1"))))
    macro = macro * scale if macro is not None else None
    if macro is None and folds and all(f.macro_f1 is not None for f in folds):
        macro = statistics.fmean(f.macro_f1 for f in folds)

    dataset = _text(data.get("dataset", data.get("dataset_name")))
    if dataset is None and data.get("task") in _TASKS:
        dataset = "SynthFER-3D"
    return CrossValidation(
        dataset=dataset or "unknown dataset",
        protocol=_text(data.get("protocol")) or _protocol(data, len(folds), variant),
        folds=folds,
        mean_accuracy=mean,
        std_accuracy=std,
        per_class_f1=per_class,
        per_class_f1_note=note,
        macro_f1=macro,
        variant=variant,
        std_computed=std_computed,
    )


def load_results(path: Path, variant: str | None = None) -> CrossValidation:
    """Read and parse `results.json`; every failure is a PublishError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise PublishError(f"cannot read results file {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PublishError(f"results file {path} is not valid JSON: {err}") from None
    try:
        return parse_results(data, variant)
    except PublishError as err:
        raise PublishError(f"results file {path}: {err}") from None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "dataset"


def eval_results(results: CrossValidation) -> list:
    """model-index entries: accuracy per fold (split "fold-<k>"), and mean/std over the folds."""
    from huggingface_hub import EvalResult

    common = dict(
        task_type=TASK,
        task_name="Facial expression recognition",
        dataset_type=_slug(results.dataset),
        dataset_name=results.dataset,
        dataset_config=results.protocol,
    )
    out = [
        EvalResult(
            **common,
            dataset_split=f"fold-{fold.fold}",
            metric_type="accuracy",
            metric_name=f"Accuracy (fold {fold.fold})",
            metric_value=round(fold.accuracy, 4),
        )
        for fold in results.folds
    ]
    k = len(results.folds)
    split = f"{k}-fold-cv" if k else "cross-validation"
    over = f"over {k} folds" if k else "over the folds"
    out.append(
        EvalResult(
            **common, dataset_split=split, metric_type="accuracy", metric_name=f"Mean accuracy {over}",
            metric_value=round(results.mean_accuracy, 4),
        )
    )
    # Not a Hub metric id: the std has none, and folding it into the mean's value ("0.80 ± 0.02") would
    # stop leaderboards from reading the mean as a number.
    out.append(
        EvalResult(
            **common, dataset_split=split, metric_type="accuracy_std", metric_name=f"Std of accuracy {over}",
            metric_value=round(results.std_accuracy, 4),
        )
    )
    if results.macro_f1 is not None:
        out.append(
            EvalResult(
                **common, dataset_split=split, metric_type="f1", metric_config="macro",
                metric_name=f"Mean macro F1 {over}", metric_value=round(results.macro_f1, 4),
            )
        )
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _results_section(results: CrossValidation | None) -> str:
    if results is None:
        return "## Evaluation\n\nNo cross-validation results were given when this checkpoint was published.\n"
    lines = [
        "## Evaluation",
        "",
        (
            f"Cross-validation of this checkpoint's training configuration on **{results.dataset}**, "
            f"protocol: {results.protocol}. Accuracy in %."
        ),
        "",
    ]
    if results.folds:
        with_f1 = all(f.macro_f1 is not None for f in results.folds)
        lines += ["| fold | accuracy |" + (" macro F1 |" if with_f1 else ""),
                  "|---|---|" + ("---|" if with_f1 else "")]
        for f in results.folds:
            lines.append(f"| {f.fold} | {_pct(f.accuracy)} |" + (f" {_pct(f.macro_f1)} |" if with_f1 else ""))
        lines.append("")
    std_note = " (sample std of the fold accuracies)" if results.std_computed else " (std over the folds)"
    lines.append(
        f"**Mean accuracy: {_pct(results.mean_accuracy)} ± {_pct(results.std_accuracy)}**{std_note}"
        + (f"; mean macro F1: {_pct(results.macro_f1)}" if results.macro_f1 is not None else "")
        + "."
    )
    if results.per_class_f1:
        how = f", {results.per_class_f1_note}" if results.per_class_f1_note else ""
        lines += ["", f"Per-class F1 (%){how}:", "",
                  "| " + " | ".join(results.per_class_f1) + " |",
                  "|" + "---|" * len(results.per_class_f1),
                  "| " + " | ".join(_pct(v) for v in results.per_class_f1.values()) + " |"]
    return "\n".join(lines) + "\n"


def _model_section(config: Mapping, processor_config: Mapping) -> str:
    clip = config.get("clip_config") or {}
    vision, text = clip.get("vision_config") or {}, clip.get("text_config") or {}
    crop = (processor_config.get("image_processor") or {}).get("crop_size") or {}
    size = f"{crop['height']}x{crop['width']} px views" if "height" in crop and "width" in crop else "views"
    if config.get("vision_backbone", "clip") == "resnet":
        resnet = config.get("resnet_config") or {}
        widths = resnet.get("hidden_sizes") or []
        tower = (
            f"a ResNet ({resnet.get('layer_type', 'bottleneck')} blocks, depths {resnet.get('depths')}, "
            f"{widths[0] if widths else '?'}-{widths[-1] if widths else '?'} channels) on {size}, projected "
            "into CLIP's text embedding space"
        )
    else:
        tower = (
            f"CLIP's ViT ({vision.get('num_hidden_layers')} layers, width {vision.get('hidden_size')}, "
            f"patch {vision.get('patch_size')}) on {size}"
        )
    return (
        "## Model\n\n"
        f"- Views: {', '.join(config.get('view_names') or [])}, each embedded by {tower}; fused by "
        f"`{config.get('fusion', 'mean')}`.\n"
        f"- Text: CLIP's text tower ({text.get('num_hidden_layers')} layers, width {text.get('hidden_size')}).\n"
        f"- Labels it was trained on: {', '.join(config.get('label_names') or [])}. Any other label or prompt "
        "can be scored (zero-shot).\n"
    )


def _usage_section(repo_id: str, config: Mapping) -> str:
    labels = list(config.get("label_names") or ["happiness", "sadness"])
    views = list(config.get("view_names") or DEFAULT_VIEW_NAMES)
    view_list = json.dumps(views)  # a Python list literal with double quotes, like the rest of the snippet
    prompts = ",\n    ".join(
        f"{json.dumps(label)}: [{json.dumps(f'a 3D scan of a face, expression: {label}.')}]" for label in labels
    )
    view_files = json.dumps([f"{name}.png" for name in views])
    return f"""## Usage

The model code ships with the weights (remote code: it needs only `torch` and `transformers>=5.23`).

```python
from PIL import Image
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)

# One sample = {len(views)} rendered views of a face, in the order {view_list}; None for a missing view.
views = [Image.open(f"{{name}}.png") for name in {view_list}]
inputs = processor(images=[views], return_tensors="pt")

# Class embeddings from prompts (several prompts per label are averaged); compute once, reuse.
class_embeds = model.encode_prompts({{
    {prompts},
}}, tokenizer=processor.tokenizer)
scores = model.score(inputs["pixel_values"], class_embeds, view_mask=inputs["view_mask"])
print(scores.probs)               # (1, labels)
print(scores.view_contributions)  # (1, views, labels): each view's additive share of the logit
```

The same as a `pipeline` (its code ships with the weights too). The answer is a list of
`{{"label": ..., "score": ...}}`, highest score first; its `.notes` say what to know about it (missing views, ...):

```python
from transformers import pipeline

classifier = pipeline("{TASK}", model="{repo_id}", trust_remote_code=True)
print(classifier(images={view_files}, candidate_labels={json.dumps(labels)}))
```

To score a 3D scan (obj, ply, stl, off, glb, wrl, bnt) or a 4D sequence directly, rendering included, install the
`affectvlm` package from the project repository (`pip install affectvlm`). The pipeline then takes scans and
sequences too, and scores everything exactly as the package's `AffectVLMPredictor` does (without it, views are
scored with one prompt per label):

```python
print(classifier(scan="face.obj", candidate_labels=["happiness", "a person in pain"]))
print(classifier(sequence="frames.zip"))  # a folder, a .zip or a list of frames; the model's own labels

from affectvlm import AffectVLMPredictor

predictor = AffectVLMPredictor.from_pretrained("{repo_id}")
print(predictor(scan="face.obj").scores())
```
"""


def model_card(
    repo_id: str,
    config: Mapping,
    processor_config: Mapping,
    results: CrossValidation | None = None,
    *,
    license: str = "other",
    sfm_notice: bool = True,
    base_model: str | None = None,
    base_card: str | None = None,
):
    """The `ModelCard` (README.md) of a checkpoint: YAML metadata with the model-index, then the text.

    `base_card`: the checkpoint's own README.md, written by whoever trained it. Its text is kept as the
    body (it knows the checkpoint best) and its metadata as the base; the card adds what the Hub needs
    and it lacks: library_name, pipeline_tag, tags, the model-index from `results`, the remote-code usage,
    the results section and the licence note.
    """
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        license=license,
        # The Hub wants a name for an "other" licence; the only "other" this project ships is the SFM's.
        license_name=SFM_LICENSE_NAME if license == "other" and sfm_notice else None,
        library_name="transformers",
        pipeline_tag=TASK,
        tags=TAGS,
        base_model=base_model,
        model_name=repo_id,
        eval_results=eval_results(results) if results is not None else None,
    )
    if base_card is not None:
        return _merged_card(ModelCard(base_card), data, repo_id, config, results, sfm_notice)
    name = repo_id.split("/")[-1]
    body = [
        f"# {name}",
        "",
        INTRO,
        "",
    ]
    if sfm_notice:
        body += [SFM_NOTICE, ""]
    body += [_model_section(config, processor_config), _usage_section(repo_id, config), _results_section(results)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def _merged_card(base, data, repo_id: str, config: Mapping, results: CrossValidation | None, sfm_notice: bool):
    """The checkpoint's own card, completed: its metadata and text win; ours fills what is missing."""
    from huggingface_hub import ModelCard, ModelCardData

    ours, theirs = data.to_dict(), base.data.to_dict()
    merged = {**ours, **{k: v for k, v in theirs.items() if v is not None and k != "model-index"}}
    merged["tags"] = list(dict.fromkeys([*(theirs.get("tags") or []), *TAGS]))
    if "license" in theirs:  # a licence name belongs to the licence it names
        merged.pop("license_name", None)
        merged.update({k: theirs[k] for k in ("license_name", "license_link") if k in theirs})
    merged["model_name"] = repo_id
    merged["eval_results"] = data.eval_results
    merged.pop("model-index", None)
    text = base.text.rstrip() + "\n"
    if sfm_notice and "Surrey Face Model" not in text:
        text += "\n" + SFM_NOTICE + "\n"
    text += "\n" + _usage_section(repo_id, config).replace("## Usage", "## Usage from the Hub", 1)
    if results is not None:
        text += "\n" + _results_section(results).replace("## Evaluation", "## Cross-validation results", 1)
    return ModelCard(f"---\n{ModelCardData(**merged).to_yaml()}\n---\n\n" + text.lstrip("\n"))


def main(argv: list[str] | None = None) -> int:
    """`python hub/card.py RESULTS_JSON`: print the card's results section, as `push.py --results` would write it."""
    parser = argparse.ArgumentParser(
        prog="python hub/card.py",
        description=(
            "Preview how a results.json (from train/cross_validate.py, a flat file or a single run of "
            "train/train.py) reads in a model card: prints the card's evaluation section (Markdown) and "
            "writes nothing. The whole card is written by `python hub/push.py CHECKPOINT --repo-id USER/NAME "
            "--results RESULTS_JSON --dry-run DIR`."
        ),
    )
    parser.add_argument("results", type=Path, metavar="RESULTS_JSON", help="the results file to read")
    parser.add_argument("--variant", help="which variant of cross_validate.py's results (default: full)")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results, args.variant)
    except PublishError as err:
        print(f"card.py: error: {err}", file=sys.stderr)
        return 2
    print(_results_section(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
