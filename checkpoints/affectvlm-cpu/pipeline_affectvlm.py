"""A transformers `pipeline` for AffectVLM: three views, a 3D scan or a 4D sequence in; label scores out.

    from transformers import pipeline

    classifier = pipeline("zero-shot-image-classification", model=folder_or_hub_id, trust_remote_code=True)
    classifier(images=["frontal.png", "left.png", "right.png"], candidate_labels=["happiness", "sadness"])
    classifier(images="frontal.png", candidate_labels=["happiness", "sadness"], top_k=1)  # one image: the first view
    classifier(scan="face.obj", candidate_labels=["happiness", "a person in pain"])
    classifier(sequence="frames.zip")  # candidate_labels default to the model's own
    classifier(scan="bust.obj", facing="-z")  # the face looks along -z in the file (where the search misses it)
    # -> [{"label": "happiness", "score": 0.71}, ...], highest first; `.notes` says what to know about it

This file is Hub remote code, saved next to the weights (the model's file imports it, so saving the model
writes it); config.json's `custom_pipelines` points at it, which is how `pipeline(model=folder,
trust_remote_code=True)` finds it and its task. At module level it imports only torch, transformers and the
standard library. Scans and sequences need the `affectvlm` package: its `AffectVLMPredictor` is the one
path from a scan to the model (rendering included), imported when first needed. Views go through it too
when it is installed; without it they are scored with the model and processor alone.
"""

from __future__ import annotations

import mimetypes
import numbers
import os
from collections.abc import Mapping

from transformers import Pipeline
from transformers.image_utils import is_valid_image, load_image

SAMPLE_KINDS = ("images", "scan", "sequence")
# Without the affectvlm package (and its prompt sets) each label is scored with this one prompt.
DEFAULT_TEMPLATE = "a 3D scan of a face, expression: {}."
INSTALL_HINT = "pip install affectvlm"


class ScoredLabels(list):
    """The answer for one sample: `[{"label": ..., "score": ...}, ...]`, highest score first, and `notes`:
    what a person should know about it (missing views, low confidence, ...), possibly none."""

    def __init__(self, rows=(), notes=()):
        super().__init__(rows)
        self.notes = list(notes)


def _one_image(value) -> bool:
    """A PIL image, or an array or tensor of one image ((H, W) or (H, W, C)), not a stack of views."""
    return is_valid_image(value) and getattr(value, "ndim", 2) <= 3


class AffectVLMPipeline(Pipeline):
    """Scores one sample against candidate labels (any text; default the model's labels).

    A sample is `images=` (the views in `processor.view_names` order, or a dict view name -> image; None for
    a missing view; PIL images, arrays or paths; one image alone is the first view), `scan=` (a 3D file) or
    `sequence=` (a folder, a .zip or a list of 3D frames). Given positionally (`classifier(x)`), a path is a
    scan, a folder or .zip a sequence, and an image (or an image file) is the first view alone; a dict may name
    `images`/`scan`/`sequence` or views; a list is a batch of such samples, one answer each. `top_k=k`: only
    the k likeliest labels (as transformers' classification pipelines). `facing="-z"`: for a scan or a sequence,
    the file axis the face looks along (`AffectVLMPredictor.__call__`'s `facing`; default: found from the face).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "AffectVLMPipeline needs the AffectVLMProcessor saved with the model (processor=...)"
            )
        self._predictor = None

    def __call__(self, inputs=None, *, images=None, scan=None, sequence=None, **kwargs):
        """`classifier(images=..., candidate_labels=[...])`, `scan=` or `sequence=`, or one positional
        sample (or list of samples); returns `ScoredLabels` (a list of them for a list)."""
        given = {
            kind: value for kind, value in zip(SAMPLE_KINDS, (images, scan, sequence)) if value is not None
        }
        if len(given) + (inputs is not None) != 1:
            raise ValueError(
                "give one sample: a positional input, or exactly one of images=, scan= or sequence="
            )
        return super().__call__(given or inputs, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, top_k=None, facing=None):
        preprocess, postprocess = {}, {}
        if candidate_labels is not None:
            preprocess["candidate_labels"] = candidate_labels
        if facing is not None:
            preprocess["facing"] = facing
        if hypothesis_template is not None:
            preprocess["hypothesis_template"] = hypothesis_template
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
                raise ValueError(f"top_k is how many labels to return, a whole number from 1; got {top_k!r}")
            postprocess["top_k"] = int(top_k)
        return preprocess, {}, postprocess

    def save_pretrained(self, save_directory, **kwargs):
        """Save the model (weights, config with `custom_pipelines`, remote code) and the processor."""
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)

    # -- steps ------------------------------------------------------------------------------------------------

    def preprocess(self, inputs, candidate_labels=None, hypothesis_template=None, facing=None):
        sample = self._sample(inputs)
        return {"sample": sample, "labels": candidate_labels, "template": hypothesis_template, "facing": facing}

    def _forward(self, model_inputs):
        sample, labels, template = model_inputs["sample"], model_inputs["labels"], model_inputs["template"]
        predictor = self._affectvlm_predictor()
        if predictor is not None:
            if template is not None and labels is not None and not isinstance(labels, str | Mapping):
                labels = {label: [template.format(label)] for label in labels}  # the caller's own prompt
            # which way a scan's face looks, when the caller says (`facing=`; an affectvlm before it takes none)
            given = {"facing": model_inputs["facing"]} if model_inputs.get("facing") is not None else {}
            result = predictor(**sample, labels=labels, **given)
            return {
                "labels": list(result.labels),
                "probs": result.probs.tolist(),
                "notes": list(result.notes),
            }
        if "images" not in sample:
            kind = "3D scan" if "scan" in sample else "4D sequence"
            raise ImportError(
                f"scoring a {kind} needs the affectvlm package, which renders it into the model's views: "
                f"{INSTALL_HINT} (views alone work without it: images=[...])"
            )
        return self._score_views(sample["images"], labels, template or DEFAULT_TEMPLATE)

    def postprocess(self, model_outputs, top_k=None):
        scores = [float(p) for p in model_outputs["probs"]]
        rows = [{"label": label, "score": score} for label, score in zip(model_outputs["labels"], scores)]
        return ScoredLabels(sorted(rows, key=lambda row: -row["score"])[:top_k], model_outputs["notes"])

    # -- helpers ----------------------------------------------------------------------------------------------

    def _sample(self, inputs) -> dict:
        """One sample as {"images" | "scan" | "sequence": value}."""
        if isinstance(inputs, Mapping):
            kinds = [kind for kind in SAMPLE_KINDS if kind in inputs]
            if not kinds:
                return {"images": dict(inputs)}  # view name -> image
            if len(inputs) != 1:
                raise ValueError(
                    f"a sample dict holds exactly one of {', '.join(SAMPLE_KINDS)}; got {sorted(inputs)}"
                )
            images = inputs.get("images")
            if isinstance(images, str | os.PathLike) or _one_image(images):  # images="x.png": the first view
                return {"images": self._first_view_only(images)}
            return dict(inputs)
        if isinstance(inputs, str | os.PathLike):
            path = os.fspath(inputs)
            if os.path.isdir(path) or path.lower().endswith(".zip"):
                return {"sequence": path}
            if (mimetypes.guess_type(path)[0] or "").startswith("image/"):
                return {"images": self._first_view_only(path)}
            return {"scan": path}
        if _one_image(inputs):
            return {"images": self._first_view_only(inputs)}
        raise TypeError(
            f"cannot score a {type(inputs).__name__}: give images=[...], scan=path or sequence=folder/zip/list"
        )

    def _first_view_only(self, image) -> list:
        return [image] + [None] * (len(self.processor.view_names) - 1)

    def _affectvlm_predictor(self):
        """The affectvlm package's AffectVLMPredictor over this model and processor; None without the package.
        The text encoder's features of the default prompts saved with the model are taken, as the package's own
        `AffectVLMPredictor.from_pretrained` does (its first answer then encodes only the labels it is given), and
        so are its face distance (`affectvlm.face_distance`) and its companion (`affectvlm.companion`)."""
        if self._predictor is None:
            try:
                from affectvlm.predictor import AffectVLMPredictor
            except ImportError:
                return None
            try:
                from affectvlm.prompt_features import load as load_prompt_features
            except ImportError:  # an affectvlm from before prompt features: every prompt is encoded
                load_prompt_features = None
            source = getattr(self.model, "name_or_path", "")
            if load_prompt_features is not None and source:
                load_prompt_features(self.model, source)
            self._predictor = AffectVLMPredictor(self.model, self.processor)
            try:  # what says a scan may not be a face, as `AffectVLMPredictor.from_pretrained` loads it
                from affectvlm.face_distance import load as load_face_distance
            except ImportError:  # an affectvlm from before the face distance: the familiarity floor notes
                load_face_distance = None
            if load_face_distance is not None and source:
                self._predictor.face_distance = load_face_distance(source, self.model.config.projection_dim)
            try:  # the model that reads the same scan as normal maps, as `from_pretrained` loads it
                from affectvlm.companion import load as load_companion
            except ImportError:  # an affectvlm from before companions: the model alone
                load_companion = None
            if load_companion is not None and source:
                self._predictor.companion = load_companion(
                    source, self._predictor.recipe, device=self.model.device, dtype=self.model.dtype
                )
        return self._predictor

    def _score_views(self, images, labels, template: str) -> dict:
        """Views scored by the model and processor alone (no affectvlm package): one prompt per label."""

        def load(image):
            return load_image(os.fspath(image)) if isinstance(image, str | os.PathLike) else image

        views = (
            {k: load(v) for k, v in images.items()}
            if isinstance(images, Mapping)
            else [load(v) for v in images]
        )
        inputs = self.processor(images=[views])
        prompts = self._prompts(labels, template)
        class_embeds = self.model.encode_prompts(prompts, tokenizer=self.processor.tokenizer)
        scores = self.model.score(
            inputs["pixel_values"].to(self.device),
            class_embeds,
            view_mask=inputs["view_mask"].to(self.device),
        )
        notes = [
            f"scored with one prompt per label ({template!r}); {INSTALL_HINT} for the model's prompt sets"
        ]
        missing = [
            name for name, ok in zip(self.processor.view_names, inputs["view_mask"][0].tolist()) if not ok
        ]
        if missing:
            notes.append(f"missing view(s): {', '.join(missing)}; scored on the others")
        return {"labels": list(prompts), "probs": scores.probs[0], "notes": notes}

    def _prompts(self, labels, template: str) -> dict[str, list[str]]:
        """label -> prompts: a dict is taken as it is; names (a list or a comma-separated string) use `template`."""
        if labels is None:
            labels = list(self.model.config.label_names)
        if isinstance(labels, str):
            labels = labels.split(",")
        if isinstance(labels, Mapping):
            prompts = {str(k).strip(): [v] if isinstance(v, str) else list(v) for k, v in labels.items()}
        else:
            prompts = {name: [template.format(name)] for name in (str(x).strip() for x in labels) if name}
        if len(prompts) < 2:
            raise ValueError("give at least two distinct, non-empty candidate labels")
        return prompts


__all__ = ["AffectVLMPipeline", "ScoredLabels"]
