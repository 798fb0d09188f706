"""Training configs: YAML files in `train/configs/` deep-merged over `DEFAULTS`, plus `--set key=value` overrides.

Every number a run uses is in the resolved config, which is written next to the run's outputs
(`<output_dir>/config.yaml`), so a run can be repeated from its own folder.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from affectvlm.configuration_affectvlm import DEFAULT_VIEW_NAMES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS: dict[str, Any] = {
    "name": "custom",
    "seed": 0,
    "model": {
        # "scratch": a CLIP built from `clip` sizes with random weights and the offline char-level tokenizer
        # (no download); "clip": start from the pretrained CLIP `clip_name_or_path`; "checkpoint": fine-tune
        # an AffectVLM checkpoint (`checkpoint`: a folder such as checkpoints/affectvlm-cpu, or a Hub id) with
        # its own architecture, processor and tokenizer (`clip` and `affectvlm` are then ignored; its labels
        # and views must be the data's).
        "init": "scratch",
        "clip_name_or_path": None,
        "checkpoint": None,
        # Train the text projection inside the concept subspace (train/text_subspace.py): restricted at the
        # start and after every optimizer step, so the view encoder learns against what is served.
        "text_subspace": False,
        # Keep the checkpoint's text projection as it is (`init: checkpoint`): every class embedding stays where
        # it was trained (or fitted by train/text_swap.py) and only the view side learns.
        "freeze_text_projection": False,
        "clip": {
            "hidden_size": 32,
            "num_layers": 2,
            "num_heads": 4,
            "image_size": 32,
            "patch_size": 8,
            "projection_dim": 32,
            "intermediate_size": None,  # the MLPs' width (None: 2 x hidden_size)
            "max_position_embeddings": 77,
        },
        # AffectVLMConfig fields (loss weights, margin, fusion, ...); label_names/view_names come from `data`.
        "affectvlm": {},
    },
    "data": {
        # "toy": in-memory synthetic views (tests); "cache": a render cache from `python -m affectvlm.data
        # prepare` (`cache_dir`), e.g. SynthFER-3D, or a list of caches rendered alike to train on together
        # (subjects named "<cache folder>/<subject>", each cache split into folds on its own).
        "source": "toy",
        "cache_dir": None,
        # Keep only cache entries whose `dataset` field is one of these (e.g. ["synth3d"] or ["synth4d"]).
        "datasets": None,
        # Keep only entries whose metadata's face_model is one of these (SynthFER-3D: ["sfm"], ["ict"]).
        "face_models": None,
        "labels": ["anger", "disgust", "fear", "happiness", "sadness", "surprise"],
        "views": list(DEFAULT_VIEW_NAMES),
        # Subject-independent folds: from `folds_file` (affectvlm.data.save_folds JSON) or made here.
        "folds_file": None,
        "k": 5,
        "fold": 0,
        "fold_seed": 0,
        "val_fraction": 0.15,
        # Split persons, not subject ids: SynthFER-3D's F0001 (3D scans) and F001 (4D sequences) are one person
        # and stay on one side. false: the per-id split of earlier versions (the shipped models' runs).
        "group_persons": True,
        "num_workers": 0,
        # Class balance of the training batches, within each dataset (3D scans, 4D sequences), each keeping
        # its share of the draws: a sample is drawn with probability proportional to (count of its label in
        # its dataset) ** -class_balance, with replacement, a fresh draw per epoch. 0 (default): every sample
        # once per epoch, shuffled; 1: every label of a dataset equally often (SynthFER-3D has 1 neutral scan
        # per subject against 4 of each emotion, so 3D neutral scans are then drawn about 3.6x as often).
        "class_balance": 0.0,
        "toy": {"num_subjects": 10, "image_size": 32, "noise": 0.25, "intensities": 2},
    },
    "prompts": {
        # "class": C x P metadata-free prompts resampled every step (one set per view with
        # `per_view`); "sample": a prompt for every (sample, view, class) carrying that sample's metadata,
        # i.e. class embeddings (B, V, C, D); "fixed": one inference template, never resampled.
        "mode": "class",
        "num_prompts": 4,
        "per_view": True,
        # "class" mode: add the inference bank's prompts (fixed templates filled with the class name only)
        # to each class's drawn prompts every step. A text tower trained from scratch reads only phrasings
        # it was trained on, so without them the validation/test prompts are foreign to it; a pretrained
        # CLIP does not need this. Nothing about any sample enters either way.
        "include_inference": False,
        # Fields of affectvlm.prompts.PromptConfig (seed and view_names are filled in from the run).
        "config": {},
    },
    # Action-unit term: each AU description (affectvlm.prompts.au_prompts) scored against the fused view
    # embedding, binary cross-entropy on the sample's recorded AUs (active from `active_from`); 0 switches it off.
    "au": {"weight": 0.0, "active_from": 0.15},
    # Fields of affectvlm.augment.MixedViewAugmentConfig (seed and view_names are filled in from the run).
    "augment": {"enabled": True},
    "train": {
        "batch_size": 16,  # global samples per forward pass (split over processes)
        "grad_accum": 1,
        "max_steps": 20,  # optimizer steps
        # A wall-clock budget for the training loop in minutes (validation included; None: none): the step
        # count is fitted to it from the measured pace and the lr schedule follows, never beyond max_steps.
        # For a machine lent for a fixed time; results.json records the steps that were run.
        "max_minutes": None,
        "lr": 5e-4,
        "weight_decay": 0.05,
        "betas": [0.9, 0.98],
        "warmup_steps": 2,
        "min_lr_ratio": 0.1,
        "max_grad_norm": 1.0,
        # "no", "bf16", "fp16", or "auto": bf16 on a GPU that supports it, otherwise full precision.
        "mixed_precision": "no",
        "eval_batch_size": 32,
        "eval_every": 10,
        "save_every": 10,
        "keep_checkpoints": 2,
        "log_every": 1,
        # What the saved model (`<output_dir>/model`) is served with beyond its weights, written at the end of
        # the run (train/train.py `write_served_settings`; results.json `served` records it):
        # the text anchors with train/text_anchors.py's defaults (a fine-tuned anchored checkpoint keeps its
        # weight and temperature), for models with a pretrained text encoder (text_backbone: pretrained);
        # false: none written (a fine-tuned checkpoint's are kept as they are).
        "text_anchors": True,
        # The familiarity floor (`config.familiarity_floor`, train/familiarity.py): this percentile of the
        # familiarity of the run's validation samples, computed as the predictor serves them. 0 or null: no
        # floor (a fine-tuned checkpoint's, fitted on other weights, is removed).
        "familiarity_percentile": 5,
        # The face distance (affectvlm/face_distance.py, saved beside the model as face_distance.safetensors; the
        # predictor notes by it instead of the floor): fitted on half of the validation persons, its ceiling this
        # percentile of the other half's distances. 0 or null: none (with fewer validation faces than it needs, the
        # run says so and leaves none). Needs the floor's percentile set.
        "face_distance_percentile": 97.5,
    },
}


def deep_merge(base: dict, override: dict, path: str = "") -> dict:
    """`override` merged into a copy of `base`; keys unknown to `base` raise, except in free-form sections."""
    out = copy.deepcopy(base)
    free_form = {"model.affectvlm", "prompts.config", "augment"}
    for key, value in override.items():
        where = f"{path}.{key}" if path else key
        if key not in out and path not in free_form:
            raise ValueError(f"unknown config key {where!r}")
        if isinstance(value, dict) and isinstance(out.get(key), dict) and where not in free_form:
            out[key] = deep_merge(out[key], value, where)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A config name (`tiny`, `synth-cpu`, `paper`) or a path to a YAML/JSON file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for ext in (".yaml", ".yml", ".json"):
        candidate = CONFIG_DIR / f"{name_or_path}{ext}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a file nor one of {known}")


_EXPONENT_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=1e-3` -> (["train", "lr"], 0.001); the value is parsed as YAML (numbers, lists, null), and
    a plain string that reads as a number ("3e-4", which YAML 1.1 leaves a string) becomes that number."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} must look like section.key=value")
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str) and _EXPONENT_NUMBER.fullmatch(parsed.strip()):
        parsed = float(parsed)
    return key.strip().split("."), parsed


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    nested: dict = {}
    for item in overrides:
        keys, value = parse_override(item)
        node = nested
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return deep_merge(config, nested)


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> dict:
    """DEFAULTS <- the config file (if any) <- `overrides`, checked."""
    config = copy.deepcopy(DEFAULTS)
    if name_or_path:
        path = resolve_config_path(name_or_path)
        loaded = yaml.safe_load(path.read_text()) or {}
        config = deep_merge(config, loaded)
    config = apply_overrides(config, overrides or [])
    check_config(config)
    return config


def check_config(config: dict) -> None:
    t, d, p = config["train"], config["data"], config["prompts"]
    if config["model"]["init"] not in ("scratch", "clip", "checkpoint"):
        raise ValueError(
            f"model.init must be 'scratch', 'clip' or 'checkpoint', got {config['model']['init']!r}"
        )
    if config["model"]["init"] == "checkpoint" and not config["model"]["checkpoint"]:
        raise ValueError("model.init=checkpoint needs model.checkpoint (a checkpoint folder or Hub id)")
    balance = d["class_balance"]
    if not isinstance(balance, int | float) or isinstance(balance, bool) or not 0 <= balance <= 1:
        raise ValueError(f"data.class_balance must be a number in [0, 1], got {balance!r}")
    if config["model"]["init"] == "clip" and not config["model"]["clip_name_or_path"]:
        raise ValueError("model.init=clip needs model.clip_name_or_path")
    if d["source"] not in ("toy", "cache"):
        raise ValueError(f"data.source must be 'toy' or 'cache', got {d['source']!r}")
    if p["mode"] not in ("class", "sample", "fixed"):
        raise ValueError(f"prompts.mode must be 'class', 'sample' or 'fixed', got {p['mode']!r}")
    for name in ("batch_size", "grad_accum", "eval_batch_size", "eval_every", "save_every", "log_every"):
        if not isinstance(t[name], int) or t[name] < 1:
            raise ValueError(f"train.{name} must be a positive integer, got {t[name]!r}")
    if t["max_minutes"] is not None and not (isinstance(t["max_minutes"], int | float) and t["max_minutes"] > 0):
        raise ValueError(f"train.max_minutes must be a number > 0 or null, got {t['max_minutes']!r}")
    if not isinstance(t["max_steps"], int) or t["max_steps"] < 0:
        raise ValueError(f"train.max_steps must be an integer >= 0, got {t['max_steps']!r}")
    if t["mixed_precision"] not in ("no", "bf16", "fp16", "auto"):
        raise ValueError(f"train.mixed_precision must be no/bf16/fp16/auto, got {t['mixed_precision']!r}")
    if not isinstance(t["text_anchors"], bool):
        raise ValueError(f"train.text_anchors must be true or false, got {t['text_anchors']!r}")
    pct = t["familiarity_percentile"]
    if pct is not None and (not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 <= pct < 50):
        raise ValueError(f"train.familiarity_percentile must be a number in [0, 50) or null, got {pct!r}")
    pct = t["face_distance_percentile"]
    if pct is not None and (not isinstance(pct, int | float) or isinstance(pct, bool) or not (pct == 0 or 50 <= pct < 100)):
        raise ValueError(f"train.face_distance_percentile must be 0, null or a number in [50, 100), got {pct!r}")
    if not 0 <= t["min_lr_ratio"] <= 1:
        raise ValueError(f"train.min_lr_ratio must be in [0, 1], got {t['min_lr_ratio']}")
    if not d["views"] or len(set(d["views"])) != len(d["views"]):
        raise ValueError(f"data.views must be distinct view names, got {d['views']}")


def dump_config(config: dict, path: Path) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def output_folder(path) -> Path:
    """The run's output folder, made and checked writable before anything runs: a folder that cannot be
    written (a read-only mount, a path under a file) stops the run with one line naming it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        why = err.strerror or err
        raise SystemExit(f"error: cannot write to the output folder {folder}: {why}") from None
    return folder
