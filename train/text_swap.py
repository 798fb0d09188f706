"""Give a trained model a better text encoder, keeping everything it learnt about faces (open-vocabulary words).

A model trained against a frozen sentence encoder (MiniLM) reads a never-trained word ("livid") only as well as
that encoder places it: MiniLM puts 0.58 of the held-out words nearest their own class, and no projection of its
space reads them much better. A larger encoder (all-mpnet-base-v2: 0.84) places them far better, but training the
view encoder against it again takes hours here. This tool keeps the view encoder, the fusion and the logit scale
as they are and fits only the new encoder's projection into the shared space, so that it gives every prompt the
model trained on (each label's and each action unit's training prompts, `train.text_subspace.concept_prompts`)
and every prompt it scores with (each label's inference prompts, each action unit's scoring prompts) the text
embedding the trained model gives it: weighted ridge regression, the scoring prompts weighted `--served-weight`
times, `--ridge` keeping the map smooth where the prompts say nothing; then the least change that puts each
scoring class (a label's inference prompts, an action unit's scoring prompts) back on its trained embedding (a
cosine of 1.0000 to four places for the shipped models), so that every answer on the trained labels and action
units stays what it was. A new word then lands where the new encoder's neighbourhoods put it. No face is seen:
the fit needs the prompts only.

    python train/text_swap.py --model checkpoints/affectvlm-cpu --out /tmp/swap/affectvlm-cpu \\
        --text-model sentence-transformers/all-mpnet-base-v2 --check /path/to/validation/cache

`--check` reports on the samples of a render cache (validation subjects: never the test ones) the plain-label
accuracy, the accuracy with each class named by one word of affectvlm.vocabulary.VALIDATION_VOCABULARY (never
trained, and disjoint from the held-out test words), AU AUC and neutral recall, before and after. The output is a
normal checkpoint folder with the new encoder's tokenizer; its config names the new encoder (loaded from its
installed package or the Hub, `text_weights: external`) and records the fit (`text_swap`).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm import AffectVLMModel  # noqa: E402
from affectvlm.modeling_affectvlm import resolve_text_model  # noqa: E402
from affectvlm.prompt_features import write as write_prompt_features  # noqa: E402
from affectvlm.prompts import au_prompts, inference_prompts  # noqa: E402
from train.text_subspace import (  # noqa: E402
    WORDS_EPILOG,
    concept_prompts,
    load_to_rewrite,
    pooled_features,
    validation_check,
)

DEFAULT_TEXT_MODEL = "sentence-transformers/all-mpnet-base-v2"
# Chosen on the validation words of 40 held-out identities (seed 21), docs/RESULTS.md "A better language side"
DEFAULT_RIDGE = 50.0
DEFAULT_SERVED_WEIGHT = 30.0
# Rounds of aiming each scoring class's mean feature so that the class's embedding lands on the trained one.
_CLASS_ROUNDS = 4
# Files of the trained checkpoint that the swapped one keeps as they are (the tokenizer and weights are new).
_KEPT_FILES = ("README.md", "selection.json", "training_config.yaml")


def scoring_classes(labels: list[str]) -> dict[str, list[str]]:
    """What the model scores with: each label's inference prompts and each action unit's scoring prompts."""
    return {**inference_prompts(labels), **au_prompts()}


def swap_prompts(labels: list[str]) -> tuple[list[str], list[bool]]:
    """Every prompt the fit reproduces (sorted), and which of them are scoring prompts (served)."""
    served = {p for group in scoring_classes(labels).values() for p in group}
    prompts = sorted({p for group in concept_prompts(labels).values() for p in group} | served)
    return prompts, [p in served for p in prompts]


def fit_projection(
    features: torch.Tensor, targets: torch.Tensor, served: list[bool], ridge: float, served_weight: float
) -> torch.Tensor:
    """(D, H) W minimising sum_i w_i |W x_i - t_i|^2 + ridge |W|^2, w_i = served_weight for scoring prompts."""
    x, t = features.double(), targets.double()
    w = torch.tensor([served_weight if s else 1.0 for s in served], dtype=torch.double)[:, None]
    gram = x.T @ (w * x) + ridge * torch.eye(x.shape[1], dtype=torch.double)
    return torch.linalg.solve(gram, x.T @ (w * t)).T.float()


def keep_class_directions(
    weight: torch.Tensor, class_features: torch.Tensor, class_targets: torch.Tensor
) -> torch.Tensor:
    """W + dW, the least change (in norm) that sends each class's mean feature x_c (C, H) exactly along its trained
    embedding t_c (C, D), keeping its length: (W + dW) x_c = |W x_c| t_c. The classes the model scores with then
    keep their trained embeddings, and so every answer on their labels."""
    w, x, t = weight.double(), class_features.double(), class_targets.double()
    now = x @ w.T
    residual = F.normalize(t, dim=-1) * now.norm(dim=-1, keepdim=True) - now  # (C, D)
    return (w + residual.T @ torch.linalg.pinv(x.T)).float()  # pinv(x^T) = (x x^T)^-1 x when x has full rank


def with_text_encoder(model: AffectVLMModel, text_model: str) -> AffectVLMModel:
    """A copy of `model` whose text encoder is `text_model` (frozen, weights external) and whose projection is
    still to fit; every other weight is `model`'s."""
    config = copy.deepcopy(model.config)
    config.text_config = AutoConfig.from_pretrained(resolve_text_model(text_model))
    config.text_model_name_or_path = text_model
    config.text_trainable_layers = 0
    config.text_weights = "external"
    config.text_subspace = None
    new = AffectVLMModel(config).eval()
    kept = {
        k: v for k, v in model.state_dict().items() if not k.startswith(("text_model.", "text_projection."))
    }
    missing = [k for k in new.load_state_dict(kept, strict=False).missing_keys if not k.startswith("text_")]
    if missing:
        raise ValueError(f"the swapped model lacks {len(missing)} trained weight(s): {missing[:3]}")
    new.load_text_weights()
    return new


def swap_text_encoder(
    model: AffectVLMModel, tokenizer, text_model: str, ridge: float, served_weight: float
) -> tuple[AffectVLMModel, object, dict]:
    """(the swapped model, its tokenizer, a record of the fit)."""
    prompts, served = swap_prompts(list(model.config.label_names))
    classes = scoring_classes(list(model.config.label_names))
    with torch.no_grad():
        # the projection's own embeddings: the fit reproduces them, and anchors (if any) act on top of it
        targets = model.encode_prompts(prompts, tokenizer, anchored=False).float()
        class_targets = model.encode_prompts(classes, tokenizer, anchored=False).float()
    new = with_text_encoder(model, text_model)
    new_tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(text_model))
    features = pooled_features(new, new_tokenizer, prompts)
    row = {p: i for i, p in enumerate(prompts)}
    class_features = torch.stack([features[[row[p] for p in group]].mean(0) for group in classes.values()])
    fitted_map = fit_projection(features, targets, served, ridge, served_weight)
    aim = class_targets
    for _ in range(_CLASS_ROUNDS):  # a class embedding is the mean of its prompts' embeddings, not of features
        with torch.no_grad():
            new.text_projection.weight.copy_(keep_class_directions(fitted_map, class_features, aim))
            fitted_classes = new.encode_prompts(classes, new_tokenizer, anchored=False).float()
        aim = F.normalize(aim + class_targets - fitted_classes, dim=-1)
    with torch.no_grad():
        fitted = new.encode_prompts(prompts, new_tokenizer, anchored=False).float()
    cosine = (fitted * targets).sum(-1)
    mask = torch.tensor(served)
    record = {
        "from": model.config.text_model_name_or_path,
        "prompts": len(prompts),
        "scoring_prompts": int(mask.sum()),
        "ridge": ridge,
        "served_weight": served_weight,
        "cosine_to_trained": {
            "scoring_prompts_mean": round(float(cosine[mask].mean()), 4),
            "training_prompts_mean": round(float(cosine[~mask].mean()), 4),
            "scoring_classes_min": round(float((fitted_classes * class_targets).sum(-1).min()), 4),
        },
        "how": "train/text_swap.py: the new encoder's projection fitted to the trained text embeddings",
    }
    new.config.text_swap = record
    return new, new_tokenizer, record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=WORDS_EPILOG)
    parser.add_argument(
        "--model", required=True, help="a trained checkpoint folder with a pretrained text encoder"
    )
    parser.add_argument("--out", required=True, help="where to write the swapped checkpoint")
    parser.add_argument(
        "--text-model",
        default=DEFAULT_TEXT_MODEL,
        help=f"the new text encoder (default {DEFAULT_TEXT_MODEL})",
    )
    parser.add_argument(
        "--ridge", type=float, default=DEFAULT_RIDGE, help="ridge penalty (default %(default)s)"
    )
    parser.add_argument(
        "--served-weight",
        type=float,
        default=DEFAULT_SERVED_WEIGHT,
        help="weight of the scoring prompts against each training prompt (default %(default)s)",
    )
    parser.add_argument(
        "--check", metavar="CACHE", help="a render cache of validation subjects: report on it"
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    model, processor, out = load_to_rewrite(args.model, args.out)
    if getattr(model, "text_model", None) is None:
        raise ValueError(
            "text_swap needs a model trained against a pretrained text encoder (text_backbone=pretrained)"
        )
    result = {"before": validation_check(model, processor, args.check, None)} if args.check else {}
    new, tokenizer, result["swap"] = swap_text_encoder(
        model, processor.tokenizer, args.text_model, args.ridge, args.served_weight
    )
    processor.tokenizer = tokenizer
    if args.check:
        result["after"] = validation_check(new, processor, args.check, None)
    out.mkdir(parents=True, exist_ok=True)
    for name in _KEPT_FILES:
        if (Path(args.model) / name).is_file():
            shutil.copy2(Path(args.model) / name, out / name)
    new.save_pretrained(out)
    processor.save_pretrained(out)
    result["prompt_features"] = write_prompt_features(out)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
