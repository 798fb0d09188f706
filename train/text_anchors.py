"""Let a trained model read a never-trained word through the classes it was trained on (open-vocabulary words).

A model's text projection (trained, or fitted by `train/text_swap.py`) places the prompts it learnt from well and
a word it never saw ("livid") only roughly: a linear map fitted on a few hundred phrasings of seven labels and 25
action units. The text encoder itself often knows better what the word means: all-mpnet-base-v2 puts "livid"
next to "furious" and "anger". This tool writes into a checkpoint's config, for every class the model scores with
(`train.text_swap.scoring_classes`), groups of prompts that mean it: its scoring prompts (each label's inference
prompts, each action unit's scoring prompts), then, for a label, each word its training lexicon gave it
(`affectvlm.prompts.LEXICON`: "furious", "rage", ...) in one prompt; and a weight. `AffectVLMModel.encode_prompts`
then draws each class embedding towards the trained classes whose groups its prompts resemble in the encoder's
own space (a softmax over cosine similarity at `--temperature`), by `--weight`. The trained labels and action
units land on themselves, so their answers barely move; no weight is trained, and each class's anchor is the
model's own embedding of it, computed again from its weights when it loads.

    python train/text_anchors.py --model checkpoints/affectvlm-cpu --out /tmp/anchored \\
        --check /path/to/validation/cache

`--check` reports on the samples of a render cache (validation subjects: never the test ones) the plain-label
accuracy, the accuracy with each class named by one word of affectvlm.vocabulary.VALIDATION_VOCABULARY, AU AUC
and neutral recall, before and after. `--weight 0` removes the anchors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from affectvlm.prompts import LEXICON  # noqa: E402
from train.text_subspace import WORDS_EPILOG, rewrite_checked  # noqa: E402
from train.text_swap import scoring_classes  # noqa: E402

# Chosen on the validation words of 40 held-out identities (seed 21), docs/RESULTS.md "Reading a new word
# through the trained classes": the best one-word reading there (ties within 0.002 to the smaller weight), with the
# plain labels, action units and neutral recall unchanged.
DEFAULT_WEIGHT = 0.6
DEFAULT_TEMPERATURE = 0.03


# A lexicon word's place in the text space: one of the inference templates (`affectvlm.prompts`), not all eight,
# so the model encodes 68 prompts more when it loads, not 544 (on validation: 0.824 against 0.825 with all eight).
WORD_PROMPT = "facial expression: {}."


def anchor_groups(labels: list[str]) -> dict[str, list[list[str]]]:
    """Each scoring class -> its scoring prompts, then one group per lexicon word of a label (adjectives and
    nouns, the label itself left out): the word in `WORD_PROMPT`."""
    out = {}
    for name, prompts in scoring_classes(labels).items():
        entry = LEXICON.get(name, {})
        words = dict.fromkeys((*entry.get("adjectives", ()), *entry.get("nouns", ())))
        out[name] = [
            list(prompts),
            *([WORD_PROMPT.format(w)] for w in words if w.casefold() != name.casefold()),
        ]
    return out


def set_text_anchors(model, weight: float, temperature: float) -> dict:
    """Write the anchor groups, weight and temperature into `model.config`."""
    config = model.config
    config.text_anchors = anchor_groups(list(config.label_names)) if weight > 0 else None
    config.text_anchor_weight = float(weight)
    config.text_anchor_temperature = float(temperature)
    config._check_text_anchors()
    model._anchor_cache = None
    groups = sum(len(g) for g in (config.text_anchors or {}).values())
    return {
        "classes": len(config.text_anchors or {}),
        "groups": groups,
        "weight": weight,
        "temperature": temperature,
    }


def skip_reason(config) -> str | None:
    """Why the default anchors do not fit a model of `config` (an AffectVLMConfig), or None when they do: they
    read a word in a pretrained text encoder's own space, where words keep the sense it learnt from real text
    (`encode_prompts(..., projected=False)`), and the defaults were chosen there. A CLIP text tower has no such
    space apart from the one it was trained into."""
    if config.text_backbone != "pretrained":
        return (
            f"the model's text tower is {config.text_backbone!r}, not a pretrained text encoder "
            "(model.affectvlm.text_backbone: pretrained), whose own sense of words the anchors read"
        )
    return None


def write_anchors(folder) -> dict:
    """train/train.py's end of run: write the anchors into the config of the checkpoint `folder`, in place, with
    `DEFAULT_WEIGHT` and `DEFAULT_TEMPERATURE` (an anchored checkpoint that was fine-tuned keeps its own weight
    and temperature); `{"skipped": why}` for a model they do not fit (`skip_reason`)."""
    from types import SimpleNamespace

    from affectvlm import AffectVLMConfig

    config = AffectVLMConfig.from_pretrained(folder)
    why = skip_reason(config)
    if why:
        return {"skipped": why}
    anchored = bool(config.text_anchors) and config.text_anchor_weight > 0
    weight = config.text_anchor_weight if anchored else DEFAULT_WEIGHT
    temperature = config.text_anchor_temperature if anchored else DEFAULT_TEMPERATURE
    record = set_text_anchors(SimpleNamespace(config=config), weight, temperature)  # the config alone
    config.save_pretrained(folder)
    return record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=WORDS_EPILOG)
    parser.add_argument("--model", required=True, help="a trained checkpoint folder")
    parser.add_argument("--out", required=True, help="where to write the anchored checkpoint")
    parser.add_argument(
        "--weight",
        type=float,
        default=DEFAULT_WEIGHT,
        help="how far a class embedding moves towards the trained classes, 0-1 (default %(default)s; 0: off)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=DEFAULT_TEMPERATURE,
        help="softmax temperature over the text encoder's cosine similarities (default %(default)s)",
    )
    parser.add_argument(
        "--check", metavar="CACHE", help="a render cache of validation subjects: report on it"
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    return rewrite_checked(
        args.model,
        args.out,
        "anchors",
        lambda model, processor: set_text_anchors(model, args.weight, args.temperature),
        args.check,
    )


if __name__ == "__main__":
    main()
