"""The data stages' params sections (validate, split, raft), each checked into its settings before any record
is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from koraft.core.config import check_choice, check_number, check_seed, check_text, reject_unknown_keys, section
from koraft.core.errors import ParamError
from koraft.data.bm25 import TERMS as BM25_TERMS
from koraft.data.quotes import UNVERIFIED_POLICIES
from koraft.data.readers import FIELDS, FORMATS, HUB_PREFIX, InputSpec, infer_format
from koraft.data.schema import TEXT_FIELDS
from koraft.data.split import SPLITS

DISTRACTOR_SOURCES = ("random", "bm25")
OMITTED_GOLDEN_TARGETS = ("recall", "abstain")
RAFT_KEYS = {"num_distractors", "p_golden", "distractor_source", "bm25", "omitted_golden_target", "abstain_answer",
             "instruction", "cot_instruction"}


@dataclass(frozen=True)
class ValidateSettings:
    inputs: tuple[InputSpec, ...]
    lengths: dict[str, list[int]]  # text field -> [min, max] characters
    near_duplicates: dict[str, Any]  # threshold, shingle_size, num_perm, bands
    unverified_quotes: str  # one of UNVERIFIED_POLICIES


@dataclass(frozen=True)
class SplitSettings:
    salt: int
    ratios: dict[str, float]  # train, val, test shares, summing to 1


@dataclass(frozen=True)
class BM25Settings:
    k1: float
    b: float
    pool: int  # candidate documents scored per query
    terms: str  # one of koraft.data.bm25.TERMS


@dataclass(frozen=True)
class RaftSettings:
    num_distractors: int
    p_golden: float
    distractor_source: str  # random or bm25
    omitted_golden_target: str  # recall or abstain
    abstain_answer: str
    instruction: str
    cot_instruction: str
    bm25: BM25Settings
    seed: int  # the top-level seed: distractors and whether a record keeps its golden document


def load_validate(params: dict[str, Any]) -> ValidateSettings:
    validate = section(params, "validate")
    reject_unknown_keys(validate, {"inputs", "unverified_quotes", "lengths", "near_duplicates"}, "validate")
    inputs = validate.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ParamError("validate.inputs", "must be a non-empty list of {path, format, columns}")
    specs = []
    for i, entry in enumerate(inputs):
        key = f"validate.inputs[{i}]"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ParamError(key, "must be a path or a mapping with a 'path' string")
        reject_unknown_keys(entry, {"path", "format", "columns", "id_prefix", "sheet", "header_row", "split",
                                    "revision"}, key)
        fmt = entry.get("format") or infer_format(entry["path"])
        if fmt not in FORMATS:
            raise ParamError(f"{key}.format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
        table = _check_table_keys(entry, fmt, key)
        columns = entry.get("columns") or {}
        if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
            raise ParamError(f"{key}.columns", "must map field names to column names (strings)")
        bad = set(columns) - set(FIELDS)
        if bad:
            raise ParamError(f"{key}.columns", f"unknown fields {sorted(bad)}; fields are {', '.join(FIELDS)}")
        prefix = entry.get("id_prefix", "")
        if not isinstance(prefix, str):
            raise ParamError(f"{key}.id_prefix", f"must be a string, got {prefix!r}")
        specs.append(InputSpec(entry["path"], fmt, dict(columns), prefix, **table))
    paths = [spec.path for spec in specs]
    if len(set(paths)) != len(paths):
        raise ParamError("validate.inputs", "lists the same path twice")

    lengths = validate.get("lengths")
    if not isinstance(lengths, dict):
        raise ParamError("validate.lengths", "must map each text field to [min, max] characters")
    reject_unknown_keys(lengths, set(TEXT_FIELDS), "validate.lengths")
    for name in TEXT_FIELDS:
        bounds = lengths.get(name)
        valid = isinstance(bounds, list) and len(bounds) == 2 and all(
            isinstance(b, int) and not isinstance(b, bool) for b in bounds
        )
        if not valid or not 1 <= bounds[0] <= bounds[1]:
            raise ParamError(f"validate.lengths.{name}", f"must be [min, max] with 1 <= min <= max, got {bounds!r}")

    check_choice(validate, "unverified_quotes", "validate", UNVERIFIED_POLICIES)
    near = section(validate, "near_duplicates", "validate.")
    reject_unknown_keys(near, {"threshold", "shingle_size", "num_perm", "bands"}, "validate.near_duplicates")
    check_number(near, "threshold", "validate.near_duplicates", 0.0, 1.0)
    check_number(near, "shingle_size", "validate.near_duplicates", 1, 64, integer=True)
    num_perm = check_number(near, "num_perm", "validate.near_duplicates", 8, 1024, integer=True)
    bands = check_number(near, "bands", "validate.near_duplicates", 1, num_perm, integer=True)
    if num_perm % bands:
        raise ParamError("validate.near_duplicates.bands", f"must divide num_perm ({num_perm}), got {bands}")
    return ValidateSettings(tuple(specs), dict(lengths), dict(near), validate["unverified_quotes"])


def _check_table_keys(entry: dict[str, Any], fmt: str, key: str) -> dict[str, Any]:
    """The keys only some formats take: sheet and header_row (xlsx), split (hf), revision (hf:// hub ids)."""
    allowed = {"xlsx": {"sheet", "header_row"}, "hf": {"split", "revision"}}.get(fmt, set())
    for name in {"sheet", "header_row", "split", "revision"} & set(entry):
        if name not in allowed:
            raise ParamError(f"{key}.{name}", f"does not apply to format {fmt}")
    table = {name: entry[name] for name in allowed & set(entry)}
    sheet = table.get("sheet", 0)
    if isinstance(sheet, bool) or not isinstance(sheet, (str, int)) or (isinstance(sheet, int) and sheet < 0):
        raise ParamError(f"{key}.sheet", f"must be a sheet name or a 0-based position, got {sheet!r}")
    if "header_row" in table:
        check_number(table, "header_row", key, 1, 1_048_576, integer=True)  # Excel's last row
    for name in ("split", "revision"):
        if name in table and (not isinstance(table[name], str) or not table[name].strip()):
            raise ParamError(f"{key}.{name}", f"must be a non-empty string, got {table[name]!r}")
    hub = entry["path"].startswith(HUB_PREFIX)
    if "revision" in table and not hub:
        raise ParamError(f"{key}.revision", "applies to hub datasets (hf://<id>) only")
    if hub and "revision" not in table:
        raise ParamError(f"{key}.revision", "a hub dataset needs a pinned revision (a commit sha): DVC cannot see "
                                            "the hub change, so an unpinned id would not rerun the same rows")
    return table


def load_split(params: dict[str, Any]) -> SplitSettings:
    return split_settings(section(params, "split"))


def split_settings(split: dict[str, Any]) -> SplitSettings:
    reject_unknown_keys(split, {"salt", "ratios"}, "split")
    check_number(split, "salt", "split", 0, 2**32 - 1, integer=True)
    ratios = split.get("ratios")
    if not isinstance(ratios, dict) or set(ratios) != set(SPLITS):
        raise ParamError("split.ratios", f"must map exactly {', '.join(SPLITS)} to shares")
    for name in SPLITS:
        check_number(ratios, name, "split.ratios", 0.0, 1.0)
    if abs(sum(ratios.values()) - 1.0) > 1e-6:
        raise ParamError("split.ratios", f"must sum to 1, got {sum(ratios.values()):.6g}")
    if ratios["train"] == 0:
        raise ParamError("split.ratios.train", "must be above 0")
    return SplitSettings(split["salt"], dict(ratios))


def load_raft(params: dict[str, Any]) -> RaftSettings:
    return raft_settings(section(params, "raft"), check_seed(params))


def raft_settings(raft: dict[str, Any], seed: int) -> RaftSettings:
    reject_unknown_keys(raft, RAFT_KEYS, "raft")
    check_number(raft, "num_distractors", "raft", 0, 100, integer=True)
    check_number(raft, "p_golden", "raft", 0.0, 1.0)
    check_choice(raft, "distractor_source", "raft", DISTRACTOR_SOURCES)
    check_choice(raft, "omitted_golden_target", "raft", OMITTED_GOLDEN_TARGETS)
    for key in ("abstain_answer", "instruction", "cot_instruction"):
        check_text(raft, key, "raft")
    bm25 = section(raft, "bm25", "raft.")
    reject_unknown_keys(bm25, {"k1", "b", "pool", "terms"}, "raft.bm25")
    check_number(bm25, "k1", "raft.bm25", 0.0, 10.0)
    check_number(bm25, "b", "raft.bm25", 0.0, 1.0)
    check_number(bm25, "pool", "raft.bm25", 1, 10**9, integer=True)
    check_choice(bm25, "terms", "raft.bm25", BM25_TERMS)
    return RaftSettings(**{key: raft[key] for key in RAFT_KEYS - {"bm25"}}, seed=seed,
                        bm25=BM25Settings(bm25["k1"], bm25["b"], bm25["pool"], bm25["terms"]))
