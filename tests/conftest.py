"""Shared fixtures: the project's params, small raw files written to tmp_path, synthetic corpora."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, build_raft, synthetic_records

from koraft.core.config import load_params
from koraft.data.config import load_raft, load_split, load_validate
from koraft.training.config import train_settings


@pytest.fixture(scope="session")
def params() -> dict:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def validate_params(params):
    load_validate(params)  # checked: the section itself is what the tests vary
    return params["validate"]


@pytest.fixture
def raft_params(params):
    load_raft(params)
    return dict(params["raft"])


@pytest.fixture
def split_params(params):
    load_split(params)
    return dict(params["split"])


@pytest.fixture(scope="session")
def corpus_records(tmp_path_factory, validate_params) -> list[dict]:
    """The validated records of a small synthetic corpus."""
    return synthetic_records(tmp_path_factory.mktemp("raft-rows"), validate_params, num_docs=80, seed=3)


@pytest.fixture(scope="session")
def raft_rows(corpus_records, params) -> dict[str, list[dict]]:
    """RAFT rows of a small synthetic corpus (random distractors), grouped by split."""
    raft = {**params["raft"], "distractor_source": "random"}
    rows, _ = build_raft(corpus_records, raft, params["split"], seed=7)
    return {name: [row for row in rows if row["split"] == name] for name in ("train", "val", "test")}


@pytest.fixture(scope="session")
def split_records(corpus_records, raft_rows) -> dict[str, list[dict]]:
    """The split stage's records of that corpus (what data/split/*.jsonl holds), grouped by split."""
    return {name: [record for record in corpus_records if record["id"] in {row["id"] for row in rows}]
            for name, rows in raft_rows.items()}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """models/base as the base stage writes it (with a few seconds of pretraining), built once per session."""
    from helpers import QUICK_PRETRAINING

    from koraft.models.tiny import TINY_SPECS, build_tiny_model

    root = tmp_path_factory.mktemp("base")
    for name in TINY_SPECS:
        build_tiny_model(name, root / name, QUICK_PRETRAINING)
    return root


@pytest.fixture(scope="session")
def teacher_adapter(tmp_path_factory, params, raft_rows, tiny_models) -> Path:
    """tiny-m fully fine-tuned by the train stage's code until its distributions are peaked: the teacher."""
    from helpers import model_params, paths, quick

    from koraft.training.train import train

    root = tmp_path_factory.mktemp("teacher")
    train(raft_rows["train"][:16], raft_rows["val"][:8], train_settings(model_params(params, "tiny-m"),
          # Padded: in the packed run's batch order (same seed) the teacher plateaus and stays flat (packing itself:
          # tests/test_packing.py). 80 steps at 2e-3: with the tokenizer's RAFT markers (2026-12-03), 30 at 3e-3 left
          # a teacher the student never agreed with (top-1 agreement 0.20 -> 0.0).
          {**quick(params, "full", steps=80, learning_rate=2.0e-3), "packing": False}), paths(root, tiny_models))
    return root / "adapter"
