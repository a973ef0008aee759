"""koraft's own harness task, defined in Python so it needs no network and no particular working directory.

`koraft_ko_paraphrase`: the 40 sentences of koraft/evaluation/data/korean_pairs.jsonl, written for the
project, each asked against its paraphrase (예) and against an unrelated sentence on the same topic
(아니오): 80 examples of Korean paraphrase identification, in the format of KoBEST's yes/no tasks.
"""

from __future__ import annotations

from typing import Any

from koraft.evaluation.validity import PAIRS_FILE


def paraphrase_docs(dataset):
    """Two examples per sentence: with its paraphrase (label 1, 예) and with the unrelated one (label 0)."""
    from datasets import Dataset

    rows = []
    for row in dataset:
        rows.append({"sentence1": row["sentence"], "sentence2": row["paraphrase"], "label": 1})
        rows.append({"sentence1": row["sentence"], "sentence2": row["unrelated"], "label": 0})
    return Dataset.from_list(rows)


def shipped_tasks() -> dict[str, dict[str, Any]]:
    """Task name -> its harness config, as a YAML task file would give it."""
    return {"koraft_ko_paraphrase": {
        "task": "koraft_ko_paraphrase", "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(PAIRS_FILE)}}, "output_type": "multiple_choice",
        "test_split": "test", "process_docs": paraphrase_docs,
        "doc_to_text": "문장 1: {{sentence1}}\n문장 2: {{sentence2}}\n질문: 두 문장의 뜻이 같습니까?\n답변:",
        "doc_to_target": "{{label}}", "doc_to_choice": ["아니오", "예"],
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0}}}
