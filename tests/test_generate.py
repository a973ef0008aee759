"""The generate stage: real parsers on documents written here, a real HTTP teacher on loopback, the call cache."""

from __future__ import annotations

import copy
import dataclasses
import json
import time
import warnings
from pathlib import Path

import pytest
from helpers import make_project, run, set_param
from teacher_server import QUESTION, TeacherServer

from koraft.core.errors import KoraftError, ParamError
from koraft.core.hangul import hangul_share
from koraft.data.readers import InputSpec
from koraft.generation.chunking import chunk_document, sentences
from koraft.generation.config import GenerateSettings, load_generate
from koraft.generation.documents import OLE_MAGIC, Document, Passage, find_documents, read_document
from koraft.generation.generate import generate_to_files
from koraft.generation.replies import judge_answer, parse_questions
from koraft.generation.teachers import TeacherStopped
from koraft.inference.call_cache import CallCache, Reply

FACTS = ["한결시는 강원도 동쪽에 있는 도시이다.", "한결시의 인구는 약 12만 명이다.",
         "한결시는 1962년에 시로 승격되었다.", "시청은 중앙로 15번지에 있다.", "한결 도서관은 오전 9시에 문을 연다.",
         "열람실은 도서관 3층에 있다."]


def write_pdf(path: Path, pages: list[str], password: str | None = None) -> Path:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfgen import canvas

    pdfmetrics.registerFont(UnicodeCIDFont("HYSMyeongJo-Medium"))  # a Korean CID font every reader knows
    drawing = canvas.Canvas(str(path), encrypt=password)
    for text in pages:
        drawing.setFont("HYSMyeongJo-Medium", 11)
        drawing.drawString(60, 760, text)
        drawing.showPage()
    drawing.save()
    return path


def write_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("제1장 총칙", 1)
    document.add_paragraph(FACTS[0])
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "인구", "12만 명"
    document.add_heading("제2장 역사", 1)
    document.add_paragraph(FACTS[2])
    document.save(path)
    return path


def write_hwpx(path: Path) -> Path:
    """An HWPX document with two sections and a table; an HWP 5 (binary) one where the name ends in .hwp."""
    from hwpx import HwpxDocument

    document = HwpxDocument.new()
    document.add_paragraph(FACTS[3])
    table = document.add_table(rows=1, cols=2)
    table.set_cell_text(0, 0, "개관")
    table.set_cell_text(0, 1, "오전 9시")
    document.add_section()
    document.add_paragraph(FACTS[5])
    document.save_to_path(str(path))
    return path


def write_documents(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_pdf(folder / "안내.pdf", FACTS[:2])
    write_docx(folder / "규정.docx")
    write_hwpx(folder / "공지.hwpx")
    (folder / "도서관.html").write_text(
        "<html><head><meta charset='utf-8'><script>var x = '스크립트';</script></head><body><nav>메뉴</nav>"
        f"<h1>이용 안내</h1><p>{FACTS[4]}</p><h2>시설</h2><ul><li>{FACTS[5]}</li></ul></body></html>", encoding="utf-8")
    (folder / "연혁.md").write_text(f"# 연혁\n{FACTS[2]}\n\n# 청사\n{FACTS[3]}\n", encoding="utf-8")
    (folder / "메모.txt").write_bytes(f"{FACTS[1]}\n{FACTS[4]}".encode("cp949"))  # an older Windows file
    return folder


def test_each_reader_gives_nfc_text_with_its_provenance(tmp_path):
    folder = write_documents(tmp_path / "docs")
    read = {path.suffix: read_document(path) for path in find_documents([str(folder)])[0]}
    assert [(p.where, p.text) for p in read[".pdf"].passages] == [("p.1", FACTS[0]), ("p.2", FACTS[1])]
    assert [(p.where, p.text) for p in read[".docx"].passages] == [
        ("§제1장 총칙", f"제1장 총칙\n{FACTS[0]}\n인구\t12만 명"), ("§제2장 역사", f"제2장 역사\n{FACTS[2]}")]
    assert [(p.where, p.text) for p in read[".hwpx"].passages] == [
        ("section 1", f"{FACTS[3]}\n개관\t오전 9시"), ("section 2", FACTS[5])]
    html = read[".html"].passages
    assert [(p.where, p.text) for p in html] == [("§이용 안내", f"이용 안내\n{FACTS[4]}"),
                                                 ("§시설", f"시설\n{FACTS[5]}")]
    assert [p.where for p in read[".md"].passages] == ["§연혁", "§청사"]
    assert read[".txt"].passages == [Passage(f"{FACTS[1]}\n{FACTS[4]}", "")]
    decomposed = tmp_path / "nfd.txt"
    decomposed.write_text("\u1112\u1161\u11ab\u1100\u1173\u11af", encoding="utf-8")  # 한글 as jamo (macOS names)
    assert read_document(decomposed).passages[0].text == "한글"


def test_unreadable_files_are_rejects_with_their_reason_not_a_crash(tmp_path):
    write_pdf(tmp_path / "locked.pdf", [FACTS[0]], password="secret")
    write_pdf(tmp_path / "blank.pdf", [""])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "old.hwp").write_bytes(OLE_MAGIC + bytes(504))  # a compound file, but no HWP in it
    whole = write_hwpx(tmp_path / "whole.hwp").read_bytes()
    (tmp_path / "whole.hwp").unlink()
    (tmp_path / "cut.hwp").write_bytes(whole[:len(whole) // 2])
    header = whole.index(b"HWP Document File")  # the FileHeader stream: signature, version, then the flags
    locked = bytearray(whole)
    locked[header + 36] |= 0b10  # the "password" flag
    (tmp_path / "locked.hwp").write_bytes(locked)
    (tmp_path / "locked.docx").write_bytes(OLE_MAGIC + bytes(504))
    (tmp_path / "binary.hwpx").write_bytes(OLE_MAGIC + bytes(504))
    (tmp_path / "table.xlsx").write_bytes(b"PK")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    files, hidden = find_documents([str(tmp_path)])
    assert [path.name for path in hidden] == [".DS_Store"]
    reasons = {path.name: read_document(path).reason for path in files}
    assert reasons == {"locked.pdf": "encrypted", "blank.pdf": "no_text", "broken.pdf": "unreadable",
                       "old.hwp": "unreadable", "cut.hwp": "unreadable", "locked.hwp": "encrypted",
                       "locked.docx": "encrypted", "binary.hwpx": "encrypted", "table.xlsx": "unsupported_format"}
    assert read_document(tmp_path / "cut.hwp").detail.startswith("Hwp5Error: ")
    assert "password-protected" in read_document(tmp_path / "locked.hwp").detail


def test_an_hwp_reads_like_its_hwpx_twin_through_current_python_hwpx_calls(tmp_path):
    hwp, hwpx = write_hwpx(tmp_path / "공지.hwp"), write_hwpx(tmp_path / "공지.hwpx")
    assert hwp.read_bytes()[:8] == OLE_MAGIC and hwpx.read_bytes()[:2] == b"PK"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # what python-hwpx 7.0 removes, koraft must not call
        binary, zipped = read_document(hwp), read_document(hwpx)
    assert binary.format == "hwp" and zipped.format == "hwpx"
    assert [(p.where, p.text) for p in binary.passages] == [
        ("section 1", f"{FACTS[3]}\n개관\t오전 9시"), ("section 2", FACTS[5])]
    assert binary.passages == zipped.passages and binary.unconverted == {} == zipped.unconverted


def test_chunks_end_at_sentences_stay_within_size_and_overlap_by_whole_sentences():
    document = Document("doc.md", "markdown", [Passage(" ".join(FACTS[:3]), "§가"),
                                               Passage(" ".join(FACTS[3:]), "§나")])
    chunks = chunk_document(document, size=60, overlap=25, measure=len)  # the facts are 16-21 characters
    assert [sentence for passage in document.passages for sentence, _ in sentences(passage.text)] == FACTS
    # Full at 60; the next chunk starts with the last sentence (<= 25); a new passage starts a new line.
    assert [(chunk.text, chunk.source) for chunk in chunks] == [
        (f"{FACTS[0]} {FACTS[1]}", "doc.md §가"), (f"{FACTS[1]} {FACTS[2]}\n{FACTS[3]}", "doc.md §가 .. §나"),
        (f"{FACTS[3]} {FACTS[4]} {FACTS[5]}", "doc.md §나")]
    assert [chunk.length for chunk in chunks] == [41, 59, 56]
    assert [c.chunk_id for c in chunk_document(document, 60, 25, len)] == [c.chunk_id for c in chunks]
    long = Document("long.txt", "text", [Passage("가" * 250 + ".", "")])
    assert [len(chunk.text) for chunk in chunk_document(long, 100, 0, len)] == [100, 100, 51]


def test_questions_and_answers_are_read_and_judged_with_named_reasons(params):
    filters = load_generate(params).filters
    chunk = " ".join(FACTS)
    listed = "다음은 질문입니다:\n1. 한결시는 어디에 있나요?\n2) 인구는 몇 명인가요?\n- 시청은 어디에 있나요?"
    assert parse_questions(listed, 2) == ["한결시는 어디에 있나요?", "인구는 몇 명인가요?"]
    assert hangul_share("KTX는 빠르다") == pytest.approx(4 / 7) and hangul_share("1470") is None
    good = "##begin_quote## “한결시의 인구는 약 12만 명이다.” ##end_quote## 이므로\n<ANSWER>: 약 12만 명"
    assert judge_answer(good, chunk, filters) == (
        "##begin_quote## 한결시의 인구는 약 12만 명이다. ##end_quote## 이므로", "약 12만 명", "kept")
    assert judge_answer("인구는 12만 명이다.", chunk, filters)[0] == "no_answer_marker"
    assert judge_answer("문서에 나와 있다고 한다.\n<ANSWER>: 약 12만 명", chunk, filters)[0] == "no_quote"
    assert judge_answer("##begin_quote##인구는 50만 명이다##end_quote## 그래서\n<ANSWER>: 50만 명", chunk,
                        filters)[0] == "quote_not_in_chunk"
    assert judge_answer("##begin_quote##한결시의 인구는 약 12만 명이다.##end_quote## 그러므로\n<ANSWER>: 120000",
                        chunk, filters)[0] == "answer_not_in_chunk"
    english = "##begin_quote##한결시##end_quote## so the answer is in the document as written\n<ANSWER>: 한결시"
    assert judge_answer(english, chunk, filters)[0] == "cot_not_korean"


def settings_for(params: dict, folder: Path, url: str, **changes) -> dict:
    generate = copy.deepcopy(params)
    generate["generate"]["inputs"] = [str(folder)]
    generate["generate"]["teacher"].update({"base_url": url, "model": "teacher", "retries": 1, "timeout_s": 5.0,
                                            **changes})
    return load_generate(generate)


def generated(settings: GenerateSettings, out: Path) -> tuple[dict, dict]:
    return generate_to_files(settings, out / "records.jsonl", out / "rejects.jsonl", out / "calls.jsonl")


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    return write_documents(tmp_path_factory.mktemp("generate") / "docs")


def test_an_endpoint_teacher_writes_records_that_validate_keeps_and_a_rerun_calls_nothing(params, documents,
                                                                                              tmp_path):
    from helpers import validate_inputs

    with TeacherServer() as server:
        settings = settings_for(params, documents, server.url)
        metrics, cost = generated(settings, tmp_path)
        requests = server.requests
        again, cost_again = generated(settings, tmp_path)
        assert server.requests == requests  # the second run asked the teacher nothing
    assert again == metrics and cost_again["teacher_calls_made"] == 0 and cost_again["cache_hits"] == cost[
        "teacher_calls_made"] == metrics["teacher"]["calls"] == requests
    items = metrics["items"]
    assert metrics["files"] == {"found": 6, "read": 6, "hidden_skipped": 0, "rejected": 0, "rejected_by_reason": {},
                                "by_format": {"docx": 1, "html": 1, "hwpx": 1, "markdown": 1, "pdf": 1, "text": 1},
                                "hwp_unconverted": {}}
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert items["requested"] == metrics["chunks"]["count"] * 3 == items["kept"] + items["rejected"]
    assert len(records) == items["kept"] > 0 and len(rejects) == items["rejected"]
    assert set(items["rejected_by_reason"]) <= {"no_question", "near_duplicate_question"}  # chunks of 1-2 sentences
    assert metrics["teacher"]["tokens_in"] > 0 and metrics["teacher"]["estimated_cost"] == 0.0
    kept = validate_inputs([InputSpec(str(tmp_path / "records.jsonl"), "jsonl")],
                           params["validate"]["lengths"], params["validate"]["near_duplicates"])
    assert len(kept.records) == len(records) and not kept.rejects
    assert {record["provenance"].split(" ")[0].rsplit("/", 1)[-1] for record in records} >= {"안내.pdf", "공지.hwpx"}


def test_hwp_files_become_records_and_a_damaged_one_a_counted_reject(params, tmp_path):
    folder = tmp_path / "hwp"
    folder.mkdir()
    whole = write_hwpx(folder / "공지.hwp").read_bytes()
    (folder / "잘린.hwp").write_bytes(whole[:4096])
    with TeacherServer() as server:
        metrics, _ = generated(settings_for(params, folder, server.url), tmp_path)
    assert metrics["files"] == {"found": 2, "read": 1, "hidden_skipped": 0, "rejected": 1,
                                "rejected_by_reason": {"unreadable": 1}, "by_format": {"hwp": 1},
                                "hwp_unconverted": {}}
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(records) == metrics["items"]["kept"] > 0
    assert {record["provenance"] for record in records} == {f"{folder / '공지.hwp'} section 1 .. section 2"}
    assert any(FACTS[3] in record["context"] for record in records)
    assert [(r["source"], r["reason"]) for r in rejects if r["step"] == "document"] == [
        (str(folder / "잘린.hwp"), "unreadable")]


def test_a_changed_prompt_calls_only_for_what_changed(params, documents, tmp_path):
    with TeacherServer() as server:
        generated(settings_for(params, documents, server.url), tmp_path)
        first = server.requests
        changed = copy.deepcopy(params)
        changed["generate"]["prompts"]["answer"] = "문서를 보고 답하세요.\n\n문서:\n{chunk}\n\n질문: {question}"
        metrics, cost = generated(settings_for(changed, documents, server.url), tmp_path)
    questions = metrics["items"]["requested"] - metrics["items"]["rejected"]
    assert cost["teacher_calls_made"] == server.requests - first == questions  # answers only, questions cached
    assert cost["cache_hits"] == metrics["chunks"]["count"]


def test_a_teacher_that_dies_mid_run_resumes_from_the_cache_without_a_duplicate_call(params, documents, tmp_path):
    with TeacherServer() as whole:
        expected, _ = generated(settings_for(params, documents, whole.url), tmp_path / "whole")
    with TeacherServer(die_after=5) as dying:
        with pytest.raises(TeacherStopped, match="every reply so far is cached"):
            generated(settings_for(params, documents, dying.url, concurrency=2), tmp_path / "run")
    assert not (tmp_path / "run" / "records.jsonl").exists() and not (tmp_path / "run" / "rejects.jsonl").exists()
    assert len(CallCache(tmp_path / "run" / "calls.jsonl").replies) == len(dying.answered) == 5
    with TeacherServer() as revived:
        metrics, cost = generated(settings_for(params, documents, revived.url), tmp_path / "run")
    assert not set(dying.answered) & set(revived.answered)  # nothing answered twice
    assert cost["teacher_calls_made"] == len(revived.answered) == expected["teacher"]["calls"] - 5
    assert metrics == expected
    assert (tmp_path / "run" / "records.jsonl").read_bytes() == (tmp_path / "whole" / "records.jsonl").read_bytes()


def test_a_torn_last_cache_line_is_dropped_and_asked_again(tmp_path):
    cache = CallCache(tmp_path / "calls.jsonl")
    cache.put("a", Reply("답", 3, 1, True))
    cache.close()
    with (tmp_path / "calls.jsonl").open("a") as handle:
        handle.write('{"key": "b", "text": "잘')  # killed mid-write
    reopened = CallCache(tmp_path / "calls.jsonl")
    assert list(reopened.replies) == ["a"] and reopened.torn_lines == 1
    reopened.put("b", Reply("다시", 3, 1, True))
    reopened.close()
    assert list(CallCache(tmp_path / "calls.jsonl").replies) == ["a", "b"]


def test_a_429_is_answered_with_backoff(params, documents, tmp_path):
    with TeacherServer(rate_limited=2) as server:
        started = time.monotonic()
        metrics, cost = generated(settings_for(params, documents, server.url, concurrency=1, retries=3), tmp_path)
        elapsed = time.monotonic() - started
    assert server.requests == cost["teacher_calls_made"] + 2 and metrics["items"]["kept"] > 0
    assert elapsed >= 0.2  # two waits of the server's retry-after-ms: 100


def test_a_refused_request_is_a_counted_reject_and_is_not_asked_again(params, documents, tmp_path):
    from teacher_server import scripted_reply

    def refuse_population(user: str):
        if "\n\n질문: " in user and "인구" in user.rsplit("질문: ", 1)[1]:
            return 400, "the prompt is too long"
        return scripted_reply(user)

    with TeacherServer(reply=refuse_population) as server:
        metrics, _ = generated(settings_for(params, documents, server.url), tmp_path)
        asked = server.requests
        again, cost = generated(settings_for(params, documents, server.url), tmp_path)
        assert server.requests == asked and cost["teacher_calls_made"] == 0
    refused = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    refused = [row for row in refused if row["reason"] == "teacher_refused"]
    assert refused and all("인구" in row["question"] and "HTTP 400" in row["detail"] for row in refused)
    assert metrics["items"]["rejected_by_reason"]["teacher_refused"] == len(refused) and again == metrics


def test_a_teacher_that_is_down_or_wrongly_configured_is_one_line(params, documents, tmp_path):
    with TeacherServer() as server:
        url = server.url
    with pytest.raises(KoraftError, match="unreachable"):
        generated(settings_for(params, documents, url), tmp_path)
    broken = copy.deepcopy(params)
    broken["generate"]["prompts"]["answer"] = "질문에 답하세요: {question}"
    with pytest.raises(ParamError, match=r"generate.prompts.answer.*\{chunk\}"):
        load_generate(broken)
    broken = copy.deepcopy(params)
    broken["generate"]["teacher"]["backend"] = "transformers"
    broken["generate"]["teacher"]["model"] = {"preset": "tiny-s"}
    broken["generate"]["sampling"]["temperature"] = 0.7
    with pytest.raises(ParamError, match="decodes greedily"):
        load_generate(broken)


@pytest.mark.slow
def test_the_tiny_model_as_teacher_has_every_item_counted_with_its_reason(params, documents, tiny_models, tmp_path):
    settings = copy.deepcopy(params)
    settings["generate"]["inputs"] = [str(documents)]
    settings["generate"]["teacher"].update(backend="transformers", batch_size=4,
                                           model={"name": str(tiny_models / "tiny-s"), "family": "tiny"})
    settings["generate"]["sampling"]["max_tokens"] = 24
    settings["generate"]["questions_per_chunk"] = 2
    metrics, cost = generated(load_generate(settings), tmp_path)
    items = metrics["items"]
    assert items["requested"] == items["kept"] + items["rejected"] == 2 * metrics["chunks"]["count"]
    assert sum(items["rejected_by_reason"].values()) == items["rejected"] > 0
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert all(row["reason"] and row["detail"] for row in rejects) and len(rejects) == items["rejected"]
    assert cost["teacher_calls_made"] == metrics["teacher"]["calls"] and metrics["teacher"]["tokens_out"] > 0


@pytest.mark.slow
@pytest.mark.dvc
def test_dvc_repro_trains_on_generated_records_and_a_second_repro_is_free(tmp_path):
    project = make_project(tmp_path / "project")
    write_documents(project / "data" / "documents")
    with TeacherServer() as server:
        set_param(project, "generate.inputs", ["data/documents"])
        set_param(project, "generate.teacher.base_url", server.url)
        run(["dvc", "repro", "split"], project)
        asked = server.requests
        second = run(["dvc", "repro", "split"], project).stdout
        assert server.requests == asked > 0
    assert "Data and pipelines are up to date" in second
    generate = json.loads((project / "metrics/generate.json").read_text())
    validate = json.loads((project / "metrics/validate.json").read_text())
    assert validate["files"]["data/generated/records.jsonl"]["kept"] == generate["items"]["kept"] > 0
    split = json.loads((project / "metrics/split.json").read_text())
    assert set(split["leakage"].values()) == {0}
    assert QUESTION.split(":")[0] in (project / "data/validated/records.jsonl").read_text()


@pytest.mark.slow
def test_llama_cpp_serving_the_tiny_model_is_a_teacher_whose_every_item_is_counted(params, documents, tiny_models,
                                                                                  tmp_path):
    from koraft.serving.llama_cpp import convert, llama_server

    gguf = tmp_path / "tiny-s-f32.gguf"
    convert(tiny_models / "tiny-s", gguf, "f32")
    with llama_server(gguf, "teacher", 1024) as server:
        settings = settings_for(params, documents, server.url, concurrency=2, extra_body={"repeat_penalty": 1.0})
        metrics, cost = generated(dataclasses.replace(settings, sampling={"temperature": 0.0, "max_tokens": 24}),
                                  tmp_path / "out")
    items = metrics["items"]
    assert items["requested"] == items["kept"] + items["rejected"] and items["rejected"] > 0
    assert cost["teacher_calls_made"] == metrics["teacher"]["calls"] >= metrics["chunks"]["count"]
    assert metrics["teacher"]["tokens_in"] > 0 and metrics["teacher"]["tokens_out"] > 0  # the server's usage
