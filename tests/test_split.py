"""Split by doc_id: stable hash buckets, one file per split, and the raft rows' leakage report."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import build_raft, synthetic_records

from koraft.core.errors import KoraftError
from koraft.core.jsonl import read_jsonl
from koraft.data.config import load_raft, load_split, split_settings
from koraft.data.quality import QualityReport
from koraft.data.split import SPLITS, assign_split, write_splits

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_assignment_is_stable_when_data_grows():
    before = {f"doc-{i}": assign_split(f"doc-{i}", RATIOS, 42) for i in range(1000)}
    after = {f"doc-{i}": assign_split(f"doc-{i}", RATIOS, 42) for i in range(5000)}
    assert all(after[d] == s for d, s in before.items())
    shares = {name: sum(s == name for s in after.values()) / len(after) for name in SPLITS}
    assert all(abs(shares[n] - RATIOS[n]) < 0.02 for n in SPLITS), shares
    assert any(assign_split(f"doc-{i}", RATIOS, 43) != s for i, s in enumerate(before.values()))


def split_and_report(rows):
    """What the raft stage does with each of its rows: group it by split, feed the report."""
    by_split, report = {name: [] for name in SPLITS}, QualityReport()
    for row in rows:
        by_split[row["split"]].append(row)
        report.add(row, row["split"])
    return by_split, report


@pytest.fixture(scope="module")
def raft_rows(tmp_path_factory, params, validate_params):
    records = synthetic_records(tmp_path_factory.mktemp("split"), validate_params, num_docs=120)
    load_raft(params), load_split(params)
    raft = {**params["raft"], "distractor_source": "random"}
    rows, _ = build_raft(records, raft, params["split"], seed=5)
    return rows


def test_no_document_in_two_splits(raft_rows, split_params):
    by_split, quality = split_and_report(raft_rows)
    golden = [{r["doc_id"] for r in by_split[name]} for name in SPLITS]
    assert not (golden[0] & golden[1] or golden[0] & golden[2] or golden[1] & golden[2])
    report = quality.report()
    assert report["leakage"] == {"golden_docs_shared": 0, "distractor_docs_shared": 0, "document_texts_shared": 0}
    assert sum(report["records"].values()) == len(raft_rows)
    for name in SPLITS:
        stats = report["lengths"][name]["prompt"]
        assert 0 < stats["mean"] <= stats["p95"] <= stats["max"]


def test_planted_leak_is_counted(raft_rows, split_params):
    rows = copy.deepcopy(raft_rows)
    by_split, _ = split_and_report(rows)
    victim, test_row = by_split["train"][0], by_split["test"][0]
    victim["distractor_doc_ids"][0] = test_row["doc_id"]
    victim["documents"].append(test_row["documents"][0])
    _, quality = split_and_report(rows)
    counts = quality.leakage()
    assert counts["distractor_docs_shared"] == 1 and counts["document_texts_shared"] >= 1


def test_split_files_hold_each_document_in_its_bucket_and_count_every_record(tmp_path, validate_params, split_params):
    records = synthetic_records(tmp_path, validate_params, num_docs=60)
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    outputs = {name: tmp_path / "split" / f"{name}.jsonl" for name in SPLITS}
    report = write_splits(tmp_path / "records.jsonl", outputs, split_settings(split_params))
    written = {name: list(read_jsonl(path)) for name, path in outputs.items()}
    assert sum(report["records"].values()) == len(records) == sum(len(rows) for rows in written.values())
    for name, rows in written.items():
        assert all(assign_split(r["doc_id"], split_params["ratios"], split_params["salt"]) == name for r in rows)
        assert report["documents"][name] == len({r["doc_id"] for r in rows})
    assert [r["id"] for r in written["train"]] == [r["id"] for r in records if r in written["train"]]  # order kept
    assert report["leakage"] == {"golden_docs_shared": 0, "document_texts_shared": 0}


def test_nothing_to_split_is_a_clear_error(tmp_path, split_params):
    (tmp_path / "records.jsonl").write_text("")
    with pytest.raises(KoraftError, match="no records to split"):
        write_splits(tmp_path / "records.jsonl", {name: tmp_path / f"{name}.jsonl" for name in SPLITS},
                     split_settings(split_params))
