r"""Train AffectVLM with Accelerate: augmented prompts, mixed-view augmentation, resumable checkpoints.

    python train/train.py --config tiny --output-dir /tmp/run                  # one process, seconds
    accelerate launch train/train.py --config synth-cpu --output-dir runs/synth-cpu \
        --set data.cache_dir=/tmp/cache/synth-1a2b3c4d5e6f
    python train/launch.py --multi_gpu --num_processes 8 train/train.py --config paper ...   # free port picked
    python train/train.py --config tiny --output-dir /tmp/run --resume auto   # continue after a crash

The run reads a config (`train/configs/<name>.yaml`, see `train/config.py` for every field), trains on the
training subjects of one subject-independent fold, evaluates on the fold's validation subjects with the
leakage-free inference prompt bank every `train.eval_every` steps, keeps the best model on those subjects in
`<output_dir>/model` (`save_pretrained` + processor: loads with `AffectVLMModel.from_pretrained`), and finally
scores the held-out test subjects with it (`<output_dir>/results.json`).

Batch sizes are global (`split_batches=True`): the same config gives the same optimisation on 1 or N
processes, and every random draw (prompts, augmentation, data order) is made for the global batch on every
process, which then takes its own slice. That is why a 2-process run equals a 1-process run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# `python train/train.py` puts train/ (not the repository) on sys.path; the package imports need the root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import Accelerator, DataLoaderConfiguration  # noqa: E402
from accelerate.tracking import GeneralTracker  # noqa: E402
from accelerate.utils import ProjectConfiguration, broadcast, gather_object, set_seed  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

from affectvlm import AffectVLMConfig, AffectVLMModel, AffectVLMProcessor  # noqa: E402
from affectvlm.augment import MixedViewAugment, MixedViewAugmentConfig, MixedViewParams  # noqa: E402
from affectvlm.companion import read_settings as read_companion_settings  # noqa: E402
from affectvlm.data.aus import AU_CATALOGUE, recorded_aus  # noqa: E402
from affectvlm.modeling_affectvlm import resolve_text_model  # noqa: E402
from affectvlm.precision import cpu_has_native_bf16  # noqa: E402
from affectvlm.prompt_features import write as write_prompt_features  # noqa: E402
from affectvlm.prompts import PromptBank, PromptConfig  # noqa: E402
from affectvlm.scan.render import NORMAL_CHANNELS  # noqa: E402
from train.config import dump_config, load_config, output_folder  # noqa: E402
from train.data import (  # noqa: E402
    DataError,
    EpochBatchSampler,
    build_dataset,
    cache_folders,
    class_balance_weights,
    collate_batched,
    fold_of,
    run_settings,
    split_dataset,
)
from train.familiarity import fit_floor  # noqa: E402
from train.metrics import classification_metrics  # noqa: E402
from train.text_anchors import skip_reason, write_anchors  # noqa: E402
from train.text_subspace import project_text_projection, restrict_text_projection  # noqa: E402

CHECKPOINT_PREFIX = "step_"
TRAINER_STATE = "trainer_state.json"

# ----------------------------------------------------------------------------------------------------------
# Model, processor, prompts
# ----------------------------------------------------------------------------------------------------------


def build_model_and_processor(config: dict, render_settings: dict | None = None):
    """The model (seeded before this call) and its processor, from `config["model"]` and the data's views."""
    m, d = config["model"], config["data"]
    overrides = {
        **m["affectvlm"],
        "label_names": list(d["labels"]),
        "view_names": list(d["views"]),
        "num_views": len(d["views"]),
    }
    if m["init"] == "checkpoint":
        return _from_checkpoint(m["checkpoint"], d, render_settings)
    if m["init"] == "clip":
        model = AffectVLMModel.from_clip(m["clip_name_or_path"], **overrides)
        processor = AffectVLMProcessor.from_clip(
            m["clip_name_or_path"], view_names=list(d["views"]), render_settings=render_settings
        )
    else:
        from affectvlm.testing import tiny_clip_config, tiny_processor

        text = _pretrained_text(overrides)
        model = AffectVLMModel(AffectVLMConfig(clip_config=tiny_clip_config(**m["clip"]), **overrides))
        processor = tiny_processor(image_size=m["clip"]["image_size"], view_names=list(d["views"]))
        processor.render_settings = dict(render_settings) if render_settings else None
        if text is not None:  # a pretrained text encoder (e.g. MiniLM): its weights and its tokenizer
            model.load_text_weights()
            processor.tokenizer = AutoTokenizer.from_pretrained(text)
    return model, processor


def _from_checkpoint(source: str, data: dict, render_settings: dict | None):
    """An AffectVLM checkpoint to fine-tune: its weights, processor and tokenizer; its labels and views must
    be the data's (the class prompts and the view order are what the weights were trained on). Its served
    temperature is reset to 1: a fine-tuned model is calibrated again (train/evaluate.py --calibrate). A
    companion the checkpoint serves with (`affectvlm.companion`) is not carried over: a warning says so."""
    companion = read_companion_settings(source)
    if companion is not None:
        warnings.warn(
            f"{source} serves with a companion ({companion['folder']}/, weight {companion['weight']}); this run "
            "fine-tunes and saves the main model only, which serves alone. To pool a companion with it, fit one "
            "on validation caches rendered both ways: python train/companion.py --fit (docs/training.md)",
            stacklevel=2,
        )
    model = AffectVLMModel.from_pretrained(source)
    processor = AffectVLMProcessor.from_pretrained(source)
    for field, want in (("label_names", list(data["labels"])), ("view_names", list(data["views"]))):
        have = list(getattr(model.config, field))
        if have != want:
            raise ValueError(f"the checkpoint's {field} {have} differ from the data's {want}")
    model.config.temperature = 1.0
    if render_settings:
        was = (processor.render_settings or {}).get("mode", "normal")
        if (was, render_settings.get("mode")) == ("normal", "shade_normal"):
            shade_into_first_channel(model, processor)
        processor.render_settings = dict(render_settings)
    return model, processor


@torch.no_grad()
def shade_into_first_channel(model: AffectVLMModel, processor) -> None:
    """Make a model trained on grey "normal" views compute the same on "shade_normal" views, whose first
    channel is that grey shade (the other two, the normal's x and y, start unused): the fine-tune starts
    from the trained function and learns what the normals add. A grey view has the shade in all three
    channels, so the first convolution's weights move onto the first channel, rescaled by the channels'
    stds, and the constant that the channels' different means leave is taken into the batch norm's running
    mean (exact away from the image border, where the convolution pads with zeros)."""
    if model.vision_resnet is None:
        raise ValueError("a grey checkpoint can be turned to shade_normal views only with the ResNet backbone")
    layer = model.vision_resnet.embedder.embedder
    conv, norm = layer.convolution, layer.normalization
    mean = torch.tensor(processor.image_processor.image_mean, dtype=torch.float64)
    std = torch.tensor(processor.image_processor.image_std, dtype=torch.float64)
    w = conv.weight.double()  # (out, 3, k, k)
    per_grey = (w / std[None, :, None, None]).sum(1)  # the response to one unit of grey
    offset = (w.sum((2, 3)) * ((mean[0] - mean) / std)[None]).sum(1)  # (out,) old - new, a constant
    new = torch.zeros_like(w)
    new[:, 0] = per_grey * std[0]
    conv.weight.copy_(new.to(conv.weight.dtype))
    norm.running_mean.sub_(offset.to(norm.running_mean.dtype))


def _text_basis(config: dict, model: AffectVLMModel, tokenizer) -> torch.Tensor | None:
    """With model.text_subspace: the concept subspace's basis, the projection already restricted to it."""
    return restrict_text_projection(model, tokenizer) if config["model"]["text_subspace"] else None


def _freeze_text_projection(model: AffectVLMModel) -> None:
    """model.freeze_text_projection: the pretrained text encoder's projection keeps its weights (not saved as a
    flag in checkpoints: `requires_grad` is set here, for this run)."""
    if model.text_projection is None:
        raise ValueError("model.freeze_text_projection needs a model with a pretrained text encoder")
    model.text_projection.requires_grad_(False)


def _pretrained_text(overrides: dict) -> str | None:
    """With `text_backbone: pretrained`, fill in the encoder's config; return the folder it loads from."""
    if overrides.get("text_backbone") != "pretrained":
        return None
    name = overrides.get("text_model_name_or_path")
    if not name:
        raise ValueError(
            "model.affectvlm.text_backbone=pretrained needs model.affectvlm.text_model_name_or_path"
        )
    folder = resolve_text_model(name)
    overrides.setdefault("text_config", AutoConfig.from_pretrained(folder).to_dict())
    return folder


class TrainModule(nn.Module):
    """The model plus the text encoding of per-sample prompts, in one `forward`.

    Per-sample prompts (prompts.mode="sample") are encoded inside `forward` so that DDP sees one forward and
    one backward over every parameter; the parameters keep the model's names under `model.`.
    """

    def __init__(self, model: AffectVLMModel, au_weight: float = 0.0, num_aus: int = 0):
        super().__init__()
        self.model = model
        self.au_weight = au_weight
        # Per-AU offsets of the action-unit term's logits; saved into the model's config as au_logit_bias.
        self.au_bias = nn.Parameter(torch.zeros(num_aus)) if au_weight > 0 else None
        saved = getattr(model.config, "au_logit_bias", None)
        if self.au_bias is not None and saved:  # a fine-tuned checkpoint keeps the biases it learnt
            numbers = sorted(AU_CATALOGUE)
            with torch.no_grad():
                self.au_bias.copy_(torch.tensor([float(saved.get(str(n), 0.0)) for n in numbers]))

    def forward(
        self,
        pixel_values,
        view_mask,
        labels=None,
        sample_input_ids=None,
        sample_attention_mask=None,
        au_input_ids=None,
        au_attention_mask=None,
        au_targets=None,
        **kw,
    ):
        if sample_input_ids is not None:
            lead = sample_input_ids.shape[:-1]  # (b, V, C)
            flat = self.model.encode_text(
                sample_input_ids.reshape(-1, sample_input_ids.shape[-1]),
                sample_attention_mask.reshape(-1, sample_attention_mask.shape[-1]),
            )
            kw["class_embeds"] = flat.reshape(*lead, -1)  # (b, V, C, D)
        out = self.model(pixel_values=pixel_values, view_mask=view_mask, labels=labels, **kw)
        if au_targets is not None and self.au_bias is not None and out.loss is not None:
            au = self.au_loss(out.fused_embeds, au_input_ids, au_attention_mask, au_targets)
            out.loss = out.loss + self.au_weight * au
            out.loss_terms["au"] = au
        return out

    def au_loss(self, fused, input_ids, attention_mask, targets) -> torch.Tensor:
        """Action-unit term: each AU's description embedding (A, D) against the fused view embedding, a binary
        cross-entropy per AU on the sample's recorded AU activity (samples without AU records are left out)."""
        au_embeds = self.model.get_class_embeddings(input_ids, attention_mask)  # (A, D)
        logits = self.model.logit_scale * fused @ au_embeds.T + self.au_bias
        known = ~torch.isnan(targets).any(-1)
        if not bool(known.any()):
            return logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(logits[known].float(), targets[known].float())


class AUTargets:
    """Each step's action-unit prompts (fixed: the inference AU descriptions, `au_prompts()`) and targets:
    1 where a sample's recorded AU weight reaches `active_from`, else 0; NaN rows for samples without AUs."""

    def __init__(self, tokenize, active_from: float):
        from affectvlm.prompts import au_prompts

        self.numbers = sorted(AU_CATALOGUE)
        prompts = au_prompts(self.numbers)
        per_au = [prompts[key] for key in prompts]
        ids, mask = tokenize([p for group in per_au for p in group])
        self.input_ids = ids.reshape(len(per_au), len(per_au[0]), -1)
        self.attention_mask = mask.reshape(len(per_au), len(per_au[0]), -1)
        self.active_from = active_from

    def targets(self, metadata: list[dict]) -> torch.Tensor:
        out = torch.full((len(metadata), len(self.numbers)), float("nan"))
        for row, meta in enumerate(metadata):
            weights = recorded_aus(meta)  # {} for neutral
            if weights is None:  # no AU record, or nominal AUs: not scored
                continue
            out[row] = torch.tensor([float(weights.get(n, 0.0) >= self.active_from) for n in self.numbers])
        return out

    def inputs(self, metadata: list[dict], device) -> dict:
        return {
            "au_input_ids": self.input_ids.to(device),
            "au_attention_mask": self.attention_mask.to(device),
            "au_targets": self.targets(metadata).to(device),
        }


class PromptSource:
    """Training prompts for each step, drawn from the seeded `PromptBank` (its state is checkpointed).

    - "class" (default on CPU): P metadata-free prompts per class, resampled every step (a different set per
      view with `per_view`): input_ids (V, C, P, L) or (C, P, L). The text cost, V*C*P prompts, does not grow
      with the batch.
    - "sample": a prompt for every (sample, view, class) with that sample's metadata (gender, age, ethnicity,
      intensity), so each view gets its own prompt as in the paper and every class of a sample shares its
      metadata (nothing about the label leaks): class embeddings (b, V, C, D), b*V*C prompts per step.
    - "fixed": the first inference template only (the "without augmented prompts" ablation, equal to
      prompts.config.enabled=false but without resampling cost).
    """

    MAX_CACHED = 200_000  # token-id lists kept between steps

    def __init__(
        self, config: dict, label_names: list[str], view_names: list[str], tokenizer, max_length: int
    ):
        p = config["prompts"]
        pc = {**p["config"], "seed": config["seed"], "view_names": tuple(view_names)}
        self.bank = PromptBank(PromptConfig.from_dict(pc))
        self.mode, self.num_prompts, self.per_view = p["mode"], p["num_prompts"], p["per_view"]
        self.include_inference = p["include_inference"]
        self.labels, self.num_views = list(label_names), len(view_names)
        self.tokenizer, self.max_length = tokenizer, max_length
        self._ids: dict[str, list[int]] = {}  # prompt -> token ids, tokenised once (bounded: MAX_CACHED)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) prompts -> input_ids, attention_mask (N, L), padded to the longest, truncated keeping EOS."""
        if len(self._ids) > self.MAX_CACHED:
            # Metadata prompts keep coming (~400 new ones a step in the paper setting): bound the memo
            # rather than grow by ~0.5 GB over a long run.
            self._ids.clear()
        todo = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if todo:
            for text, ids in zip(todo, self.tokenizer(todo)["input_ids"]):
                if len(ids) > self.max_length:
                    ids = ids[: self.max_length - 1] + ids[-1:]
                self._ids[text] = ids
        rows = [self._ids[t] for t in texts]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # One vectorised fill (a paper-setting step has 1,152 prompts: a copy per row would cost ~9 ms).
        mask = np.arange(lengths.max())[None, :] < lengths[:, None]
        ids = np.full(mask.shape, pad, dtype=np.int64)
        ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))

    def step_inputs(
        self, metadata: list[dict], global_metadata: list[dict] | None, rank_slice: slice
    ) -> dict:
        """Model inputs for this step's prompts; every process draws the same (global) prompts."""
        C, V = len(self.labels), self.num_views
        if self.mode == "fixed":
            prompts = [self.bank.inference_prompts([label])[label][0] for label in self.labels]
            ids, mask = self.tokenize(prompts)
            return {"input_ids": ids, "attention_mask": mask}  # (C, L)
        if self.mode == "class":
            # With include_inference the inference bank's fixed prompts join each class's drawn ones (see the
            # `prompts` defaults in train/config.py): P + I prompts per class.
            extra = (
                self.bank.inference_prompts(self.labels)
                if self.include_inference
                else dict.fromkeys(self.labels, [])
            )
            per_class = self.num_prompts + len(extra[self.labels[0]])
            if self.per_view:
                per_view = self.bank.class_prompts_per_view(self.labels, self.num_prompts, V)
                texts = [t for view in per_view for label in self.labels for t in view[label] + extra[label]]
                shape = (V, C, per_class)
            else:
                prompts = self.bank.class_prompts(self.labels, self.num_prompts)
                texts = [t for label in self.labels for t in prompts[label] + extra[label]]
                shape = (C, per_class)
            ids, mask = self.tokenize(texts)
            return {"input_ids": ids.reshape(*shape, -1), "attention_mask": mask.reshape(*shape, -1)}
        # "sample": prompts for the global batch (same draws on every process), then this process's rows.
        meta = [dict(m or {}) for m in (global_metadata if global_metadata is not None else metadata)]
        per_class = [
            self.bank.sample([label] * len(meta), meta, num_views=V) for label in self.labels
        ]  # C x (B, V)
        local = range(len(meta))[rank_slice]
        texts = [per_class[c][b][v] for b in local for v in range(V) for c in range(C)]
        ids, mask = self.tokenize(texts)
        return {
            "sample_input_ids": ids.reshape(len(local), V, C, -1),
            "sample_attention_mask": mask.reshape(len(local), V, C, -1),
        }


def build_augment(config: dict, view_names: list[str], render_mode: str | None = None) -> MixedViewAugment:
    """The run's mixed-view augmentation; views that draw the normal (`render_mode`) are mirrored and turned
    with their normals."""
    a = {"enabled": True, **config["augment"], "seed": config["seed"], "view_names": tuple(view_names)}
    a.setdefault("normal_channels", NORMAL_CHANNELS.get(render_mode))
    if "mirror_pairs" not in config["augment"]:
        # Keep the left/right swap only when both views are in use; a lone frontal view may simply be flipped.
        a["mirror_pairs"] = tuple(p for p in (("left", "right"),) if set(p) <= set(view_names))
        if not a["mirror_pairs"] and a.get("flip_mode", "swap") == "swap":
            a["flip_mode"] = "frontal"
    return MixedViewAugment(MixedViewAugmentConfig.from_dict(a))


def slice_params(params: MixedViewParams, rows: slice) -> MixedViewParams:
    parts = (getattr(params, f.name) for f in fields(MixedViewParams))
    return MixedViewParams(*(None if p is None else p[rows] for p in parts))


def model_inputs(
    batch, augment, processor, prompts, global_batch: int, rows: slice, world: int, device, aus=None
) -> dict:
    """One training micro-batch -> the TrainModule's inputs: augmented, normalised views and this step's
    prompts. Random draws are made for the global batch on every process; this process uses `rows`."""
    views = batch["views"].permute(0, 1, 4, 2, 3).float() / 255.0  # (b, V, H, W, 3) -> (b, V, 3, H, W)
    view_mask = batch["view_mask"]
    if not augment.is_identity:
        global_mask = torch.ones(global_batch, view_mask.shape[1], dtype=torch.bool)
        global_mask[rows] = view_mask.cpu()  # rows are drawn independently: the others' masks don't matter
        params = augment.draw_params(global_batch, global_mask)
        views, view_mask = augment.apply(views, slice_params(params, rows), view_mask)
    pixel_values = processor.normalize_views(views)
    global_meta = gather_object(batch["metadata"]) if prompts.mode == "sample" and world > 1 else None
    prompt_inputs = prompts.step_inputs(batch["metadata"], global_meta, rows)
    if aus is not None:
        prompt_inputs.update(aus.inputs(batch["metadata"], device))
    return {
        "pixel_values": pixel_values,
        "view_mask": view_mask,
        "labels": batch["labels"],
        **{k: v.to(device) for k, v in prompt_inputs.items()},
    }


# ----------------------------------------------------------------------------------------------------------
# Optimiser and schedule
# ----------------------------------------------------------------------------------------------------------


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings, the logit scale and the margin (CLIP/open_clip practice)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim < 2 or "embedding" in name or "logit_scale" in name or "margin" in name
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """Linear warmup to the base lr, then cosine decay to `min_ratio` x base at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


# ----------------------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------------------


class JSONLTracker(GeneralTracker):
    """Appends `{"step": ..., **values}` lines to `<logging_dir>/metrics.jsonl` (always on: the curves and the
    cross-validation report read it; TensorBoard is added when it is installed)."""

    name = "jsonl"
    requires_logging_directory = True
    main_process_only = True

    def __init__(self, logging_dir: str | os.PathLike):
        super().__init__()
        self.path = Path(logging_dir) / "metrics.jsonl"  # no accelerate state touched here (ecosystem note)
        self._file = None

    def start(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in finish()

    @property
    def tracker(self):
        return self._file

    def store_init_configuration(self, values: dict):
        pass

    def log(self, values: dict, step: int | None = None, **kwargs):
        record = {"step": step, "time": round(time.time(), 3), **{k: _plain(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def finish(self):
        if self._file is not None:
            self._file.close()


def _plain(value):
    return value.item() if isinstance(value, torch.Tensor) else value


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop log lines past the resumed step: they belong to the interrupted part that is run again."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line and (json.loads(line).get("step") or 0) <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints (those with a trainer state), oldest first; half-written temp dirs never count."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def save_checkpoint(
    accelerator: Accelerator, root: Path, state: dict, keep: int, crash_in_save: bool = False
):
    """`save_state` into a temp folder, then one rename: an interrupted write never replaces a good checkpoint.

    The trainer state (step, data position, best model so far) is written last inside the temp folder, so a
    folder named `step_*` is complete by construction. Older checkpoints beyond `keep` are deleted only after
    the new one is in place.
    """
    step = state["global_step"]
    final = root / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = root / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Our own folder names, not ProjectConfiguration(automatic_checkpoint_naming=True): its rotation deletes
    # before writing and its iteration counter must be patched after load_state (ecosystem notes).
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if crash_in_save:  # testing: die after the weights are written but before the folder is complete
        os._exit(3)
    if accelerator.is_main_process:
        _write_json_durably(tmp / TRAINER_STATE, state)
        if final.exists():  # the same step saved again (e.g. the final step): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in root.glob(f".tmp-{CHECKPOINT_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write_json_durably(path: Path, doc: dict) -> None:
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def save_model_atomically(model: AffectVLMModel, processor, target: Path, info: dict) -> None:
    """save_pretrained + processor into a temp folder, then swap it in (an old copy exists until the new one
    is complete)."""
    tmp, old = target.with_name(target.name + ".tmp"), target.with_name(target.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _write_json_durably(tmp / "selection.json", info)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(accelerator, module, loader, processor, tokenizer, label_names) -> dict:
    """Accuracy, F1 and NLL on `loader`, scoring with the inference prompt bank (no metadata, no label words
    beyond the class name: nothing about a test sample leaks into the class embeddings)."""
    from affectvlm.prompts import inference_prompts

    model = accelerator.unwrap_model(module).model
    was_training = module.training
    module.eval()
    class_embeds = model.encode_prompts(inference_prompts(label_names), tokenizer)  # (C, D)
    all_logits, all_labels = [], []
    for batch in loader:
        pixel_values = processor.normalize_views(batch["views"])
        out = module(pixel_values=pixel_values, view_mask=batch["view_mask"], class_embeds=class_embeds)
        logits, labels = accelerator.gather_for_metrics((out.logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    module.train(was_training)
    if not all_logits:
        return {}
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    metrics = classification_metrics(logits.argmax(-1).numpy(), labels.numpy(), label_names, logits.numpy())
    metrics["predictions"] = logits.argmax(-1).tolist()
    metrics["labels"] = labels.tolist()
    return metrics


def _is_better(candidate: dict, best: dict | None) -> bool:
    """Higher validation accuracy wins; ties go to the lower validation NLL."""
    if (
        best is None or candidate["accuracy"] is None
    ):  # None: no validation subjects, the latest model is kept
        return True
    return (candidate["accuracy"], -candidate.get("nll", 0.0)) > (best["accuracy"], -best.get("nll", 0.0))


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def get_dataloaders(config: dict, dataset):
    """Train/val/test loaders over one fold, and the fold itself."""
    d, t = config["data"], config["train"]
    fold = fold_of(config, dataset.subjects, dataset.persons)
    train_ds, val_ds, test_ds = split_dataset(dataset, fold)
    for side, ds, subjects in (("training", train_ds, fold.train), ("test", test_ds, fold.test)):
        if len(ds) == 0:
            raise DataError(
                f"fold {fold.index} has 0 {side} samples: its {len(subjects)} {side} subject(s) have no "
                f"samples of labels {list(d['labels'])} in the data"
            )
    weights = class_balance_weights(train_ds.labels_array(), d["class_balance"], train_ds.datasets_array())
    sampler = EpochBatchSampler(
        len(train_ds), t["batch_size"], config["seed"], multiple_of=t["grad_accum"], weights=weights
    )
    common = {"collate_fn": collate_batched, "num_workers": d["num_workers"]}
    train_loader = DataLoader(train_ds, batch_sampler=sampler, **common)
    val_loader = DataLoader(val_ds, batch_size=t["eval_batch_size"], shuffle=False, **common)
    test_loader = DataLoader(test_ds, batch_size=t["eval_batch_size"], shuffle=False, **common)
    return train_loader, val_loader, test_loader, sampler, fold


def sync_batchnorm(module: nn.Module, accelerator) -> nn.Module:
    """Synchronise BatchNorm statistics (the ResNet view backbone has BatchNorm) across processes.

    With per-process statistics N processes would normalise by N different batch statistics and stop matching
    the one-process run. torch's SyncBatchNorm runs on GPUs only: on CPU processes (gloo) the statistics stay
    per process, and the run says so.
    """
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    if not has_bn or accelerator.num_processes == 1:
        return module
    if accelerator.device.type == "cuda":
        accelerator.print(f"BatchNorm statistics synchronised across {accelerator.num_processes} processes")
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    accelerator.print(
        f"warning: BatchNorm statistics are per process on {accelerator.device.type} (torch's SyncBatchNorm "
        f"needs GPUs), so {accelerator.num_processes} processes do not reproduce the one-process run exactly"
    )
    return module


def _mixed_precision(setting: str) -> str:
    """`auto`: bf16 autocast on a GPU that supports it or a CPU that multiplies bf16 natively (AMX or AVX512-BF16), else fp32."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def mirror_negate(processor, render_mode: str | None) -> dict | None:
    """`AffectVLMConfig.mirror_negate` for views rendered in `render_mode`: the channel of the normal's x and
    the processor's means and stds, or None for modes that draw no normal."""
    channels = NORMAL_CHANNELS.get(render_mode)
    if channels is None:
        return None
    ip = processor.image_processor
    return {"channel": channels[0], "mean": list(map(float, ip.image_mean)), "std": list(map(float, ip.image_std))}


def _render_settings(config: dict) -> dict | None:
    """The cache's render settings, saved with the processor so the app renders scans the same way."""
    if config["data"]["source"] != "cache":
        return None
    return run_settings(cache_folders(config["data"]["cache_dir"])) or None


class Run:
    """What one training run holds while it trains: the accelerator, the prepared module, optimizer, schedule
    and loaders, the prompt source, augmentation and AU targets, and the trainer `state` (step, epoch, batch
    position, best model so far, validation history) that every checkpoint carries."""

    def __init__(self, config: dict, args, fresh: bool):
        self.config, self.args, self.t = config, args, config["train"]
        self.output_dir = Path(args.output_dir)
        self.ckpt_root = self.output_dir / "checkpoints"
        self.accelerator = _accelerator(config, args, self.output_dir)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            dump_config(config, self.output_dir / "config.yaml")
            if fresh:
                (self.output_dir / "logs" / "metrics.jsonl").unlink(missing_ok=True)
        self.label_names, view_names = list(config["data"]["labels"]), list(config["data"]["views"])
        # Seed before building the model: every process builds the same initial weights.
        set_seed(config["seed"])
        dataset = build_dataset(config)
        render = _render_settings(config) or {}
        model, self.processor = build_model_and_processor(config, render)
        if render:  # else the checkpoint's own
            model.config.mirror_negate = mirror_negate(self.processor, render.get("mode"))
        self.tokenizer = self.processor.tokenizer
        loaders = get_dataloaders(config, dataset)
        train_loader, val_loader, test_loader, self.sampler, self.fold = loaders
        self.prompts = PromptSource(
            config, self.label_names, view_names, self.tokenizer, model.max_text_length
        )
        self.augment = build_augment(config, view_names, render.get("mode")).train()
        au_cfg = config["au"]
        self.aus = AUTargets(self.prompts.tokenize, au_cfg["active_from"]) if au_cfg["weight"] > 0 else None
        self.text_basis = _text_basis(config, model, self.tokenizer)
        if config["model"]["freeze_text_projection"]:
            _freeze_text_projection(model)
        module = TrainModule(model, au_cfg["weight"], len(self.aus.numbers) if self.aus else 0)
        module = sync_batchnorm(module, self.accelerator)
        optimizer = torch.optim.AdamW(
            param_groups(module, self.t["weight_decay"]),
            lr=self.t["lr"],
            betas=tuple(self.t["betas"]),
            fused=self.accelerator.device.type == "cuda",  # one kernel for the whole update on GPUs
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(self.t["warmup_steps"], self.t["max_steps"], self.t["min_lr_ratio"])
        )
        prepared = self.accelerator.prepare(
            module, optimizer, train_loader, val_loader, test_loader, scheduler
        )
        self.module, self.optimizer, self.train_loader, self.val_loader, self.test_loader, self.scheduler = (
            prepared
        )
        # The prompt sampler's and the augmentation generator's states go into every checkpoint.
        self.accelerator.register_for_checkpointing(self.prompts.bank, self.augment)
        self.unwrapped = self.accelerator.unwrap_model(self.module).model
        self.state = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0, "best": None, "history": []}

    def resume(self, resume_from: Path | None) -> None:
        if resume_from is None:
            return
        self.accelerator.load_state(str(resume_from))
        self.state = json.loads((resume_from / TRAINER_STATE).read_text())
        self.accelerator.print(f"resumed from {resume_from} at step {self.state['global_step']}")
        if self.accelerator.is_main_process:
            truncate_jsonl(self.output_dir / "logs" / "metrics.jsonl", self.state["global_step"])

    def validate(self, step: int) -> None:
        _validate(
            self.accelerator, self.module, self.val_loader, self.processor, self.tokenizer, self.label_names,
            self.state, self.output_dir, step,
        )  # fmt: skip


def _accelerator(config: dict, args, output_dir: Path) -> Accelerator:
    t = config["train"]
    accelerator = Accelerator(
        gradient_accumulation_steps=t["grad_accum"],
        mixed_precision=_mixed_precision(t["mixed_precision"]),
        # Global batches split over processes: the config means the same thing on any number of processes.
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with=[JSONLTracker(output_dir / "logs")] + (["tensorboard"] if tensorboard_available() else []),
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        cpu=args.cpu,
    )
    if t["batch_size"] % accelerator.num_processes or t["eval_batch_size"] % accelerator.num_processes:
        raise ValueError(
            f"train.batch_size={t['batch_size']} and train.eval_batch_size={t['eval_batch_size']} are global and "
            f"must divide by the {accelerator.num_processes} processes"
        )
    return accelerator


def training_function(config: dict, args) -> dict:
    resume_from = _resume_dir(args.resume, Path(args.output_dir) / "checkpoints")
    run = Run(config, args, fresh=resume_from is None)
    run.resume(resume_from)
    run.accelerator.init_trackers("affectvlm", config={"name": config["name"], "seed": config["seed"]})
    t, accelerator = run.t, run.accelerator
    if accelerator.is_main_process:
        accelerator.print(
            f"fold {run.fold.index}: {len(run.train_loader.dataset)} train / {len(run.val_loader.dataset)} val / "
            f"{len(run.test_loader.dataset)} test samples; {t['max_steps']} steps of {t['batch_size']} x "
            f"{t['grad_accum']} on {accelerator.num_processes} process(es)"
        )
    start_step = run.state["global_step"]
    elapsed = _train_steps(run)
    # Zero-shot / no-training runs still get a model folder and a test score.
    if run.state["best"] is None:
        run.validate(run.state["global_step"])
    accelerator.wait_for_everyone()
    result = _finish(run, elapsed, run.state["global_step"] - start_step)
    # Free the DDP wrapper while the process group is still registered, then destroy the group. Were DDP's
    # reducer left to drop the group's last reference (when this function's locals go), the gloo group would
    # be destroyed with the GIL held while its worker thread waits for the GIL to free a gathered tensor:
    # a hang at exit, seen with two processes (torch's bindings release the GIL for the group, not the
    # reducer; pytorch/pytorch#56297).
    accelerator.wait_for_everyone()
    del run
    accelerator.free_memory()
    accelerator.end_training()
    return result


def _train_steps(run: Run) -> float:
    """Optimizer steps until `train.max_steps`, validating, saving and logging on the way; the seconds taken."""
    t, accelerator, state, args = run.t, run.accelerator, run.state, run.args
    logit_scale_max = math.log(run.unwrapped.config.logit_scale_max)
    world, rank = accelerator.num_processes, accelerator.process_index
    local_b = t["batch_size"] // world
    rows = slice(rank * local_b, (rank + 1) * local_b)  # this process's slice of every global batch
    bar = tqdm(
        total=t["max_steps"], initial=state["global_step"], desc="train",
        disable=not accelerator.is_local_main_process or args.no_progress,
    )  # fmt: skip
    logs, budget = StepLogs(run), TimeBudget(run)
    run.module.train()
    epoch = state["epoch"]
    while state["global_step"] < t["max_steps"]:
        run.sampler.set_position(epoch, state["batch_in_epoch"] if epoch == state["epoch"] else 0)
        state["epoch"] = epoch
        for batch in run.train_loader:
            inputs = model_inputs(
                batch, run.augment, run.processor, run.prompts, t["batch_size"], rows, world,
                accelerator.device, run.aus,
            )  # fmt: skip
            with accelerator.accumulate(run.module):
                out = run.module(**inputs)
                accelerator.backward(out.loss)
                grad_norm = None
                if accelerator.sync_gradients and t["max_grad_norm"]:
                    grad_norm = accelerator.clip_grad_norm_(run.module.parameters(), t["max_grad_norm"])
                run.optimizer.step()
                run.scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
            logs.add(out, batch["labels"])
            state["batch_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            with torch.no_grad():  # CLIP's clamp: the temperature never exceeds logit_scale_max (open_clip)
                run.unwrapped.clip.logit_scale.clamp_(0, logit_scale_max)
            if run.text_basis is not None:
                project_text_projection(run.unwrapped, run.text_basis)
            state["global_step"] += 1
            bar.update(1)
            budget.update(run, state["global_step"], bar)
            _after_step(run, state["global_step"], logs, grad_norm, bar)
            if state["global_step"] >= t["max_steps"]:
                break
        if state["global_step"] < t["max_steps"]:
            epoch += 1
            state["batch_in_epoch"] = 0
    bar.close()
    return logs.elapsed()


class TimeBudget:
    """`train.max_minutes`: at every logged step the step count is fitted again to the time left, from the pace
    since the first logged step (the first steps pay for warm-up, not the pace), and the lr schedule with it;
    never beyond `train.max_steps`. Every process gets the main process's count, so all stop together."""

    def __init__(self, run: Run):
        minutes = run.t.get("max_minutes")
        self.seconds = None if minutes is None else 60.0 * minutes
        self.cap, self.start, self.mark = run.t["max_steps"], time.perf_counter(), None

    def update(self, run: Run, step: int, bar) -> None:
        if self.seconds is None or step % run.t["log_every"]:
            return
        now = time.perf_counter() - self.start
        if self.mark is None:  # every process returns here alike: the broadcast below is a collective
            self.mark = (step, now)
            return
        pace = (step - self.mark[0]) / max(now - self.mark[1], 1e-9)
        total = min(self.cap, max(step, int(step + pace * (self.seconds - now))))
        total = int(broadcast(torch.tensor([total], device=run.accelerator.device)).item())
        if total == run.t["max_steps"]:
            return
        t = run.t
        t["max_steps"] = bar.total = total
        schedule = getattr(run.scheduler, "scheduler", run.scheduler)  # accelerate wraps torch's scheduler
        schedule.lr_lambdas = [warmup_cosine(t["warmup_steps"], total, t["min_lr_ratio"])] * len(schedule.lr_lambdas)


class StepLogs:
    """Loss terms and accuracy summed over the micro-batches since the last log, and the samples/s so far."""

    def __init__(self, run: Run):
        self.run, self.running, self.micro, self.samples = run, {}, 0, 0
        self.start = time.perf_counter()

    def add(self, out, labels) -> None:
        _accumulate_logs(self.running, out, labels)
        self.micro += 1
        self.samples += self.run.t["batch_size"]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def flush(self, step: int, grad_norm) -> dict:
        run = self.run
        logs = _reduce_logs(run.accelerator, self.running, self.micro)
        logs["lr"] = run.scheduler.get_last_lr()[0]
        logs["margin"] = run.unwrapped.margin.item()
        logs["logit_scale"] = run.unwrapped.logit_scale.item()
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        logs["samples_per_s"] = self.samples / max(self.elapsed(), 1e-9)
        run.accelerator.log(logs, step=step)
        self.running, self.micro = {}, 0
        return logs


def _after_step(run: Run, step: int, logs: StepLogs, grad_norm, bar) -> None:
    """Logging, validation, checkpointing (and the resume tests' crashes) after optimizer step `step`."""
    t, args = run.t, run.args
    last = step == t["max_steps"]
    if step % t["log_every"] == 0 or last:
        flushed = logs.flush(step, grad_norm)
        bar.set_postfix(loss=f"{flushed['loss']:.3f}", acc=f"{flushed['accuracy']:.2f}")
    if step % t["eval_every"] == 0 or last:
        run.validate(step)
    if step % t["save_every"] == 0 or last:
        save_checkpoint(
            run.accelerator, run.ckpt_root, run.state, t["keep_checkpoints"], args.crash_in_save_at == step
        )
    if args.crash_after_steps is not None and step >= args.crash_after_steps:
        os._exit(17)  # testing: a hard crash, no cleanup, no checkpoint beyond the last saved one


def _finish(run: Run, elapsed: float, trained_steps: int) -> dict:
    """Score the model chosen on the validation subjects on the test subjects; write results.json."""
    accelerator, state, t = run.accelerator, run.state, run.t
    _load_selected(accelerator, run.module, run.output_dir / "model")
    test = evaluate(accelerator, run.module, run.test_loader, run.processor, run.tokenizer, run.label_names)
    accelerator.log(
        {f"test/{k}": v for k, v in test.items() if isinstance(v, float)}, step=state["global_step"]
    )
    result = {
        "name": run.config["name"],
        "fold": run.fold.to_dict(),
        "selected": state["best"],
        "test": test,
        "history": state["history"],
        "num_train_samples": len(run.train_loader.dataset),
        "steps": state["global_step"],
        "train_time_s": elapsed,
        "train_samples_per_s": (trained_steps * t["batch_size"] * t["grad_accum"]) / elapsed
        if trained_steps
        else None,
        "num_processes": accelerator.num_processes,
        "environment": run_environment(accelerator.device),
    }
    if accelerator.is_main_process:
        result["served"] = write_served_settings(run)
        (run.output_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        accelerator.print(
            f"test accuracy {test.get('accuracy', float('nan')):.4f} (model of step {state['best']['step']}, "
            f"val accuracy {state['best']['accuracy']})"
        )
    return result


def write_served_settings(run: Run) -> dict:
    """What the chosen model (`<output_dir>/model`) is served with beyond its weights, written into its config at
    the end of the run (main process): the text anchors (`train.text_anchors`, train/text_anchors.py's defaults,
    where they fit the model), the familiarity floor (`train.familiarity_percentile` of the familiarity of the
    validation samples, never the test ones, as the predictor computes it: train/familiarity.py `fit_floor`) and
    the face distance on the same samples (`train.face_distance_percentile`, `affectvlm.face_distance`),
    then, for a pretrained text encoder, its prompt features (`prompt_features.safetensors`).
    Anchors first: the floor is measured on the model as it is then served. Returns what was written."""
    t, folder = run.t, run.output_dir / "model"
    anchors = write_anchors(folder) if t["text_anchors"] else {"skipped": "train.text_anchors is false"}
    val, device = run.val_loader.dataset, run.accelerator.device
    floor = fit_floor(
        folder, val, t["familiarity_percentile"], device, t["eval_batch_size"], not run.args.no_progress,
        distance_percentile=t["face_distance_percentile"],
    )  # fmt: skip
    # last, what the frozen text encoder makes of the prompts served by default (labels, action units, anchors),
    # so that the CLI and the app do not encode them again at every start (affectvlm/prompt_features.py)
    features = write_prompt_features(folder) if skip_reason(AffectVLMConfig.from_pretrained(folder)) is None else 0
    distance = floor.get("face_distance", {})
    for name, record in (("text anchors", anchors), ("familiarity floor", floor), ("face distance", distance)):
        if "skipped" in record:
            run.accelerator.print(f"no {name} written into {folder}: {record['skipped']}")
    if floor["floor"] is not None:
        run.accelerator.print(
            f"familiarity floor {floor['floor']} (percentile {floor['percentile']} of "
            f"{floor['validation_samples']} validation samples) written into {folder}"
        )
    return {"text_anchors": anchors, "familiarity": floor, "prompt_features": features}


def run_environment(device: torch.device) -> dict:
    """What a result depends on beyond the code and the config: library versions and the hardware's kernels.
    The same machine and versions give bit-identical runs; on another machine runs drifted from them within
    the fold noise (docs/RESULTS.md, reproducibility), so a result is matched to its environment."""
    import platform

    import accelerate
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _accumulate_logs(running: dict, out, labels) -> None:
    running["loss"] = running.get("loss", 0.0) + out.loss.detach().float()
    for name, value in out.loss_terms.items():
        running[f"loss/{name}"] = running.get(f"loss/{name}", 0.0) + value.detach().float()
    acc = (out.logits.detach().argmax(-1) == labels).float().mean()
    running["accuracy"] = running.get("accuracy", 0.0) + acc


def _reduce_logs(accelerator, running: dict, micro: int) -> dict:
    """Mean over the micro-batches since the last log, and over processes (one collective for all terms)."""
    names = sorted(running)
    values = (
        torch.stack([torch.as_tensor(running[n], device=accelerator.device).float() for n in names]) / micro
    )
    values = accelerator.reduce(values, reduction="mean")
    return {n: v.item() for n, v in zip(names, values)}


def _validate(
    accelerator, module, loader, processor, tokenizer, label_names, state, output_dir, step
) -> None:
    metrics = evaluate(accelerator, module, loader, processor, tokenizer, label_names)
    if not metrics:  # no validation subjects (data.val_fraction=0): nothing to choose on, keep the latest
        metrics = {"accuracy": None}
    record = {"step": step, **{k: metrics[k] for k in ("accuracy", "macro_f1", "nll") if k in metrics}}
    state["history"].append(record)
    logged = {f"val/{k}": v for k, v in record.items() if k != "step" and v is not None}
    if logged:
        accelerator.log(logged, step=step)
    if _is_better(record, state["best"]):
        state["best"] = record
        if accelerator.is_main_process:
            train_module = accelerator.unwrap_model(module)
            unwrapped = train_module.model
            if train_module.au_bias is not None:  # the AU term's per-AU biases: the model reads AUs with them
                numbers = sorted(AU_CATALOGUE)
                unwrapped.config.au_logit_bias = {
                    str(n): round(float(b), 5) for n, b in zip(numbers, train_module.au_bias.detach())
                }
            save_model_atomically(
                unwrapped, processor, output_dir / "model", {"selected_on": "validation subjects", **record}
            )
    accelerator.wait_for_everyone()


def _load_selected(accelerator, module, model_dir: Path) -> None:
    """Load the model chosen on the validation subjects (every process) before scoring the test subjects."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("model*.safetensors"))  # the weights (shards too), nothing beside them
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    model = accelerator.unwrap_model(module).model
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Frozen text-encoder weights are left out of saved models on purpose; they are already in place.
    missing = [k for k in missing if "position_ids" not in k and not model._is_external_text_key(k)]
    if unexpected or missing:
        raise RuntimeError(f"{model_dir}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _resume_dir(resume: str | None, root: Path) -> Path | None:
    if not resume:
        return None
    if resume in ("auto", "latest"):
        found = checkpoint_dirs(root)
        return found[-1] if found else None  # auto with nothing saved yet: a fresh start
    path = Path(resume)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {TRAINER_STATE})")
    return path


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train/train.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", default="tiny",
        help="config name in train/configs (tiny, synth-cpu, paper) or a YAML/JSON file (default: tiny)",
    )  # fmt: skip
    parser.add_argument(
        "--output-dir", required=True, help="run folder: config, logs, checkpoints, model, results"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.lr=1e-4 --set data.fold=3 (values parsed as YAML)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", default=None, metavar="auto|DIR",
        help="continue from the latest complete checkpoint in <output-dir>/checkpoints (auto) or from DIR: "
        "step counter, data position, optimizer, schedule and every random state",
    )  # fmt: skip
    parser.add_argument(
        "--mixed-precision", choices=["no", "bf16", "fp16", "auto"], default=None,
        help="override train.mixed_precision (auto: bf16 where the GPU supports it, else full precision)",
    )  # fmt: skip
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is visible")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs still written)")
    testing = parser.add_argument_group("crash simulation (for the resume tests)")
    testing.add_argument(
        "--crash-after-steps", type=int, default=None, metavar="N",
        help="hard-exit (os._exit, no cleanup) right after optimizer step N",
    )  # fmt: skip
    testing.add_argument(
        "--crash-in-save-at", type=int, default=None, metavar="N",
        help="hard-exit while writing the checkpoint of step N (after the weights, before it is complete)",
    )  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    overrides = list(args.set)
    if args.mixed_precision:
        overrides.append(f"train.mixed_precision={args.mixed_precision}")
    config = load_config(args.config, overrides)
    output_folder(args.output_dir)
    try:
        return training_function(config, args)
    except DataError as err:  # the data or folds cannot make this run: one line, no traceback
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
