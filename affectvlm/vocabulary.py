"""Held-out emotion vocabulary: words and phrases that no training prompt ever contains (open-vocabulary tests).

A model trained with `affectvlm.prompts.PromptBank` has read the lexicon's words (angry, furious, joyful,
...), its templates, the metadata words and the action-unit descriptions. To measure how it generalises to
emotion words it has never been trained on, score a test set with the inference prompts of held-out words
instead of the class names, e.g. for each class the mean text embedding of
`inference_prompts(HELD_OUT_VOCABULARY[label])`:

    from affectvlm.vocabulary import HELD_OUT_VOCABULARY, find_held_out
    HELD_OUT_VOCABULARY["sadness"]             # ("heartbroken", "despondent", ...)
    find_held_out("a face that looks livid")   # ["livid"]

VALIDATION_VOCABULARY is a second, disjoint list of never-trained words for choosing settings (e.g. the text
projection's concept subspace, train/text_subspace.py) on validation subjects, so that HELD_OUT_VOCABULARY
stays a test nothing was chosen on.

The guarantee ("never in a training prompt", case-insensitive, as whole words) is checked by
`tests/test_prompts.py`, which draws prompts over every built-in label, metadata value and action-unit
combination. It holds for the built-in vocabulary only: a `PromptConfig.extra_lexicon` may add any word.
When the lexicon gains a word that is held out here, pick another held-out word rather than dropping the
lexicon entry (the test names the offender).

This module imports nothing from the project, so evaluation code can use it without the training code.
"""

from __future__ import annotations

import functools
import re

# Basic emotion (and neutral) -> words and short phrases never used in training prompts.
# Excluded on purpose: lexicon words and phrases that training prompts form (e.g. "grossed out" is a disgust
# adjective; "blank expression" comes from "{person} with a {adj} expression."), and the compound-expression
# names of affectvlm.data.aus ("appalled", "awed", "hatred"), which have their own evaluation.
HELD_OUT_VOCABULARY: dict[str, tuple[str, ...]] = {
    "anger": (
        "livid",
        "irate",
        "incensed",
        "fuming",
        "seething with rage",
        "up in arms",
        "indignant",
        "outraged",
    ),
    "disgust": (
        "repelled",
        "queasy",
        "loathing",
        "aversion",
        "abhorrence",
        "sick to the stomach",
        "put off",
    ),
    "fear": (
        "petrified",
        "panicked",
        "horrified",
        "scared stiff",
        "spooked",
        "dread",
        "apprehensive",
        "panic-stricken",
    ),
    "happiness": (
        "over the moon",
        "ecstatic",
        "beaming",
        "overjoyed",
        "jubilant",
        "blissful",
        "on cloud nine",
        "grinning",
    ),
    "sadness": (
        "heartbroken",
        "despondent",
        "crestfallen",
        "tearful",
        "forlorn",
        "melancholy",
        "down in the dumps",
        "mournful",
    ),
    "surprise": (
        "flabbergasted",
        "stunned",
        "dumbfounded",
        "taken aback",
        "gobsmacked",
        "caught off guard",
        "thunderstruck",
        "agog",
    ),
    "neutral": (
        "poker face",
        "stone-faced",
        "deadpan",
        "straight face",
        "unemotional",
        "placid",
        "emotionless",
        "stoic",
    ),
}


# Never-trained words for model selection (validation subjects only); disjoint from HELD_OUT_VOCABULARY.
VALIDATION_VOCABULARY: dict[str, tuple[str, ...]] = {
    "anger": ("wrathful", "hostile", "exasperated", "resentful", "bitter", "hot-tempered"),
    "disgust": ("repugnance", "distasteful", "yucky", "nauseous", "icky", "sickly"),
    "fear": ("nervous", "anxious", "jittery", "timid", "fretful", "shaken"),
    "happiness": ("elated", "thrilled", "gleeful", "merry", "cheery", "content"),
    "sadness": ("glum", "grieving", "woeful", "depressed", "morose", "weepy"),
    "surprise": ("speechless", "bewildered", "staggered", "wide-eyed", "dazed", "open-mouthed"),
    "neutral": ("indifferent", "unmoved", "detached", "nonchalant", "vacant", "unexpressive"),
}
_VOCABULARIES = {"held_out": HELD_OUT_VOCABULARY, "validation": VALIDATION_VOCABULARY}


@functools.lru_cache(maxsize=2)
def _pattern(which: str) -> re.Pattern:
    vocabulary = _VOCABULARIES[which]
    phrases = sorted({p for words in vocabulary.values() for p in words}, key=len, reverse=True)
    # Whole words: no letter, digit, "_" or "-" on either side; any run of white space between words.
    alternatives = "|".join(r"\s+".join(map(re.escape, p.split())) for p in phrases)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)


def find_held_out(text: str, which: str = "held_out") -> list[str]:
    """The held-out words and phrases in `text` (case-insensitive, whole words), lower case, in order;
    `which="validation"` looks for those of VALIDATION_VOCABULARY instead."""
    return [" ".join(m.group(0).lower().split()) for m in _pattern(which).finditer(text)]


__all__ = ["HELD_OUT_VOCABULARY", "VALIDATION_VOCABULARY", "find_held_out"]
