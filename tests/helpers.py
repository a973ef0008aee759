"""What several test files share: the repository root, params edits, small data, short training runs,
and throw-away copies of the project run through DVC for real. No test file imports another."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import yaml
from transformers import TrainerCallback

from koraft.core.jsonl import read_jsonl
from koraft.data.config import raft_settings, split_settings
from koraft.data.neardup import DocumentGrouper
from koraft.data.quality import QualityReport
from koraft.data.raft import raft_metrics, write_raft
from koraft.data.readers import InputSpec
from koraft.data.split import SPLITS, write_splits
from koraft.data.synth import synthetic_corpus
from koraft.data.validate import validate_to_files
from koraft.models.pretrain import PretrainSpec
from koraft.training.config import distill_section, train_section
from koraft.training.distill import DistillPaths
from koraft.training.train import TrainPaths

ROOT = Path(__file__).resolve().parent.parent
# The base stage's pretraining, shortened to seconds: tests need the code path, not a capable model.
QUICK_PRETRAINING = PretrainSpec(documents=160, epochs=1.0, block_size=256, batch_size=8, log_every=1000)
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "koraft", "configs", "data/raw", "data/documents",
                 "data/predictions", "data/benchmark", ".dvc/config", ".dvcignore"]


def set_dotted(params: dict, dotted_key: str, value) -> None:
    """Set params["a"]["b"][0]["c"] from "a.b.0.c" (numeric parts index lists)."""
    *parents, last = dotted_key.split(".")
    node = params
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


class Validated(NamedTuple):
    records: list[dict]
    rejects: list[dict]
    metrics: dict


def validate_inputs(specs: list[InputSpec], lengths: dict, near: dict, unverified_quotes: str = "reject") -> Validated:
    """The validate stage's function on small inputs, its two output files read back into memory."""
    with tempfile.TemporaryDirectory(prefix="koraft-validate-") as scratch:
        records, rejects = Path(scratch) / "records.jsonl", Path(scratch) / "rejects.jsonl"
        metrics = validate_to_files(specs, lengths, near, records, rejects, unverified_quotes)
        return Validated(list(read_jsonl(records)), list(read_jsonl(rejects)), metrics)


def synthetic_records(tmp_path: Path, validate: dict, num_docs: int, seed: int = 0) -> list[dict]:
    """Validated records (with doc ids) for a synthetic corpus of num_docs documents."""
    rows = [qa.as_record() for _, qas in synthetic_corpus(num_docs, seed=seed) for qa in qas]
    path = write_jsonl(tmp_path / f"synthetic-{num_docs}-{seed}.jsonl", rows)
    return validate_inputs([InputSpec(str(path), "jsonl")], validate["lengths"], validate["near_duplicates"]).records


def build_raft(records: list[dict], raft: dict, split: dict, seed: int) -> tuple[list[dict], dict]:
    """The split and raft stages' functions on records in memory: (RAFT rows of every split, raft metrics)."""
    with tempfile.TemporaryDirectory(prefix="koraft-raft-") as scratch:
        root = Path(scratch)
        write_jsonl(root / "records.jsonl", records)
        write_splits(root / "records.jsonl", {name: root / "split" / f"{name}.jsonl" for name in SPLITS},
                     split_settings(split))
        quality, settings = QualityReport(), raft_settings(raft, seed)
        counts = {name: write_raft(root / "split" / f"{name}.jsonl", root / "raft" / f"{name}.jsonl", settings,
                                   name, quality) for name in SPLITS}
        rows = [row for name in SPLITS for row in read_jsonl(root / "raft" / f"{name}.jsonl")]
        position = {record["id"]: i for i, record in enumerate(records)}
        return sorted(rows, key=lambda row: position[row["id"]]), raft_metrics(counts, quality, settings)


def quick(params: dict, method: str = "lora", steps: int = 6, **args) -> dict:
    """The project's train params, shortened to a few steps."""
    quick_params = copy.deepcopy(train_section(params))
    quick_params["method"] = method
    quick_params["args"].update({"max_steps": steps, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
                                 "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
                                 "disable_tqdm": True, "learning_rate": 1.0e-3, **args})
    return quick_params


def model_params(params: dict, preset: str = "tiny-s") -> dict:
    return {**params["model"], "preset": preset}


def paths(root, tiny_models) -> TrainPaths:
    return TrainPaths(adapter=root / "adapter", checkpoints=root / "checkpoints", plots=root / "plots",
                      tiny_models=tiny_models)


class Crash(TrainerCallback):
    """Stops the run right after a checkpoint is written, as a kill at that moment would."""

    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt(f"killed after step {state.global_step}")


def distill_params(params: dict, steps: int = 6, mode: str = "offline", **loss) -> dict:
    """The project's distill params, shortened to a few steps."""
    result = copy.deepcopy(distill_section(params))
    result["method"] = "lora"
    result["student"] = {"preset": "tiny-s"}  # the tests' student (the shipped params name Gemma 3 270M's)
    result["teacher"]["mode"] = mode
    result["loss"].update(loss)
    result["args"].update({"max_steps": steps, "learning_rate": 1.0e-3, "logging_steps": 1, "eval_steps": 2,
                           "save_steps": 2,
                           "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4})
    return result


def where(root, teacher, tiny_models) -> DistillPaths:
    return DistillPaths(teacher=teacher, cache=root / "cache", student=TrainPaths(
        adapter=root / "student", checkpoints=root / "checkpoints", plots=root / "plots", tiny_models=tiny_models))


def env() -> dict:
    # `dvc` and the stages' `python` must be this interpreter's, whatever PATH the caller had.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


def make_project(path: Path) -> Path:
    """A fresh git + DVC repository holding the project's pipeline files, as a clone would."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source, target = ROOT / name, path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    (path / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    run(["git", "init", "-q"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], path)
    return path


def edit_params(project: Path, change) -> None:
    """Apply change(params) to the project's params.yaml."""
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")


def set_param(project: Path, dotted: str, value) -> None:
    edit_params(project, lambda params: set_dotted(params, dotted, value))


def commit_short_runs(project: Path, *sections: str, served: bool = True) -> None:
    """The tiny presets (tiny-m, distilled offline into tiny-s) with seconds of pretraining, three training steps
    for each section, a fifth of the sample (its CSV and gorilla files), one quantized GGUF (none, and no served
    variant, with served=False), and short answers with fewer bootstrap resamples for the evaluation, committed
    so `dvc exp run` starts from them."""
    inputs = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))["validate"]["inputs"]
    set_param(project, "validate.inputs", [spec for spec in inputs if spec["format"] in ("csv", "gorilla")])
    set_param(project, "model.preset", "tiny-m")
    set_param(project, "distill.student.preset", "tiny-s")
    set_param(project, "distill.teacher.mode", "offline")
    set_param(project, "export.gguf.outtype", "f32")
    for section in sections:
        # 3.0e-3: the tiny models' rate. At the shipped 1.0e-3 (Gemma 3 270M's), three steps leave their greedy
        # answers unchanged, and two experiments could not differ in any eval metric.
        for key, value in {"max_steps": 3, "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
                           "learning_rate": 3.0e-3}.items():
            set_param(project, f"{section}.args.{key}", value)
    for preset in ("tiny-s", "tiny-m"):
        set_param(project, f"base.pretraining.{preset}", {key: getattr(QUICK_PRETRAINING, key) for key in
                                                         ("documents", "epochs", "block_size", "batch_size")})
    # prefer is on the main path: two steps, and a few on-policy answers
    for key, value in {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 3.0e-3}.items():
        set_param(project, f"prefer.args.{key}", value)
    set_param(project, "prefer.on_policy.records", 8)
    set_param(project, "prefer.on_policy.max_new_tokens", 16)
    set_param(project, "eval.max_new_tokens", 16)
    set_param(project, "export.gguf.quantizations", ["q8_0"] if served else [])  # the code path, not the set
    set_param(project, "eval.served.gguf", ["f32", "q8_0"] if served else ["f32"])
    set_param(project, "export.ollama.gguf", "q8_0" if served else "f32")
    set_param(project, "eval.variants.served", served)
    set_param(project, "eval.bootstrap.resamples", 200)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "short runs"], project)


def stage_command(name: str, project: Path) -> list[str]:
    """One stage's cmd exactly as dvc.yaml writes it (its paths are given there only), with this interpreter."""
    command = shlex.split(yaml.safe_load((project / "dvc.yaml").read_text(encoding="utf-8"))["stages"][name]["cmd"])
    return [sys.executable, *command[1:]] if command[0] == "python" else command


def stage(name: str, project: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run one stage as `dvc repro` would, without DVC."""
    return run(stage_command(name, project), project, check)

def group_documents(
    texts: Iterable[str], threshold: float, shingle_size: int, num_perm: int, bands: int
) -> dict[str, str]:
    """Map each distinct text to its near-duplicate group id, as validate groups documents."""
    grouper = DocumentGrouper(threshold, shingle_size, num_perm, bands)
    keys = {text: grouper.add(text) for text in texts}
    ids = grouper.group_ids()
    return {text: ids[key] for text, key in keys.items()}
