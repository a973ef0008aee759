"""Split by doc_id: stable hash buckets, leakage detection, the quality report."""

from __future__ import annotations

import copy

import pytest
from conftest import synthetic_records

from koraft.errors import KoraftError
from koraft.params import SPLITS, check_raft, check_split
from koraft.quality import QualityReport, split_of_row
from koraft.raft import build_raft
from koraft.split import assign_split

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def test_assignment_is_stable_when_data_grows():
    before = {f"doc-{i}": assign_split(f"doc-{i}", RATIOS, 42) for i in range(1000)}
    after = {f"doc-{i}": assign_split(f"doc-{i}", RATIOS, 42) for i in range(5000)}
    assert all(after[d] == s for d, s in before.items())
    shares = {name: sum(s == name for s in after.values()) / len(after) for name in SPLITS}
    assert all(abs(shares[n] - RATIOS[n]) < 0.02 for n in SPLITS), shares
    assert any(assign_split(f"doc-{i}", RATIOS, 43) != s for i, s in enumerate(before.values()))


def split_and_report(rows, split, path="raft.jsonl"):
    """What the split stage does with each row: check its split, group it, feed the report."""
    by_split, report = {name: [] for name in SPLITS}, QualityReport()
    for number, row in enumerate(rows, start=1):
        name = split_of_row(row, number, split, path)
        by_split[name].append(row)
        report.add(row, name)
    return by_split, report


@pytest.fixture(scope="module")
def raft_rows(tmp_path_factory, params, validate_params):
    records = synthetic_records(tmp_path_factory.mktemp("split"), validate_params, num_docs=120)
    raft = {**check_raft(params), "distractor_source": "random"}
    rows, _ = build_raft(records, raft, check_split(params), seed=5)
    return rows


def test_no_document_in_two_splits(raft_rows, split_params):
    by_split, quality = split_and_report(raft_rows, split_params)
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
    by_split, _ = split_and_report(rows, split_params)
    victim, test_row = by_split["train"][0], by_split["test"][0]
    victim["distractor_doc_ids"][0] = test_row["doc_id"]
    victim["documents"].append(test_row["documents"][0])
    _, quality = split_and_report(rows, split_params)
    counts = quality.leakage()
    assert counts["distractor_docs_shared"] == 1 and counts["document_texts_shared"] >= 1


def test_rows_built_with_other_split_params_are_refused(raft_rows, split_params):
    changed = {**split_params, "seed": split_params["seed"] + 1}
    with pytest.raises(KoraftError, match="rerun the raft stage"):
        split_and_report(raft_rows, changed, "data/raft/raft.jsonl")
