"""Restrict a trained model's text projection to the concepts it was trained on (open-vocabulary words).

A model with a frozen pretrained text encoder (MiniLM) learns a linear projection of the encoder's 384-d
sentence features into the shared space from a few thousand prompts about seven labels and 25 action units.
Almost all of what those prompts vary along is wording that every class shares (templates, metadata words,
synonyms); the projection's response to those directions is barely constrained by the loss, and is left near
its random start or fitted to noise. A word no prompt contained ("livid") has part of its features along them,
and lands off its meaning. This tool replaces the projection W with W Q Q^T, Q an orthonormal basis of the
*concept subspace*: the span of the centroids of each label's training prompts, of each action unit's training
prompts and of each action unit's scoring prompts (57 of 384 dimensions for the shipped models). A new word
then acts through its similarity to the trained concepts only. The concepts' centroids keep their
embeddings exactly and single trained phrasings nearly, so plain-label accuracy and AU scoring barely move.

    python train/text_subspace.py --model /tmp/run/model --out /tmp/run/model-subspace \\
        --check /path/to/training/cache --check-run /tmp/run/results.json

`--check` reports, on the run's validation subjects only, the plain-label accuracy and the accuracy with each
class named by one word of affectvlm.vocabulary.VALIDATION_VOCABULARY (never trained, and disjoint from the
held-out test words), before and after. The output is a normal checkpoint folder; its config records the
subspace (`text_subspace`: rank and how many prompts defined it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm import AffectVLMModel, AffectVLMProcessor  # noqa: E402
from affectvlm.data.aus import AU_CATALOGUE, au_description  # noqa: E402
from affectvlm.prompt_features import write as write_prompt_features  # noqa: E402
from affectvlm.prompts import PromptBank, au_prompts  # noqa: E402
from affectvlm.vocabulary import VALIDATION_VOCABULARY  # noqa: E402


def concept_prompts(labels: list[str], bank: PromptBank | None = None) -> dict[str, list[str]]:
    """Concept -> its prompts: each label's metadata-free training prompts, each action unit's training
    prompts (the AU's description with every emotion word), and each action unit's scoring prompts."""
    bank = bank or PromptBank()
    out = {label: bank.all_prompts(label) for label in labels}
    emotions = [label for label in labels if label != "neutral"]
    for number in sorted(AU_CATALOGUE):
        description = au_description(number)
        trained = {
            p
            for label in emotions
            for p in bank.all_prompts(label, {"aus": {number: 1.0}})
            if description in p
        }
        if trained:
            out[f"AU{number} trained"] = sorted(trained)
    out.update({f"{name} scoring": prompts for name, prompts in au_prompts().items()})
    return out


@torch.no_grad()
def pooled_features(model: AffectVLMModel, tokenizer, prompts: list[str], batch: int = 256) -> torch.Tensor:
    """(N, H) the frozen text encoder's pooled sentence features, before any projection."""
    out = []
    for start in range(0, len(prompts), batch):
        tokens = tokenizer(
            prompts[start : start + batch],
            padding=True,
            truncation=True,
            max_length=model.max_text_length,
            return_tensors="pt",
        )
        out.append(model._pooled_text(tokens["input_ids"], tokens["attention_mask"]).float())
    return torch.cat(out)


def concept_basis(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(H, r) orthonormal basis of the span of the concepts' centroids (the overall mean lies in it)."""
    centroids = torch.stack([f.double().mean(0) for f in features.values()])
    u, s, _ = torch.linalg.svd(centroids.T, full_matrices=False)
    keep = s > 1e-6 * s[0]  # drop dependent directions (float64: rounding stays far below this)
    return u[:, keep].float()


def concept_subspace(model: AffectVLMModel, tokenizer) -> tuple[torch.Tensor, dict]:
    """The (H, r) basis of `model`'s concept subspace, and a record of how it was made."""
    if getattr(model, "text_model", None) is None or model.text_projection is None:
        raise ValueError("the concept subspace needs a model with a pretrained text encoder and a projection")
    prompts = concept_prompts(list(model.config.label_names))
    basis = concept_basis({name: pooled_features(model, tokenizer, group) for name, group in prompts.items()})
    info = {
        "rank": int(basis.shape[1]),
        "of": int(basis.shape[0]),
        "concepts": len(prompts),
        "prompts": sum(len(g) for g in prompts.values()),
        "how": "train/text_subspace.py: W <- W Q Q^T, Q spanning each label's and action unit's prompt centroid",
    }
    return basis, info


@torch.no_grad()
def project_text_projection(model: AffectVLMModel, basis: torch.Tensor) -> None:
    """W <- W Q Q^T in place (also after each optimizer step of a run trained in the subspace)."""
    weight = model.text_projection.weight
    q = basis.to(weight.device)
    weight.copy_((weight.float() @ q @ q.T).to(weight.dtype))  # (the memo of pooled features stays valid)


def restrict_text_projection(model: AffectVLMModel, tokenizer) -> torch.Tensor:
    """Replace the text projection W by W Q Q^T in place, record how in `model.config.text_subspace`, and
    return the basis Q."""
    basis, info = concept_subspace(model, tokenizer)
    project_text_projection(model, basis)
    model.config.text_subspace = info
    return basis


# For --help: which words the checks use.
WORDS_EPILOG = (
    "The validation words are affectvlm.vocabulary.VALIDATION_VOCABULARY; the test words "
    "(HELD_OUT_VOCABULARY) are only for train/evaluate.py."
)


def validation_check(model, processor, cache: str, run: str | None) -> dict:
    """Plain-label and one-validation-word accuracy, AU AUC and neutral recall on the run's validation subjects
    (every sample of `cache` without a run)."""
    from train.evaluate import Embedded, au_report, emotion_report, open_vocabulary_report

    subjects = set(json.loads(Path(run).read_text())["fold"]["val"]) if run else None
    emb = Embedded(model, processor, cache, subjects, desc="validation subjects")
    report = open_vocabulary_report(emb, model, processor.tokenizer, VALIDATION_VOCABULARY)
    return {
        "samples": report["n"],
        "plain_words": report["plain_words"],
        "one_validation_word": report["held_out_one_word_mean"],
        "ratio": report["ratio_one_word"],
        "au_auc": au_report(emb, model, processor.tokenizer).get("mean_auc"),
        "neutral_recall": emotion_report(emb, model, processor.tokenizer)["both/all"]["neutral_recall"],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=WORDS_EPILOG)
    parser.add_argument("--model", required=True, help="a trained checkpoint folder (e.g. <run>/model)")
    parser.add_argument("--out", required=True, help="where to write the restricted checkpoint")
    parser.add_argument("--check", metavar="CACHE", help="the training cache: report on validation subjects")
    parser.add_argument("--check-run", metavar="RESULTS", help="the run's results.json (its validation fold)")
    return parser


def load_to_rewrite(model_dir: str, out_dir: str) -> tuple[AffectVLMModel, AffectVLMProcessor, Path]:
    """The trained checkpoint (model, processor) that a tool writes anew into `out_dir`, never over itself."""
    out = Path(out_dir)
    if out.resolve() == Path(model_dir).resolve():
        raise ValueError("--out must differ from --model: the original checkpoint is kept")
    return (
        AffectVLMModel.from_pretrained(model_dir).eval(),
        AffectVLMProcessor.from_pretrained(model_dir),
        out,
    )


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)

    def restrict(model, processor) -> dict:
        restrict_text_projection(model, processor.tokenizer)
        return model.config.text_subspace

    return rewrite_checked(args.model, args.out, "subspace", restrict, args.check, args.check_run)


def rewrite_checked(model_dir: str, out_dir: str, name: str, change, check=None, check_run=None) -> dict:
    """Load a trained checkpoint, apply `change(model, processor) -> record` (kept as `name`), report
    `validation_check` on `check` before and after, and write the changed checkpoint into `out_dir` (a copy of
    the folder with the new weights and config). Prints and returns the report."""
    model, processor, out = load_to_rewrite(model_dir, out_dir)
    result = {"before": validation_check(model, processor, check, check_run)} if check else {}
    result[name] = change(model, processor)
    if check:
        result["after"] = validation_check(model, processor, check, check_run)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    model.save_pretrained(out)
    result["prompt_features"] = write_prompt_features(out)  # the copied ones may be another encoder's
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
