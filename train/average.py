"""Average the weights of fine-tuned relatives of one model ("model soup"): what the shipped default's last step is.

    python train/average.py --model checkpoints/affectvlm-cpu --model runs/default-7/model --out runs/default-7-mean

Every floating-point tensor is the mean over the models (integer buffers, such as a batch norm's count, come from
the last model); so is each action unit's logit bias in the config. Everything else (config, processor, tokenizer,
remote code) is the last model's folder, with its served temperature reset to 1 and its familiarity floor and face
distance removed, all fitted on other weights: calibrate the result again (`train/evaluate.py --calibrate`) and fit
its floor and face distance (`train/familiarity.py`). The models must share one architecture (the same tensor names
and shapes), as a checkpoint and its fine-tunes do; averaging unrelated models gives nonsense, and this tool cannot
tell.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from affectvlm import face_distance  # noqa: E402

WEIGHTS = "model.safetensors"


def average_state(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor over `states` (same names and shapes); other tensors from the last."""
    names = set(states[0])
    for state in states[1:]:
        if set(state) != names or any(state[k].shape != states[0][k].shape for k in names):
            raise ValueError("the models differ in their tensors' names or shapes: not relatives of one model")
    out = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            out[name] = (sum(s[name].double() for s in states) / len(states)).to(last.dtype)
        else:
            out[name] = last.clone()
    return out


def average_models(folders: list[Path], out: Path) -> Path:
    if len(folders) < 2:
        raise ValueError("give at least two models to average")
    states = [load_file(str(Path(f) / WEIGHTS)) for f in folders]
    configs = [json.loads((Path(f) / "config.json").read_text()) for f in folders]
    shutil.copytree(folders[-1], out, dirs_exist_ok=True)
    save_file(average_state(states), str(out / WEIGHTS), metadata={"format": "pt"})
    # the temperature, the familiarity floor and the face distance were fitted on other weights: calibrate and fit
    # them again
    config = dict(configs[-1], temperature=1.0, familiarity_floor=None)
    face_distance.remove(out)
    biases = [c.get("au_logit_bias") or {} for c in configs]
    if biases[-1]:
        if any(set(b) != set(biases[-1]) for b in biases):
            raise ValueError("the models read different action units (au_logit_bias keys differ)")
        config["au_logit_bias"] = {k: round(sum(b[k] for b in biases) / len(biases), 5) for k in biases[-1]}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="a saved model folder (repeat: two or more)")
    p.add_argument("--out", required=True, help="folder for the averaged model")
    args = p.parse_args(argv)
    out = average_models([Path(m) for m in args.model], Path(args.out))
    print(f"averaged {len(args.model)} models into {out} (temperature reset to 1, no familiarity floor or face distance: calibrate it and fit them again, train/evaluate.py --calibrate and train/familiarity.py)")
    return out


if __name__ == "__main__":
    main()
