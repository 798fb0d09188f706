"""How far a scan lies from the faces a model learnt from: the measure behind "it may not be a face".

`Prediction.familiarity`, the cosine similarity between a scan's fused embedding and its nearest trained label,
looks along one direction per label. A shape can lie near a label's direction and still far from every face: the
MIT model finds a cylinder's point cloud as familiar as a face (0.34-0.44 against a floor of 0.05). The faces of
each expression fill a cloud about their mean, wide along some directions of the shared space and thin along
others; a shape that is no face strays along the thin ones. This module measures that: the Mahalanobis distance
from a scan's embedding to the nearest expression's mean, under one covariance shared by the expressions and shrunk
towards its mean variance (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution samples
and adversarial attacks"), fitted on validation faces (`fit`). A scan further than the `ceiling` gets the
predictor's "looks like none of the faces" note in place of the familiarity floor's.

A checkpoint carries the fit in `face_distance.safetensors` (about 70 kB): the class means, the whitening matrix
(the Cholesky factor of the shrunk precision) and, as metadata, the labels, the ceiling and what it was fitted on.
`train/train.py` writes it at the end of a run from the run's validation subjects, `train/familiarity.py` from
synthetic validation scans or a render cache. A missing, damaged or foreign file is passed over (with a warning)
and the familiarity floor notes as before.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FILENAME = "face_distance.safetensors"
MAX_BYTES = 16 * 2**20
# The covariance is shrunk this far towards its mean variance (the shipped models: 128 dimensions from 2,000 faces;
# a training run's validation set can hold a few hundred).
DEFAULT_SHRINKAGE = 0.2
# The ceiling: this percentile of the distances of validation faces the fit did not see (the other half of the
# identities): about 2.5 % of new faces are noted (the familiarity floor noted 5 %). At the 95th percentile the
# shipped models noted 4.4-4.6 % of held-out faces and 1-2 more shapes, and the MIT model came within 0.06 of
# noting an example face (docs/RESULTS.md).
DEFAULT_PERCENTILE = 97.5


@dataclass
class FaceDistance:
    """A fit: (C, D) class means, (D, D) whitening W (distance = |(x - mean) W|), the classes' labels, the ceiling
    and a record of what it was fitted on."""

    means: np.ndarray
    whitening: np.ndarray
    labels: list[str]
    ceiling: float
    record: dict = field(default_factory=dict)

    def __call__(self, embeds: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, D) fused embeddings -> (N,) distance to the nearest class mean."""
        x = torch.as_tensor(embeds).detach().float().cpu().numpy().astype(np.float64)
        offsets = x[:, None, :] - self.means[None]
        return np.linalg.norm(offsets @ self.whitening, axis=-1).min(axis=1)


def _fit_stats(
    embeds: np.ndarray, labels: np.ndarray, shrinkage: float
) -> tuple[np.ndarray, np.ndarray, list]:
    classes = sorted(set(labels.tolist()))
    means = np.stack([embeds[labels == c].mean(axis=0) for c in classes])
    within = embeds - means[[classes.index(c) for c in labels]]
    cov = within.T @ within / len(within)
    cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    return means, np.linalg.cholesky(np.linalg.inv(cov)), classes


def fit(
    embeds,
    labels,
    groups,
    percentile: float = DEFAULT_PERCENTILE,
    shrinkage: float = DEFAULT_SHRINKAGE,
    record: dict | None = None,
) -> FaceDistance:
    """Fit on validation faces: (N, D) fused embeddings as served, their (N,) labels and (N,) groups (the
    identity of each: a scan of a person the fit saw is nearer than a new person's). The means and covariance come
    from half of the identities, the ceiling from the distances of the other half, so that the ceiling is what a
    new person's face reaches. ValueError when there are too few faces or identities to fit."""
    x = torch.as_tensor(embeds).detach().float().cpu().numpy().astype(np.float64)
    labels, groups = np.asarray(labels), np.asarray(groups)
    people = sorted(set(groups.tolist()))
    if len(people) < 4 or len(x) < 2 * x.shape[1] or not 50 <= percentile < 100:
        raise ValueError(
            f"a face distance needs faces of at least 4 identities, twice as many as the {x.shape[1]} dimensions, and "
            f"a percentile in [50, 100): got {len(x)} faces of {len(people)} identities, percentile {percentile}"
        )
    held = np.isin(groups, people[1::2])
    means, whitening, classes = _fit_stats(x[~held], labels[~held], shrinkage)
    fitted = FaceDistance(means, whitening, [str(c) for c in classes], 0.0)
    ceiling = round(float(np.percentile(fitted(x[held]), percentile)), 4)
    info = {
        "percentile": percentile, "shrinkage": shrinkage, "faces": int((~held).sum()),
        "ceiling_faces": int(held.sum()), "identities": len(people), **(record or {}),
    }  # fmt: skip
    return FaceDistance(means, whitening, fitted.labels, ceiling, info)


def save(fitted: FaceDistance, folder: str | os.PathLike) -> Path:
    path = Path(folder) / FILENAME
    tensors = {
        "means": torch.from_numpy(fitted.means.astype(np.float32)).contiguous(),
        "whitening": torch.from_numpy(fitted.whitening.astype(np.float32)).contiguous(),
    }
    meta = {
        "labels": json.dumps(fitted.labels),
        "ceiling": repr(fitted.ceiling),
        "record": json.dumps(fitted.record),
    }
    save_file(tensors, str(path), metadata=meta)
    return path


def remove(folder: str | os.PathLike) -> None:
    """Take a fit out of a checkpoint folder (its weights changed: a fit of other weights would mislead)."""
    (Path(folder) / FILENAME).unlink(missing_ok=True)


def _read(path: str) -> FaceDistance:
    if os.path.getsize(path) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 2**20} MB")
    try:
        with safe_open(path, "pt") as handle:  # one read: the tensors and the metadata
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            meta = handle.metadata() or {}
        labels, ceiling = json.loads(meta["labels"]), float(meta["ceiling"])
        record = json.loads(meta.get("record", "{}"))
    except (SafetensorError, OSError) as err:  # an OSError's text would name the server's folders
        raise ValueError(f"unreadable ({err.strerror if isinstance(err, OSError) else err})") from None
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ValueError("not a face-distance file") from None
    means, whitening = tensors.get("means"), tensors.get("whitening")
    if means is None or whitening is None or means.dim() != 2 or whitening.shape != (means.shape[1],) * 2:
        raise ValueError("not a face-distance file")
    if len(labels) != len(means) or not (torch.isfinite(means).all() and torch.isfinite(whitening).all()):
        raise ValueError("its means and labels do not match, or it holds non-finite numbers")
    return FaceDistance(means.double().numpy(), whitening.double().numpy(), labels, ceiling, record)


def load(source: str | os.PathLike, dim: int) -> FaceDistance | None:
    """The fit saved with a checkpoint folder or Hub id whose embeddings have `dim` dimensions, or None (no file,
    or a file passed over with a warning saying why)."""
    from .prompt_features import locate

    path = locate(source, FILENAME)
    if path is None:
        return None
    try:
        fitted = _read(path)
        if fitted.means.shape[1] != dim:
            raise ValueError(
                f"fitted on {fitted.means.shape[1]}-dimensional embeddings, not this model's {dim}"
            )
    except (ValueError, OSError) as err:
        why = err.strerror if isinstance(err, OSError) else err
        warnings.warn(f"{FILENAME} passed over: {why}; the familiarity floor notes instead", stacklevel=2)
        return None
    return fitted


__all__ = [
    "DEFAULT_PERCENTILE",
    "DEFAULT_SHRINKAGE",
    "FILENAME",
    "FaceDistance",
    "fit",
    "load",
    "remove",
    "save",
]
