"""A team's documents as text passages, each with where it came from (file and page or section).

Each format goes through a well-kept parser: PDF through pypdf (one passage per page), DOCX through
python-docx (per heading, tables as tab-separated rows), HWPX, the Hangul office format that is a zip
of OWPML XML, and HWP 5, the binary .hwp, through python-hwpx (per section, tables included: it
converts an .hwp into the same document model, and what it could not carry over is counted), HTML through
BeautifulSoup (per heading, scripts and navigation dropped), Markdown and plain text as written (per `#`
heading).

Text is NFC. A file that cannot be read (encrypted, damaged, no text layer) becomes a
DocumentReject with its reason; one bad file never stops the stage.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = {".pdf": "pdf", ".docx": "docx", ".hwpx": "hwpx", ".hwp": "hwp", ".html": "html", ".htm": "html",
           ".txt": "text", ".md": "markdown", ".markdown": "markdown"}
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an OLE2 compound file: HWP 5, .doc, or an encrypted DOCX
_DROPPED_HTML = ("script", "style", "noscript", "template", "nav", "header", "footer", "aside", "form")
_HEADING = "\x00heading\x00"  # marks a heading line while HTML is flattened to text


@dataclass(frozen=True)
class Passage:
    text: str
    where: str  # "p.3", "§제1장 총칙", "section 2"; empty for a file without pages or headings


@dataclass(frozen=True)
class Document:
    path: str
    format: str
    passages: list[Passage]
    unconverted: dict[str, int] = field(default_factory=dict)  # .hwp: parts python-hwpx did not convert, by kind


@dataclass(frozen=True)
class DocumentReject:
    path: str
    reason: str  # unsupported_format | encrypted | unreadable | no_text
    detail: str


def find_documents(inputs: list[str]) -> tuple[list[Path], list[Path]]:
    """(the files the inputs name, folders walked in sorted order, hidden files skipped and returned apart)."""
    files, hidden = [], []
    for entry in inputs:
        path = Path(entry)
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if not found.is_file():
                continue
            hidden_file = any(part.startswith(".") for part in found.relative_to(path).parts)
            (hidden if hidden_file else files).append(found)
    return files, hidden


def read_document(path: Path) -> Document | DocumentReject:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        return DocumentReject(str(path), "unsupported_format",
                              f"'{path.suffix}' is not one of {', '.join(sorted(set(FORMATS)))}")
    if not path.is_file():
        return DocumentReject(str(path), "unreadable", "no such file")
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        return DocumentReject(str(path), "unreadable", exc.strerror or str(exc))
    if kind in ("docx", "hwpx") and head == OLE_MAGIC:
        return DocumentReject(str(path), "encrypted", f"an OLE file, not a zip: a password-protected .{kind} (or an "
                                                      f"old binary format); remove the password and save again")
    unconverted: dict[str, int] = {}
    try:
        passages = _hwp(path, unconverted) if kind == "hwp" else READERS[kind](path)
    except _Encrypted as exc:
        return DocumentReject(str(path), "encrypted", str(exc))
    except Exception as exc:  # noqa: BLE001 - a parser's failure on one file is that file's reject
        return DocumentReject(str(path), "unreadable", f"{type(exc).__name__}: {str(exc)[:200]}")
    passages = [Passage(text, where) for text, where in ((_clean(p.text), p.where) for p in passages) if text]
    if not passages:
        hint = " (a scanned PDF has no text layer: OCR it first)" if kind == "pdf" else ""
        return DocumentReject(str(path), "no_text", f"no text found{hint}")
    return Document(str(path), kind, passages, unconverted)


class _Encrypted(Exception):
    pass


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \u00a0\u3000]+", " ", line).strip() for line in text.split("\n")]  # tabs: table cells
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pdf(path: Path) -> list[Passage]:
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted and not reader.decrypt(""):  # an empty user password opens many "protected" PDFs
        raise _Encrypted("the PDF needs a password to open")
    return [Passage(page.extract_text() or "", f"p.{number}") for number, page in enumerate(reader.pages, 1)]


def _docx(path: Path) -> list[Passage]:
    import docx
    from docx.table import Table

    passages, lines, heading = [], [], ""
    for block in docx.Document(str(path)).iter_inner_content():
        if isinstance(block, Table):
            lines += ["\t".join(cell.text.strip() for cell in row.cells) for row in block.rows]
            continue
        style = block.style.name if block.style is not None else ""
        if style.startswith(("Heading", "Title")) and block.text.strip():
            passages.append(Passage("\n".join(lines), heading))
            heading, lines = f"§{block.text.strip()}", []
        lines.append(block.text)
    return [*passages, Passage("\n".join(lines), heading)]


def _hwpx(path: Path) -> list[Passage]:
    from hwpx import HwpxDocument

    with zipfile.ZipFile(path) as archive:
        manifest = archive.read("META-INF/manifest.xml").decode("utf-8", "replace") if (
            "META-INF/manifest.xml" in archive.namelist()) else ""
    if "encryption-data" in manifest:
        raise _Encrypted("the HWPX is password-protected (its manifest lists encryption data)")
    with HwpxDocument.open(str(path)) as document:
        return _hwpx_passages(document)


# python-hwpx's codes for an .hwp whose body is encrypted (hwpx.errors.Hwp5Error)
_HWP5_LOCKED = {"hwp5-password": "password-protected", "hwp5-distribution": "a distribution (read-only) document",
                "hwp5-drm": "DRM-protected"}


def _hwp(path: Path, unconverted: dict[str, int]) -> list[Passage]:
    """An HWP 5 file through python-hwpx, which converts it into the HWPX document model; `unconverted` gets
    the counts of what that conversion left out (python-hwpx warns of them too: counted here instead)."""
    from hwpx import HwpxDocument
    from hwpx.errors import Hwp5ConversionWarning, Hwp5Error

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Hwp5ConversionWarning)
            document = HwpxDocument.open(str(path))
    except Hwp5Error as exc:
        if exc.code in _HWP5_LOCKED:
            raise _Encrypted(f"the HWP is {_HWP5_LOCKED[exc.code]}: its body is encrypted") from exc
        raise
    with document:
        report = document.conversion_report
        unconverted.update(sorted(report.unconverted.items()) if report is not None else {})
        return _hwpx_passages(document)


def _hwpx_passages(document) -> list[Passage]:
    """One passage per section of an open python-hwpx document: its paragraphs' text, tables as rows of
    tab-separated cells."""
    passages = []
    for number, section in enumerate(document.sections, 1):
        lines = []
        for paragraph in section.paragraphs:
            if paragraph.text:
                lines.append(paragraph.text)
            for table in paragraph.tables:
                lines += ["\t".join((cell.text or "").strip() for cell in row.cells) for row in table.rows]
        passages.append(Passage("\n".join(lines), f"section {number}"))
    return passages


def _html(path: Path) -> list[Passage]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")  # bytes: it finds the charset (meta, BOM, cp949)
    for tag in soup(_DROPPED_HTML):
        tag.decompose()
    for heading in soup.find_all(["h1", "h2", "h3", "h4"]):
        heading.replace_with(f"\n{_HEADING}{heading.get_text(' ', strip=True)}\n")
    for block in soup.find_all(["p", "li", "tr", "div", "br", "pre", "blockquote", "dd", "dt"]):
        block.insert_after("\n")
    return _sections(soup.get_text().split("\n"), lambda line: line[len(_HEADING):]
                     if line.startswith(_HEADING) else None)


def _markdown(path: Path) -> list[Passage]:
    return _sections(_decoded(path).split("\n"), lambda line: line.lstrip("#").strip()
                     if re.match(r"#{1,6} \S", line) else None)


def _text(path: Path) -> list[Passage]:
    return [Passage(_decoded(path), "")]


def _decoded(path: Path) -> str:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "cp949"):  # cp949: the Korean Windows encoding older files are saved in
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ValueError("neither UTF-8 nor CP949 text")


def _sections(lines: list[str], heading_of) -> list[Passage]:
    """Passages split at heading lines; the heading line stays the first line of its passage."""
    passages, current, where = [], [], ""
    for line in lines:
        heading = heading_of(line)
        if heading is not None:
            passages.append(Passage("\n".join(current), where))
            current, where = [heading], f"§{heading}"
        else:
            current.append(line)
    return [*passages, Passage("\n".join(current), where)]


READERS = {"pdf": _pdf, "docx": _docx, "hwpx": _hwpx, "html": _html, "markdown": _markdown, "text": _text}
