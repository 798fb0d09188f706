"""train/train.py: outputs and logging, exact resume after a crash, and 2 processes == 1 process.

The end-to-end tests run the `tiny` config (2-layer 32-wide CLIP from scratch, in-memory synthetic views,
6 steps) as real subprocesses, the way a user runs it: each takes a few seconds, mostly imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from affectvlm import AffectVLMConfig, AffectVLMModel, AffectVLMProcessor
from affectvlm.testing import tiny_clip_config, tiny_processor
from train.config import load_config
from train.data import EpochBatchSampler, ToyViews, class_balance_weights, split_dataset
from train.launch import build_command, free_port
from train.metrics import classification_metrics
from train.train import (
    TRAINER_STATE,
    PromptSource,
    TrainModule,
    _from_checkpoint,
    _is_better,
    build_augment,
    build_parser,
    checkpoint_dirs,
    mirror_negate,
    sync_batchnorm,
    warmup_cosine,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "train.py"
MAX_STEPS = 6  # tiny.yaml: save every 2 steps, keep 2
TINY_RESNET = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"}


def _env(**extra) -> dict:
    # One thread per process: deterministic reductions, and the shared CPU is not oversubscribed.
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def run_train(out: Path, *extra: str, expect: int = 0) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--config", "tiny", "--output-dir", str(out), "--no-progress", *extra]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{MAX_STEPS:08d}" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted one-process tiny run."""
    out = tmp_path_factory.mktemp("reference")
    run_train(out)
    return out


# ----------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------


def test_run_writes_results_logs_rotated_checkpoints_and_a_loadable_model(reference):
    result = json.loads((reference / "results.json").read_text())
    assert result["test"]["num_samples"] > 0 and 0 <= result["test"]["accuracy"] <= 1
    assert set(result["fold"]) == {"index", "train", "val", "test"}
    assert not set(result["fold"]["test"]) & set(result["fold"]["train"] + result["fold"]["val"])
    assert [h["step"] for h in result["history"]] == [3, 6]
    env = result["environment"]  # what a rerun elsewhere must match to be bit-identical
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["torch_threads"] == 1
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert result["selected"]["step"] in (3, 6)

    records = [json.loads(line) for line in (reference / "logs" / "metrics.jsonl").read_text().splitlines()]
    train_keys = set().union(*(r for r in records if "loss" in r))
    # Every loss term, the margin, the accuracy and the learning rate are logged.
    for key in (
        "loss",
        "loss/itc",
        "loss/view_itc",
        "loss/contrastive",
        "loss/triplet",
        "margin",
        "accuracy",
        "lr",
    ):
        assert key in train_keys, key
    assert sorted(r["step"] for r in records if "loss" in r) == list(range(1, MAX_STEPS + 1))
    assert any("val/accuracy" in r for r in records) and any("test/accuracy" in r for r in records)

    # Rotation keeps the two newest complete checkpoints; no temp folder is left behind.
    assert [p.name for p in checkpoint_dirs(reference / "checkpoints")] == ["step_00000004", "step_00000006"]
    assert not list((reference / "checkpoints").glob(".tmp-*"))

    model = AffectVLMModel.from_pretrained(reference / "model")
    processor = AffectVLMProcessor.from_pretrained(reference / "model")
    assert model.config.view_names == ["frontal", "left", "right"]
    views = np.zeros((2, 3, 32, 32, 3), np.uint8)
    class_embeds = model.encode_prompts(
        {"happiness": "a happy face", "anger": "an angry face"}, processor.tokenizer
    )
    scores = model.score(processor.normalize_views(views), class_embeds)
    assert scores.probs.shape == (2, 2)
    selection = json.loads((reference / "model" / "selection.json").read_text())
    assert selection["selected_on"] == "validation subjects"


def test_a_time_budget_fits_the_steps_and_the_lr_schedule_to_the_minutes(tmp_path):
    # 100,000 steps would take hours; 9 seconds of budget must end the run, validated and saved, with the cosine
    # schedule run down to the fitted count rather than left at its peak (3 seconds left 2 steps on a busy machine).
    out = tmp_path / "budget"
    run_train(out, "--set", "train.max_steps=100000", "--set", "train.max_minutes=0.15",
              "--set", "train.eval_every=100000", "--set", "train.save_every=100000")  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    steps = result["steps"]
    assert 2 < steps < 100000 and result["train_time_s"] < 30
    assert [h["step"] for h in result["history"]] == [steps]  # the last (fitted) step was validated
    assert (out / "checkpoints" / f"step_{steps:08d}").is_dir()
    lrs = [r["lr"] for r in map(json.loads, (out / "logs" / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] < 0.5e-3


def test_crash_then_resume_gives_the_same_weights_as_an_uninterrupted_run(reference, tmp_path):
    # A hard crash (os._exit, no cleanup) after step 3: the last checkpoint is step 2.
    run_train(tmp_path, "--crash-after-steps", "3", expect=17)
    assert [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")] == ["step_00000002"]
    # Resume, and die again while writing the step-4 checkpoint: that half-written folder must not count.
    run_train(tmp_path, "--resume", "auto", "--crash-in-save-at", "4", expect=3)
    assert (tmp_path / "checkpoints" / ".tmp-step_00000004" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints" / ".tmp-step_00000004" / TRAINER_STATE).exists()
    assert [p.name for p in checkpoint_dirs(tmp_path / "checkpoints")] == ["step_00000002"]
    proc = run_train(tmp_path, "--resume", "auto")
    assert "resumed from" in proc.stdout and "step_00000002" in proc.stdout

    expected, got = final_weights(reference), final_weights(tmp_path)
    assert expected.keys() == got.keys()
    for name in expected:  # bit-exact: step counter, data position, prompt and augmentation RNG all restored
        assert torch.equal(expected[name], got[name]), name
    a = json.loads((reference / "results.json").read_text())
    b = json.loads((tmp_path / "results.json").read_text())
    assert a["history"] == b["history"] and a["test"]["accuracy"] == b["test"]["accuracy"]
    # The log has exactly one record per step, the re-run steps replacing the interrupted ones.
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert sorted(s for s in steps if s is not None) == sorted(
        json.loads(line)["step"] for line in (reference / "logs" / "metrics.jsonl").read_text().splitlines()
    )


def test_two_cpu_processes_equal_one_process_with_the_same_global_batch(reference, tmp_path):
    # Real processes and gloo via the launcher's torchrun path (accelerate launch --cpu would start one).
    cmd, env = build_command(
        [
            "--num_processes",
            "2",
            "--cpu-processes",
            str(SCRIPT),
            "--config",
            "tiny",
            "--output-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    proc = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["num_processes"] == 2
    expected, got = final_weights(reference), final_weights(tmp_path)
    for name in expected:  # equal up to the order of float reductions
        torch.testing.assert_close(got[name], expected[name], atol=2e-3, rtol=1e-3, msg=name)
    ref = json.loads((reference / "results.json").read_text())
    for a, b in zip(ref["history"], result["history"]):
        assert a["accuracy"] == b["accuracy"] and a["nll"] == pytest.approx(b["nll"], abs=1e-3)
    assert ref["test"]["num_samples"] == result["test"]["num_samples"]  # no padded duplicates counted


def test_two_processes_with_a_time_budget_stop_together(tmp_path):
    # Each process measures its own pace; the main process's step count is broadcast, so neither waits for a
    # collective the other never joins (a hang here would hit the timeout).
    cmd, env = build_command(
        ["--num_processes", "2", "--cpu-processes", str(SCRIPT), "--config", "tiny", "--output-dir", str(tmp_path),
         "--no-progress", "--set", "train.max_steps=100000", "--set", "train.max_minutes=0.15",
         "--set", "train.eval_every=100000", "--set", "train.save_every=100000"]
    )  # fmt: skip
    proc = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["num_processes"] == 2 and 2 < result["steps"] < 100000
    assert [h["step"] for h in result["history"]] == [result["steps"]]


def test_two_processes_crash_and_resume_to_the_uninterrupted_weights(reference, tmp_path):
    """Resume with two processes: every rank's RNG state and the data position come back from the checkpoint,
    so a run killed after step 3 and resumed from step 2 ends where an uninterrupted run ends."""

    def launch(out, *extra, expect=0):
        cmd, env = build_command(
            ["--num_processes", "2", "--cpu-processes", str(SCRIPT), "--config", "tiny", "--output-dir", str(out),
             "--no-progress", *extra]
        )  # fmt: skip
        proc = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert (proc.returncode == 0) == (expect == 0), proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    launch(tmp_path / "whole")
    crashed = tmp_path / "crashed"
    launch(crashed, "--crash-after-steps", "3", expect=17)  # every rank exits hard after step 3
    assert [p.name for p in checkpoint_dirs(crashed / "checkpoints")] == ["step_00000002"]
    assert len(list((crashed / "checkpoints" / "step_00000002").glob("random_states_*.pkl"))) == 2
    proc = launch(crashed, "--resume", "auto")
    assert "resumed from" in proc.stdout + proc.stderr
    expected, got = final_weights(tmp_path / "whole"), final_weights(crashed)
    for name in expected:  # same world, same reductions: bit-exact
        assert torch.equal(expected[name], got[name]), name
    for name in expected:  # and the two-process run is the one-process run, up to reduction order
        torch.testing.assert_close(got[name], final_weights(reference)[name], atol=2e-3, rtol=1e-3, msg=name)


def test_two_machines_with_the_multi_node_flags_equal_one_process(reference, tmp_path):
    """accelerate's own multi-node command, as a user types it on each machine (`--multi_gpu --num_machines 2
    --machine_rank R --main_process_ip ... --main_process_port ...`), run as two "machines" of one process
    each on this host's loopback: two launchers, a c10d rendezvous, gloo (the script's --cpu)."""
    port = str(free_port())
    launchers = []
    for machine_rank in ("0", "1"):
        cmd, env = build_command(
            [
                "--multi_gpu", "--num_machines", "2", "--machine_rank", machine_rank,
                "--main_process_ip", "127.0.0.1", "--main_process_port", port, "--num_processes", "2",
                "--mixed_precision", "no", "--dynamo_backend", "no",
                str(SCRIPT), "--cpu", "--config", "tiny", "--output-dir", str(tmp_path), "--no-progress",
            ]
        )  # fmt: skip
        assert cmd.count(port) == 1  # the given port is passed on unchanged, never replaced by a free one
        launchers.append(
            subprocess.Popen(
                cmd, env=_env(**env), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for launcher in launchers:
            outputs.append(launcher.communicate(timeout=300)[0])
    finally:
        for launcher in launchers:
            launcher.kill()
    for launcher, output in zip(launchers, outputs):
        assert launcher.returncode == 0, output[-3000:]
    assert "on 2 process(es)" in outputs[0]  # one world of two processes, not two one-process runs
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["num_processes"] == 2
    expected, got = final_weights(reference), final_weights(tmp_path)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=2e-3, rtol=1e-3, msg=name)
    assert (
        result["test"]["num_samples"]
        == json.loads((reference / "results.json").read_text())["test"]["num_samples"]
    )


def test_paper_config_fine_tunes_a_clip_checkpoint_and_saves_a_loadable_model(tmp_path):
    """The paper path end to end and offline: `init: clip` (weights, tokenizer and image processor read from a
    CLIP checkpoint folder), per-sample metadata prompts, three views, `mixed_precision: auto`. A tiny CLIP
    saved locally stands in for openai/clip-vit-base-patch16 and the toy views for the render cache."""
    torch.manual_seed(0)
    clip_dir = tmp_path / "clip"
    CLIPModel(tiny_clip_config()).save_pretrained(clip_dir)
    saved = tiny_processor()
    saved.tokenizer.save_pretrained(clip_dir)
    saved.image_processor.save_pretrained(clip_dir)
    initial = load_file(str(clip_dir / "model.safetensors"))
    out = tmp_path / "run"
    overrides = {
        "model.clip_name_or_path": str(clip_dir),
        "data.source": "toy",
        "data.num_workers": "0",
        "train.batch_size": "8",
        "train.eval_batch_size": "8",
        "train.max_steps": "2",
        "train.warmup_steps": "1",
        "train.eval_every": "2",
        "train.save_every": "2",
    }
    cmd = [sys.executable, str(SCRIPT), "--config", "paper", "--output-dir", str(out), "--no-progress"]
    cmd += [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    config = load_config(str(out / "config.yaml"))
    assert config["model"]["init"] == "clip" and config["prompts"]["mode"] == "sample"
    assert config["prompts"]["config"]["use_metadata"] is True
    assert json.loads((out / "results.json").read_text())["test"]["num_samples"] > 0
    model = AffectVLMModel.from_pretrained(out / "model")
    tuned = model.clip.state_dict()
    # Fine-tuned from the checkpoint: two steps at lr 1e-5 move the weights a little, never back to random.
    for key in (
        "text_model.embeddings.token_embedding.weight",
        "vision_model.embeddings.patch_embedding.weight",
    ):
        change = (tuned[key] - initial[key]).abs().max().item()
        assert 0 < change < 1e-3, (key, change)
    processor = AffectVLMProcessor.from_pretrained(out / "model")
    assert processor.tokenizer("a happy face")["input_ids"] == saved.tokenizer("a happy face")["input_ids"]


# ----------------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------------


def test_batchnorm_is_synchronised_across_gpu_processes_only():
    class FakeAccelerator:
        def __init__(self, device, num_processes):
            self.device, self.num_processes, self.printed = torch.device(device), num_processes, []

        def print(self, *args):
            self.printed.append(" ".join(map(str, args)))

    def resnet_module():
        config = AffectVLMConfig(
            clip_config=tiny_clip_config(), vision_backbone="resnet", resnet_config=TINY_RESNET
        )
        return TrainModule(AffectVLMModel(config))

    def count(module, kind):
        return sum(isinstance(m, kind) for m in module.modules())

    gpus = FakeAccelerator("cuda", 2)
    module = resnet_module()
    keys = set(module.state_dict())
    synced = sync_batchnorm(module, gpus)
    assert count(synced, torch.nn.SyncBatchNorm) > 0 and count(synced, torch.nn.BatchNorm2d) == 0
    assert set(synced.state_dict()) == keys  # the saved model loads as the plain model
    assert "synchronised" in gpus.printed[0]
    cpus = FakeAccelerator("cpu", 2)
    kept = sync_batchnorm(resnet_module(), cpus)
    assert count(kept, torch.nn.SyncBatchNorm) == 0 and "per process" in cpus.printed[0]
    one = FakeAccelerator("cuda", 1)
    assert count(sync_batchnorm(resnet_module(), one), torch.nn.SyncBatchNorm) == 0 and not one.printed


def test_help_explains_the_options():
    text = build_parser().format_help()
    for option in ("--config", "--output-dir", "--resume", "--set", "--crash-after-steps"):
        assert option in text


def test_the_lent_gpu_flow_explains_its_plan():
    # bench/gpu_paper.py is run on a machine lent for minutes: it must at least import and say what it does.
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_paper.py"), "--help"], env=_env(),
                          capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for words in ("--minutes", "--quick", "cross-face-model", "held-out"):
        assert words in proc.stdout, words


def test_config_overrides_and_unknown_keys():
    config = load_config(
        "tiny", ["train.lr=0.01", "data.views=[frontal]", "model.affectvlm.triplet_weight=0"]
    )
    assert config["train"]["lr"] == 0.01 and config["data"]["views"] == ["frontal"]
    # "3e-4" is a string to YAML 1.1; an override that reads as a number is that number.
    assert load_config("tiny", ["train.lr=3e-4", "name=1e-3x"])["train"]["lr"] == pytest.approx(3e-4)
    assert load_config("tiny", ["name=1e-3x"])["name"] == "1e-3x"
    assert config["model"]["affectvlm"]["triplet_weight"] == 0
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("tiny", ["train.learning_rate=1"])
    with pytest.raises(ValueError, match="prompts.mode"):
        load_config("tiny", ["prompts.mode=bogus"])
    for name in ("tiny", "synth-cpu", "paper"):
        load_config(name)


def test_epoch_batch_sampler_resumes_mid_epoch_and_ends_on_an_accumulation_boundary():
    sampler = EpochBatchSampler(num_samples=50, batch_size=8, seed=3, multiple_of=4)
    assert sampler.batches_per_epoch == 4  # 6 full batches, rounded down to a multiple of 4
    sampler.set_position(epoch=1)
    full = list(sampler)
    assert all(len(b) == 8 for b in full) and len({i for b in full for i in b}) == 32
    sampler.set_position(epoch=1, start=3)
    assert list(sampler) == full[3:]
    sampler.set_position(epoch=2)
    assert list(sampler) != full


def test_class_balanced_batches_draw_every_label_equally_often_and_reproducibly():
    labels = [0] * 90 + [1] * 10
    assert class_balance_weights(labels, 0.0) is None  # plain shuffling
    weights = class_balance_weights(labels, 1.0)
    sampler = EpochBatchSampler(num_samples=100, batch_size=10, seed=0, weights=weights)
    drawn = []
    for epoch in range(30):
        sampler.set_position(epoch)
        drawn += [labels[i] for batch in sampler for i in batch]
    assert abs(np.mean(drawn) - 0.5) < 0.05  # 10 % of the samples, half of the draws
    sampler.set_position(epoch=3, start=2)
    first = list(sampler)
    sampler.set_position(epoch=3, start=2)
    assert list(sampler) == first and len(first) == 8  # a pure function of (seed, epoch): resumable
    # Within groups (datasets: 3D scans, 4D sequences): labels even out in each, each keeps its share.
    grouped = class_balance_weights([0] * 45 + [1] * 5 + [0] * 10 + [1] * 40, 1.0, [0] * 50 + [1] * 50)
    shares = [grouped[a:b].sum() / grouped.sum() for a, b in ((0, 45), (45, 50), (50, 60), (60, 100))]
    assert shares == pytest.approx([0.25, 0.25, 0.25, 0.25])
    half = class_balance_weights(labels, 0.5)  # partial balance: weights in proportion to count ** -0.5
    assert half[-1] / half[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="weights"):
        EpochBatchSampler(num_samples=100, batch_size=10, seed=0, weights=weights[:50])
    with pytest.raises(ValueError, match="class_balance"):
        load_config("tiny", ["data.class_balance=2"])


def test_fine_tuning_a_checkpoint_starts_from_its_weights(reference, tmp_path):
    """model.init=checkpoint: the run starts from the checkpoint's weights (at lr 0 it ends there too)."""
    out = tmp_path / "finetune"
    run_train(out, "--set", "model.init=checkpoint", "--set", f"model.checkpoint={reference / 'model'}",
              "--set", "train.lr=0", "--set", "train.max_steps=2", "--set", "train.eval_every=2")  # fmt: skip
    start = load_file(str(reference / "model" / "model.safetensors"))
    tuned = load_file(str(out / "model" / "model.safetensors"))
    assert start.keys() == tuned.keys() and all(torch.equal(start[k], tuned[k]) for k in start)
    bad = run_train(tmp_path / "bad", "--set", "model.init=checkpoint", "--set",
                    f"model.checkpoint={reference / 'model'}", "--set", "data.labels=[anger,fear]", expect=1)  # fmt: skip
    assert "label_names" in bad.stderr
    with pytest.raises(ValueError, match="model.checkpoint"):
        load_config("tiny", ["model.init=checkpoint"])


def test_warmup_then_cosine_to_the_floor():
    f = warmup_cosine(warmup=4, total=20, min_ratio=0.1)
    assert [round(f(s), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(20) == pytest.approx(0.1) and f(12) == pytest.approx(0.55)
    assert all(f(s) >= f(s + 1) for s in range(4, 25))


def test_model_selection_on_validation_accuracy_then_nll():
    assert _is_better({"accuracy": 0.5, "nll": 2.0}, {"accuracy": 0.4, "nll": 1.0})
    assert _is_better({"accuracy": 0.5, "nll": 1.0}, {"accuracy": 0.5, "nll": 1.5})
    assert not _is_better({"accuracy": 0.5, "nll": 1.5}, {"accuracy": 0.5, "nll": 1.0})
    # No validation subjects: nothing to choose on, so the latest model is kept.
    assert _is_better({"accuracy": None}, {"accuracy": None})


def test_incomplete_checkpoints_are_never_picked(tmp_path):
    for name, complete in (("step_00000002", True), ("step_00000010", True), ("step_00000012", False)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / TRAINER_STATE).write_text("{}")
    (tmp_path / ".tmp-step_00000014").mkdir()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_00000002", "step_00000010"]


def _prompt_source(mode: str, **prompts) -> PromptSource:
    from affectvlm.testing import tiny_tokenizer

    config = load_config("tiny", [f"prompts.mode={mode}"] + [f"prompts.{k}={v}" for k, v in prompts.items()])
    return PromptSource(config, config["data"]["labels"], config["data"]["views"], tiny_tokenizer(), 96)


def test_prompt_modes_give_the_model_input_shapes():
    meta = [{"gender": "female", "age_group": "30-39", "ethnicity": "WH", "intensity": 2}] * 4
    per_view = _prompt_source("class", num_prompts=3).step_inputs(meta, None, slice(0, 4))
    assert per_view["input_ids"].shape[:3] == (3, 6, 3)  # (V, C, P, L)
    shared = _prompt_source("class", num_prompts=3, per_view=False).step_inputs(meta, None, slice(0, 4))
    assert shared["input_ids"].shape[:2] == (6, 3)  # (C, P, L)
    with_inference = _prompt_source("class", num_prompts=3, per_view=False, include_inference=True)
    assert with_inference.step_inputs(meta, None, slice(0, 4))["input_ids"].shape[:2] == (
        6,
        3 + 8,
    )  # + the bank
    fixed = _prompt_source("fixed").step_inputs(meta, None, slice(0, 4))
    assert fixed["input_ids"].shape[0] == 6  # (C, L)
    sample = _prompt_source("sample").step_inputs(meta, None, slice(0, 4))
    assert sample["sample_input_ids"].shape[:3] == (4, 3, 6)  # (b, V, C, L)
    assert sample["sample_attention_mask"].shape == sample["sample_input_ids"].shape
    assert sample["sample_input_ids"].shape[-1] <= 96


def test_prompt_tokens_are_padded_masked_truncated_and_the_memo_is_bounded(monkeypatch):
    source = _prompt_source("sample")
    texts = ["a happy face.", "a face", "x" * 200, "a happy face."]
    ids, mask = source.tokenize(texts)
    raw = source.tokenizer(texts)["input_ids"]
    assert ids.shape == mask.shape == (4, 96) and ids.dtype == mask.dtype == torch.long
    for row, (tokens, m) in enumerate(zip(raw, mask)):
        n = min(len(tokens), 96)
        assert m.sum() == n and bool(m[:n].all())
        expected = tokens if len(tokens) <= 96 else tokens[:95] + tokens[-1:]  # truncated, EOS kept
        assert ids[row, :n].tolist() == expected
        assert (ids[row, n:] == source.tokenizer.pad_token_id).all()
    short_ids, _ = source.tokenize(texts[:2])  # padded to this call's longest prompt only
    assert short_ids.shape[1] == max(len(t) for t in raw[:2])
    monkeypatch.setattr(PromptSource, "MAX_CACHED", 2)
    again, again_mask = source.tokenize(texts)  # the memo is cleared first: same tokens
    assert torch.equal(again, ids) and torch.equal(again_mask, mask) and len(source._ids) <= 3


def test_sample_prompts_of_a_rank_slice_are_the_rows_of_the_global_draw():
    from affectvlm.testing import tiny_tokenizer

    meta = [
        {"gender": g, "age": 20 + 10 * i, "intensity": 1 + i % 4}
        for i, g in enumerate(["female", "male"] * 3)
    ]
    whole = _prompt_source("sample").step_inputs(meta, None, slice(0, 6))
    rank1 = _prompt_source("sample").step_inputs(meta[3:], meta, slice(3, 6))
    ids_a, mask_a = whole["sample_input_ids"][3:], whole["sample_attention_mask"][3:]
    ids_b, mask_b = rank1["sample_input_ids"], rank1["sample_attention_mask"]
    tok = tiny_tokenizer()
    decode = lambda ids, mask: tok.decode(ids[mask.bool()])  # noqa: E731 - padding lengths may differ
    for a, ma, b, mb in zip(
        ids_a.flatten(0, 2), mask_a.flatten(0, 2), ids_b.flatten(0, 2), mask_b.flatten(0, 2)
    ):
        assert decode(a, ma) == decode(b, mb)


def test_single_frontal_view_augmentation_flips_without_a_mirror_pair():
    config = load_config("tiny", ["data.views=[frontal]"])
    augment = build_augment(config, ["frontal"])
    assert augment.config.mirror_pairs == () and augment.config.flip_mode == "frontal"
    out = augment.train()(torch.rand(4, 1, 3, 16, 16))
    assert out.pixel_values.shape == (4, 1, 3, 16, 16)


def test_toy_views_split_by_subject():
    from affectvlm.data.folds import subject_folds

    ds = ToyViews(["anger", "happiness"], num_subjects=6, image_size=16, intensities=1)
    fold = subject_folds(sorted(set(ds.subjects)), k=3, seed=0, val_fraction=0.25)[0]
    train, val, test = split_dataset(ds, fold)
    assert len(train) + len(val) + len(test) == len(ds)
    assert not {*train.subjects} & {*test.subjects}
    batch = train.__getitems__([0, 1])
    assert batch["views"].shape == (2, 3, 16, 16, 3) and batch["views"].dtype == torch.uint8
    assert torch.equal(batch["views"][0, 2], batch["views"][0, 1].flip(1))  # right = mirrored left


def test_metrics():
    m = classification_metrics(
        [0, 1, 1, 2], [0, 1, 2, 2], ["a", "b", "c"], logits=np.eye(3)[[0, 1, 1, 2]] * 5
    )
    assert m["accuracy"] == 0.75 and m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert m["per_class_f1"]["b"] == pytest.approx(2 / 3) and m["nll"] > 0


def test_launcher_picks_a_free_port_unless_given():
    cmd, _ = build_command(["--multi_gpu", "--num_processes", "8", "train/train.py"])
    port = int(cmd[cmd.index("--main_process_port") + 1])
    assert 0 < port < 65536 and free_port() > 0
    cmd, _ = build_command(["--main_process_port", "1234", "train/train.py"])
    assert cmd.count("--main_process_port") == 1 and "1234" in cmd
    with pytest.raises(SystemExit, match="main_process_port"):
        build_command(["--multi_gpu", "--num_machines", "2", "--machine_rank", "0", "train/train.py"])


def test_a_grey_checkpoint_fine_tuned_on_shade_normal_views_starts_from_its_own_function(tmp_path):
    """Fine-tuning a checkpoint trained on grey "normal" views with a shade_normal cache: the first convolution
    is moved onto the shade channel, so the model reads a scan's shade_normal views as it read its grey ones
    (the normals start unused); the augmentation and the served mirror image then treat the normal channels
    as normals."""
    from affectvlm.scan import normalize_scan, render_views
    from affectvlm.testing import face_mesh

    torch.manual_seed(0)
    config = AffectVLMConfig(clip_config=tiny_clip_config(), vision_backbone="resnet", resnet_config=TINY_RESNET)
    grey_model = AffectVLMModel(config).eval()
    processor = tiny_processor(image_size=48)
    processor.render_settings = {"mode": "normal", "size": 48}
    grey_model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    data = {"labels": config.label_names, "views": config.view_names}
    model, proc = _from_checkpoint(str(tmp_path), data, {"mode": "shade_normal", "size": 48})
    model.eval()
    assert proc.render_settings["mode"] == "shade_normal"
    assert model.vision_resnet.embedder.embedder.convolution.weight[:, 1:].abs().max() == 0

    face = normalize_scan(face_mesh("happiness").replace(uv=None))
    modes = ("normal", "shade_normal")
    grey, both = (processor.normalize_views(render_views(face, size=48, mode=m)) for m in modes)
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        want = grey_model.get_view_embeddings(grey, mask)
        got, unconverted = (m.get_view_embeddings(both, mask) for m in (model, grey_model))
    # Without the conversion the same views read otherwise; with it, as the grey ones up to the image border
    # (0.11 x the unconverted distance here, at 48 px; 0.53 x without the batch norm's constant).
    assert (got - want).norm() < 0.2 * (unconverted - want).norm()

    ip = proc.image_processor
    assert mirror_negate(proc, "shade_normal") == {"channel": 1, "mean": list(ip.image_mean), "std": list(ip.image_std)}
    assert mirror_negate(proc, "normal") is None
    augment = build_augment(load_config("tiny"), list(config.view_names), "shade_normal")
    assert augment.config.normal_channels == (1, 2)
    assert build_augment(load_config("tiny"), list(config.view_names), "normal").config.normal_channels is None


def test_fine_tuning_a_checkpoint_with_a_companion_says_the_companion_is_not_carried_over(tmp_path):
    """A fine-tune of a checkpoint that serves with a companion saves the main model only: the run warns, naming
    the companion and the tool that fits one, rather than leaving the user to find the answers changed."""
    import json
    import warnings

    from affectvlm.companion import FILENAME

    config = AffectVLMConfig(clip_config=tiny_clip_config())
    AffectVLMModel(config).save_pretrained(tmp_path)
    tiny_processor(image_size=48).save_pretrained(tmp_path)
    data = {"labels": config.label_names, "views": config.view_names}
    with warnings.catch_warnings():  # no companion: no warning
        warnings.simplefilter("error", UserWarning)
        _from_checkpoint(str(tmp_path), data, None)
    (tmp_path / FILENAME).write_text(json.dumps({"folder": "normal_maps", "weight": 0.45}))
    with pytest.warns(UserWarning, match=r"normal_maps/.*main model only.*train/companion.py --fit"):
        _from_checkpoint(str(tmp_path), data, None)
