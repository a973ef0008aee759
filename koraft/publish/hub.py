"""Upload a trained folder to the Hugging Face Hub with its model card, evaluation included.

    HF_TOKEN=... python -m koraft.publish.hub models/train/adapter --repo-id you/exaone-raft-ko [--private]
    python -m koraft.publish.hub models/distill/student --repo-id you/student --dry-run staged/

The folder is staged in a temporary copy (without training_args.bin, a pickle of this machine's
settings) whose README.md is the stage's card re-rendered with metrics/eval.json: the fine-tuned
variant for models/train/adapter, the distilled one for a student. The token is read from the
environment (HF_TOKEN) and handed to huggingface_hub only: never printed, never written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from koraft.core.errors import KoraftError
from koraft.core.hashing import file_sha256
from koraft.evaluation.labels import COMPARISONS
from koraft.models.card import render_card
from koraft.models.manifest import read_manifest
from koraft.training.config import load_distill, load_train

SKIPPED = {"training_args.bin"}


def evaluation_for(folder: Path, eval_path: Path) -> dict[str, Any] | None:
    """The evaluate stage's numbers for this folder's variant, with its bootstrap interval against its base."""
    if not eval_path.exists():
        return None
    metrics = json.loads(eval_path.read_text(encoding="utf-8"))
    variant = "distilled" if "distilled_from" in read_manifest(folder) else "finetuned"
    if variant not in metrics:
        return None
    label = next(label for label, (_, improved) in COMPARISONS.items() if improved == variant)
    comparison = metrics.get("comparisons", {}).get(label, {}).get("f1")
    return {"metrics": metrics[variant], "samples": metrics["scoring"]["samples"],
            "comparison": {variant: comparison} if comparison else {}}


def stage_folder(folder: Path, target: Path, params_path: Path = Path("params.yaml"),
                 eval_path: Path = Path("metrics/eval.json"), data_path: Path = Path("data/raft/train.jsonl")) -> Path:
    """Copy `folder` to `target` with the card re-rendered; returns target."""
    manifest = read_manifest(folder)
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    settings = load_distill(params).training if "distilled_from" in manifest else load_train(params)
    stage_metrics = Path("metrics/distill.json" if "distilled_from" in manifest else "metrics/train.json")
    training = json.loads(stage_metrics.read_text(encoding="utf-8")) if stage_metrics.exists() else {}
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name not in SKIPPED:
            shutil.copy2(path, target / path.name)
    card = render_card(folder, training, settings, file_sha256(data_path), evaluation_for(folder, eval_path))
    (target / "README.md").write_text(card, encoding="utf-8")
    return target


def push(folder: Path, repo_id: str, private: bool) -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise KoraftError("hub: set HF_TOKEN in the environment (a write token from huggingface.co/settings/tokens); "
                          "koraft reads it from there only")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as staging:
        stage_folder(folder, Path(staging) / "upload")
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(Path(staging) / "upload"),
                                 commit_message=f"koraft: upload {folder}")
    return str(info)


def main() -> None:
    from koraft.core.cli import run_stage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="models/train/adapter or models/distill/student")
    parser.add_argument("--repo-id", help="owner/name on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", type=Path, metavar="DIR", help="stage the upload in DIR, upload nothing")
    args = parser.parse_args()

    def upload() -> None:
        if args.dry_run:
            print(f"hub: staged {stage_folder(args.folder, args.dry_run)} (nothing uploaded)")
        elif not args.repo_id:
            raise KoraftError("hub: --repo-id owner/name is required (or --dry-run DIR)")
        else:
            print(f"hub: uploaded {args.folder} to {args.repo_id}: {push(args.folder, args.repo_id, args.private)}")

    run_stage("hub", upload)


if __name__ == "__main__":
    main()
