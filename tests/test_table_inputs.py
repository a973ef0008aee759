"""Spreadsheets and datasets as validate inputs: .xlsx sheets, .parquet files, datasets folders, hub ids."""

from __future__ import annotations

import datetime

import datasets
import openpyxl
import pyarrow
import pyarrow.parquet
import pytest
from helpers import validate_inputs

from koraft.core.errors import InputError, ParamError
from koraft.data.config import load_validate
from koraft.data.readers import InputSpec, infer_format, read_records

DOC = "서울특별시는 대한민국의 수도이며 인구는 약 940만 명이다. 1988년에 하계 올림픽이 열렸다."


def read(path, fmt, **kwargs):
    return list(read_records(InputSpec(str(path), fmt, **kwargs)))


def workbook(path, sheets):
    """An .xlsx file written by openpyxl: {sheet name: rows}."""
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def test_xlsx_sheet_by_name_or_position_with_a_header_row_and_the_csv_column_map(tmp_path):
    rows = [["사내 FAQ 2026", None, None, None],  # a title above the header
            ["번호", "질문", "문서", "답변"],
            [1, "수도는?", DOC, "서울특별시"],
            [None, None, None, None],  # an empty row is skipped, still counted in row numbers
            [2, "올림픽은 언제?", DOC, 1988],  # a number cell reads as the text a user sees
            [3, "날짜?", DOC, datetime.date(1988, 9, 17)]]
    path = workbook(tmp_path / "faq.xlsx", {"표지": [["목차"]], "질의응답": rows})
    columns = {"id": "번호", "question": "질문", "context": "문서", "answer": "답변"}
    by_name = read(path, "xlsx", columns=columns, sheet="질의응답", header_row=2)
    assert [r.source for r in by_name] == [f"{path}:질의응답!3", f"{path}:질의응답!5", f"{path}:질의응답!6"]
    assert by_name[0].fields == {"id": "1", "question": "수도는?", "context": DOC, "answer": "서울특별시"}
    assert by_name[1].fields["answer"] == "1988" and by_name[2].fields["answer"] == "1988-09-17"
    assert read(path, "xlsx", columns=columns, sheet=1, header_row=2) == by_name
    assert infer_format(str(path)) == "xlsx"


def test_xlsx_problems_name_the_file_sheet_and_column(tmp_path):
    path = workbook(tmp_path / "qa.xlsx", {"Sheet1": [["question", "context"], ["수도는?", DOC]]})
    with pytest.raises(InputError, match=r"qa.xlsx: field 'sheet': no sheet named 'QA'; its sheets are \['Sheet1'\]"):
        read(path, "xlsx", sheet="QA")
    with pytest.raises(InputError, match=r"qa.xlsx: field 'sheet': has 1 sheets \['Sheet1'\], no sheet 3"):
        read(path, "xlsx", sheet=3)
    with pytest.raises(InputError, match=r"qa.xlsx:1: field 'answer': column 'answer' not in header"):
        read(path, "xlsx")
    with pytest.raises(InputError, match=r"qa.xlsx:5: sheet 'Sheet1' has no header row 5"):
        read(path, "xlsx", header_row=5)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(InputError, match=r"broken.xlsx: not a readable .xlsx workbook"):
        read(broken, "xlsx")
    with pytest.raises(InputError, match="file not found"):
        read(tmp_path / "nope.xlsx", "xlsx")


def test_an_xlsx_empty_cell_is_a_reject_with_its_reason_and_the_counts_add_up(tmp_path, validate_params):
    rows = [["question", "context", "answer", "cot"], ["수도는?", DOC, "서울특별시", None],
            ["인구는?", DOC, None, None]]
    path = workbook(tmp_path / "qa.xlsx", {"Sheet1": rows})
    result = validate_inputs([InputSpec(str(path), "xlsx")], validate_params["lengths"],
                             validate_params["near_duplicates"])
    assert result.metrics["files"][str(path)] == {"raw": 2, "kept": 1, "rejected": 1, "answer_not_in_context": 0}
    (reject,) = result.rejects
    assert (reject["source"], reject["reason"], reject["field"]) == (f"{path}:Sheet1!3", "empty_field", "answer")
    assert result.records[0]["cot"] is None  # an empty optional cell is no chain of thought


def test_merged_cells_read_as_shown_and_a_formula_without_a_saved_value_is_named(tmp_path, validate_params):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "QA"
    for row in (["question", "context", "answer"], ["수도는?", DOC, "서울특별시"], ["인구는?", None, "약 940만 명"],
                ["올림픽은?", DOC, "=C2"], ["개최 연도는?", DOC, "1988년"]):
        sheet.append(row)
    sheet.merge_cells("B2:B3")  # two questions on one document, as people lay such sheets out
    sheet.merge_cells("C5:D5")  # a merge beside the columns read changes nothing
    path = tmp_path / "merged.xlsx"
    book.save(path)  # openpyxl writes formulas without a computed value, as scripts and some exports do
    result = validate_inputs([InputSpec(str(path), "xlsx")], validate_params["lengths"],
                             validate_params["near_duplicates"])
    assert [(r["question"], r["context"], r["answer"]) for r in result.records] == [
        ("수도는?", DOC, "서울특별시"), ("인구는?", DOC, "약 940만 명"), ("개최 연도는?", DOC, "1988년")]
    (reject,) = result.rejects
    assert (reject["source"], reject["reason"]) == (f"{path}:QA!4", "formula_not_computed")
    assert reject["detail"].startswith("'answer' is the formula =C2 with no saved value")


def test_parquet_streams_in_batches_with_row_indices_and_squad_shaped_answers(tmp_path):
    count = 10_000  # more than one batch
    table = pyarrow.table({
        "id": [f"q{i}" for i in range(count)],
        "question": [f"질문 {i}?" for i in range(count)],
        "context": [DOC] * count,
        "answers": [{"text": ["서울특별시"], "answer_start": [0 if i != 7 else 3]} for i in range(count)],
        "unused": list(range(count)),
    })
    path = tmp_path / "korquad.parquet"
    pyarrow.parquet.write_table(table, path, row_group_size=3000)
    records = read(path, "parquet", columns={"answer": "answers"})
    assert len(records) == count and records[-1].source == f"{path}:[{count - 1}]"
    assert records[0].fields == {"id": "q0", "question": "질문 0?", "context": DOC, "answer": "서울특별시"}
    assert records[7].problem[0] == "answer_start_mismatch"  # checked as in a SQuAD file
    assert infer_format(str(path)) == "parquet"
    with pytest.raises(InputError, match=r"korquad.parquet: field 'answer': column 'answer' not in columns"):
        read(path, "parquet")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    with pytest.raises(InputError, match=r"broken.parquet: not a readable Parquet file"):
        read(broken, "parquet")


def test_datasets_folder_saved_with_save_to_disk_one_split_or_a_dict(tmp_path):
    rows = {"question": ["수도는?", "올림픽은?"], "context": [DOC, DOC], "answer": ["서울특별시", "1988년"]}
    single = tmp_path / "single"
    datasets.Dataset.from_dict(rows).save_to_disk(str(single))
    records = read(single, "hf")
    assert [r.source for r in records] == [f"{single}:rows[0]", f"{single}:rows[1]"]
    assert records[1].fields == {"question": "올림픽은?", "context": DOC, "answer": "1988년"}
    assert infer_format(str(single)) == "hf"
    both = tmp_path / "both"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()})}
                         ).save_to_disk(str(both))
    assert [r.source for r in read(both, "hf", split="validation")] == [f"{both}:validation[0]"]
    with pytest.raises(InputError, match=r"field 'split': holds the splits \['train', 'validation'\]: set 'split'"):
        read(both, "hf")
    with pytest.raises(InputError, match=r"field 'split': has no split 'test'"):
        read(both, "hf", split="test")
    with pytest.raises(InputError, match="holds one dataset, not a DatasetDict: remove 'split'"):
        read(single, "hf", split="train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a dataset folder: write it with Dataset.save_to_disk"):
        read(tmp_path / "empty", "hf")


def test_a_hub_dataset_offline_is_one_clear_line(tmp_path):
    spec = InputSpec("hf://KorQuAD/squad_kor_v1", "hf", split="validation", revision="0" * 40)
    with pytest.raises(InputError) as raised:
        list(read_records(spec))
    message = str(raised.value)
    assert message.startswith("hf://KorQuAD/squad_kor_v1: cannot load from the Hugging Face hub (")
    assert "save it with save_to_disk" in message and "\n" not in message


def test_table_keys_in_params_are_checked_per_format(params):
    def entry(**keys):
        return load_validate({**params, "validate": {**params["validate"], "inputs": [keys]}}).inputs[0]

    spec = entry(path="data/raw/faq.xlsx", sheet="질의응답", header_row=2)
    assert (spec.format, spec.sheet, spec.header_row) == ("xlsx", "질의응답", 2)
    with pytest.raises(ParamError, match=r"validate.inputs\[0\].sheet: does not apply to format jsonl"):
        entry(path="data/raw/a.jsonl", sheet=1)
    with pytest.raises(ParamError, match=r"validate.inputs\[0\].header_row: must be"):
        entry(path="data/raw/faq.xlsx", header_row=0)
    with pytest.raises(ParamError, match=r"validate.inputs\[0\].revision: a hub dataset needs a pinned revision"):
        entry(path="hf://KorQuAD/squad_kor_v1", split="train")
    with pytest.raises(ParamError, match=r"validate.inputs\[0\].revision: applies to hub datasets"):
        entry(path="data/raw/ds", format="hf", revision="abc")
    hub = entry(path="hf://KorQuAD/squad_kor_v1", split="train", revision="abc123")
    assert (hub.format, hub.split, hub.revision) == ("hf", "train", "abc123")
