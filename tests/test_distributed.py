"""Training across processes: accelerate launch with the repo's DDP config, two CPU processes on gloo.

The two-process run must reach the single-process loss with the same global batch, and only rank 0
may write under models/ or metrics/: an audit hook (sitecustomize) records every file each process
opens for writing, creates, renames or removes.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from helpers import ROOT, stage_command, write_jsonl
from safetensors.torch import load_file

from koraft.core.errors import ParamError
from koraft.models.loading import load_model, sharded_quantization
from koraft.models.presets import resolve_model
from koraft.training.launch import accelerate_settings, check_launcher, launch_command

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

AUDIT_HOOK = '''
import os, sys

_name = f"{os.environ.get('RANK', 'launcher')}-{os.getpid()}.log"
_log = open(os.path.join(os.environ["KORAFT_AUDIT_DIR"], _name), "a")
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGES = {"os.mkdir", "os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "shutil.copyfile", "shutil.move"}

def _path(value):
    return os.path.abspath(os.fsdecode(value)) if isinstance(value, (str, bytes, os.PathLike)) else None

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE)
        paths = [_path(path)] if writes else []
    elif event in _CHANGES:
        paths = [_path(value) for value in args[:2]]
    else:
        return
    for path in paths:
        if path:
            _log.write(f"{event} {path}\\n")
            _log.flush()

sys.addaudithook(_hook)
'''


def stage_project(root: Path, stage: str, raft_rows: dict, tiny_models: Path, params: dict, launcher: str,
                  per_device_batch: int, teacher: Path | None = None) -> Path:
    """A scratch project holding what the train (or distill) stage reads, configured for a short full run."""
    root.mkdir(parents=True)
    for name in ("stages", "configs", "koraft"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "dvc.yaml", root / "dvc.yaml")
    (root / "data/raft").mkdir(parents=True)
    # 64 samples fill the 4 steps' 32 packed bins within one epoch (32 samples with 2 distractors packed into 17
    # to 23 bins). An epoch's last, partial batch would not compare: accelerate evens it across the ranks by
    # repeating samples.
    write_jsonl(root / "data/raft/train.jsonl", raft_rows["train"][:64])
    write_jsonl(root / "data/raft/val.jsonl", raft_rows["val"][:8])
    (root / "models/train").mkdir(parents=True)
    (root / "models/base").symlink_to(tiny_models)
    if teacher is not None:
        (root / "models/train/adapter").symlink_to(teacher)
    settings = copy.deepcopy(params)
    settings["model"]["preset"] = "tiny-s"
    settings["distill"]["student"] = {"preset": "tiny-s"}  # the shipped params distill Gemma 3 270M
    section = settings[stage]
    section["method"] = "full"  # no LoRA dropout: both runs draw no random numbers once the data order is fixed
    section["launcher"] = launcher
    section.setdefault("accelerate", {})["num_processes"] = 2  # distill: merged onto train's
    section.setdefault("args", {}).update(
        max_steps=4, logging_steps=1, eval_steps=2, save_steps=2, learning_rate=1.0e-3,
        per_device_train_batch_size=per_device_batch, per_device_eval_batch_size=per_device_batch)
    if stage == "distill":
        section["teacher"]["mode"] = "online"  # the teacher runs in every process; no cache stage needed
    (root / "params.yaml").write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return root


def run_stage(project: Path, stage: str, audit: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    if audit is not None:
        audit.mkdir()
        (audit / "sitecustomize.py").write_text(AUDIT_HOOK)
        env.update(PYTHONPATH=str(audit), KORAFT_AUDIT_DIR=str(audit))
    result = subprocess.run(stage_command(stage, project), cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def losses(project: Path, stage: str) -> list[float]:
    lines = (project / f"metrics/{stage}/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[1]) for line in lines]


def assert_same_weights(one: Path, two: Path) -> None:
    weights_one, weights_two = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-4, atol=1e-5)


def written(audit: Path, rank: str) -> list[str]:
    logs = sorted(audit.glob(f"{rank}-*.log"))
    assert logs, f"no audit log for rank {rank}: the hook did not run there"
    return [line.split(" ", 1)[1] for log in logs for line in log.read_text().splitlines()]


def test_two_processes_match_one_process_with_the_same_global_batch_and_only_rank_0_writes(
        params, raft_rows, tiny_models, tmp_path):
    single = stage_project(tmp_path / "single", "train", raft_rows, tiny_models, params, "single", per_device_batch=8)
    run_stage(single, "train")
    ddp = stage_project(tmp_path / "ddp", "train", raft_rows, tiny_models, params, "accelerate", per_device_batch=4)
    result = run_stage(ddp, "train", audit=tmp_path / "audit")

    assert "train: ddp via accelerate launch (2 processes" in result.stdout
    assert result.stdout.count("train: 4 steps") == 1  # rank 0 alone prints the summary
    # Same global batch of 8 (2 x 4), same data order: the same loss at every step, and the same weights.
    one, two = losses(single, "train"), losses(ddp, "train")
    assert len(one) == len(two) == 4 and one[-1] < one[0]
    assert two == pytest.approx(one, rel=1e-4)
    assert_same_weights(single / "models/train/adapter", ddp / "models/train/adapter")
    metrics = json.loads((ddp / "metrics/train.json").read_text())
    assert metrics["steps"] == 4 and metrics["samples"]["train"]["records"] == 64
    assert not (ddp / "checkpoints/train").exists()

    outputs = (str(ddp / "models"), str(ddp / "metrics"))
    rank0, rank1 = written(tmp_path / "audit", "0"), written(tmp_path / "audit", "1")
    assert any(path.startswith(str(ddp / "models/train/adapter")) for path in rank0)
    assert str(ddp / "metrics/train.json") in rank0
    assert [path for path in rank1 if path.startswith(outputs)] == []
    # Rank 1 did write: its own RNG state into the checkpoint scratch folder, outside models/.
    assert any(path.startswith(str(ddp / "checkpoints/train")) for path in rank1)


def test_distillation_in_two_processes_matches_one_process(params, raft_rows, tiny_models, teacher_adapter,
                                                           tmp_path):
    single = stage_project(tmp_path / "single", "distill", raft_rows, tiny_models, params, "single",
                           per_device_batch=8, teacher=teacher_adapter)
    run_stage(single, "distill")
    ddp = stage_project(tmp_path / "ddp", "distill", raft_rows, tiny_models, params, "accelerate",
                        per_device_batch=4, teacher=teacher_adapter)
    result = run_stage(ddp, "distill", audit=tmp_path / "audit")

    assert result.stdout.count("distill: ") == 2  # the launcher's line, then rank 0's summary
    assert losses(ddp, "distill") == pytest.approx(losses(single, "distill"), rel=1e-4)
    assert_same_weights(single / "models/distill/student", ddp / "models/distill/student")
    one, two = (json.loads((project / "metrics/distill.json").read_text()) for project in (single, ddp))
    assert two["loss"]["train_final"] == pytest.approx(one["loss"]["train_final"], rel=1e-3)
    assert two["agreement"] == one["agreement"]
    rank1 = written(tmp_path / "audit", "1")
    assert [path for path in rank1 if path.startswith((str(ddp / "models"), str(ddp / "metrics")))] == []


def test_every_accelerate_config_in_the_repo_loads_and_names_its_engine():
    configs = sorted((ROOT / "configs/accelerate").glob("*.yaml"))
    assert [path.stem for path in configs] == ["ddp", "fsdp", "zero2", "zero3"]
    engines = {}
    for path in configs:
        config = load_config_from_file(str(path))  # accelerate's own parser: unknown keys are errors
        engines[path.stem] = accelerate_settings({"accelerate": {"config": str(path)}}, "train")["engine"]
        assert config.num_machines == 1 and config.use_cpu is False
    assert engines == {"ddp": "ddp", "fsdp": "fsdp", "zero2": "deepspeed", "zero3": "deepspeed"}
    fsdp = load_config_from_file(str(ROOT / "configs/accelerate/fsdp.yaml")).fsdp_config
    # The FSDP-QLoRA recipe: no original parameters, weights loaded once and broadcast.
    assert fsdp["fsdp_use_orig_params"] is False and fsdp["fsdp_cpu_ram_efficient_loading"] is True
    assert fsdp["fsdp_sync_module_states"] is True
    zero3 = load_config_from_file(str(ROOT / "configs/accelerate/zero3.yaml")).deepspeed_config
    assert zero3["zero_stage"] == 3 and zero3["zero3_save_16bit_model"] is True


def test_multi_node_topology_comes_from_params_and_the_environment_overrides_it(monkeypatch):
    settings = {"launcher": "accelerate", "accelerate": {
        "config": str(ROOT / "configs/accelerate/fsdp.yaml"), "num_processes": 16, "num_machines": 2,
        "machine_rank": 0, "main_process_ip": "10.0.0.1", "main_process_port": 29500}}
    monkeypatch.setenv("KORAFT_MACHINE_RANK", "1")
    launch = accelerate_settings(settings, "train")
    command = launch_command(launch, "stages.train", ["--train", "data/raft/train.jsonl"])
    assert command[1:] == ["-m", "accelerate.commands.launch", "--config_file", settings["accelerate"]["config"],
                           "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                           "--main_process_ip", "10.0.0.1", "--main_process_port", "29500",
                           "--module", "stages.train", "--train", "data/raft/train.jsonl"]

    monkeypatch.setenv("KORAFT_MACHINE_RANK", "2")
    with pytest.raises(ParamError, match=r"train\.accelerate\.machine_rank: must be in \[0, 1\], got 2"):
        accelerate_settings(settings, "train")
    monkeypatch.delenv("KORAFT_MACHINE_RANK")
    no_address = copy.deepcopy(settings)
    no_address["accelerate"]["main_process_ip"] = None
    with pytest.raises(ParamError, match="main_process_ip: 2 machines need the address of machine rank 0"):
        accelerate_settings(no_address, "train")


@pytest.mark.parametrize("settings, message", [
    ({"launcher": "torchrun"}, "train.launcher: must be one of single, accelerate, got 'torchrun'"),
    ({"launcher": "accelerate"}, "train.accelerate: section is missing"),
    ({"launcher": "accelerate", "accelerate": {"config": "configs/accelerate/nope.yaml"}},
     "train.accelerate.config: configs/accelerate/nope.yaml: file not found"),
    ({"launcher": "accelerate", "accelerate": {"config": "configs/accelerate/ddp.yaml", "gpus": 2}},
     r"train.accelerate: unknown keys \['gpus'\]"),
    ({"launcher": "accelerate", "accelerate": {"config": "configs/accelerate/ddp.yaml", "num_processes": "two"}},
     "train.accelerate.num_processes: must be an integer, got 'two'"),
])
def test_bad_launcher_settings_name_the_key(settings, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ParamError, match=message):
        check_launcher(settings, "train")


def test_the_stage_refuses_a_gpu_only_engine_on_cpu_in_one_line(params, raft_rows, tiny_models, tmp_path):
    project = stage_project(tmp_path / "fsdp", "train", raft_rows, tiny_models, params, "accelerate",
                            per_device_batch=4)
    settings = yaml.safe_load((project / "params.yaml").read_text())
    settings["train"]["accelerate"]["config"] = "configs/accelerate/fsdp.yaml"
    (project / "params.yaml").write_text(yaml.safe_dump(settings, allow_unicode=True))
    result = subprocess.run(stage_command("train", project), cwd=project, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "train: error: params.yaml: train.accelerate.config: configs/accelerate/fsdp.yaml runs fsdp, which needs "
        "GPUs; on CPU use configs/accelerate/ddp.yaml (gloo)")


def test_qlora_under_fsdp_stores_4_bit_weights_in_the_model_dtype(monkeypatch, tiny_models):
    quantization = {"bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    assert sharded_quantization(quantization, "float32", "train") is quantization  # one process: uint8 storage
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert sharded_quantization(quantization, "float32", "train")["bnb_4bit_quant_storage"] == "float32"
    with pytest.raises(ParamError, match="train.quantization.bnb_4bit_compute_dtype: must equal the model dtype "
                                         r"\(bfloat16\) under fsdp"):
        sharded_quantization(quantization, "bfloat16", "train")
    with pytest.raises(ParamError, match="bnb_4bit_quant_storage: must equal the model dtype"):
        sharded_quantization({**quantization, "bnb_4bit_quant_storage": "float16"}, "float32", "train")

    # Loaded for real: the packed 4-bit weights are float32 tensors that FSDP can shard with the rest.
    resolved = resolve_model({"preset": "tiny-s"}, tiny_models)
    model = load_model(resolved, quantization)
    packed = model.model.layers[0].self_attn.q_proj.weight
    assert type(packed).__name__ == "Params4bit" and packed.dtype == torch.float32
    assert packed.quant_state is not None
