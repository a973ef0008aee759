"""Held-out perplexity: did fine-tuning cost the model its Korean? The forgetting signal that runs offline.

Each variant in eval.perplexity.variants scores, token by token, Korean text it was never trained on:
- `general`: the 120 everyday sentences of koraft/evaluation/data/korean_pairs.jsonl, written for the
  project on 40 topics (weather, banks, football...), far from the training documents;
- `test_documents`: the test split's documents (one text per doc_id, as the retriever sees them), never in
  a training prompt: the same domain, unseen text.
Each text is read alone, from the tokenizer's <bos>, without a chat template: the plain language-model
loss a pretrained model was trained on. A variant's loss is the mean negative log-likelihood per token over
all texts (nats), its perplexity exp of that. A comparison (fine-tuned vs base, distilled vs student base,
which share a tokenizer) gets a paired bootstrap interval of the loss difference over texts; an interval
above 0 is a rise beyond noise, which the report and the pull-request comment flag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from koraft.evaluation.bootstrap import paired_difference
from koraft.evaluation.labels import COMPARISONS

SOURCES = ("general", "test_documents")
BATCH_TOKENS = 2048  # padded tokens per forward pass: Gemma's 262k-entry logits take 2 GiB at float32


@dataclass(frozen=True)
class PerplexitySettings:
    variants: tuple[str, ...]  # model variants that score the texts
    sources: tuple[str, ...]  # of SOURCES
    max_tokens: int  # each text is cut to this many tokens, <bos> included


@dataclass(frozen=True)
class TokenLosses:
    """Per text: the summed negative log-likelihood (nats) of its tokens after the first, and their count."""

    nll: np.ndarray
    tokens: np.ndarray

    def loss(self, indices: np.ndarray | None = None) -> float:
        indices = np.arange(len(self.nll)) if indices is None else indices
        return float(self.nll[indices].sum() / max(self.tokens[indices].sum(), 1))


def held_out_texts(split_records: list[dict[str, Any]], sources: tuple[str, ...]) -> dict[str, list[str]]:
    """Source -> its texts, in a fixed order."""
    from koraft.evaluation.retrieval import split_corpus
    from koraft.evaluation.validity import korean_sentences

    texts = {}
    if "general" in sources:
        texts["general"] = [row[key] for row in korean_sentences() for key in ("sentence", "paraphrase", "unrelated")]
    if "test_documents" in sources:
        texts["test_documents"] = split_corpus(split_records).texts
    return texts


def token_losses(model, tokenizer, texts: list[str], max_tokens: int) -> TokenLosses:
    """Each text's summed token loss under the model, batched by length (right-padded, masked)."""
    import torch

    encoded = [tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
               for text in texts]
    if tokenizer.bos_token_id is not None and any(ids[:1] != [tokenizer.bos_token_id] for ids in encoded):
        encoded = [ids if ids[:1] == [tokenizer.bos_token_id] else [tokenizer.bos_token_id, *ids][:max_tokens]
                   for ids in encoded]
    nll, counts = np.zeros(len(texts)), np.array([max(len(ids) - 1, 0) for ids in encoded])
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    start = 0
    while start < len(order):
        width = len(encoded[order[start]])
        rows = order[start:start + max(BATCH_TOKENS // max(width, 1), 1)]
        start += len(rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, index in enumerate(rows):
            ids[row, :len(encoded[index])] = torch.tensor(encoded[index])
            mask[row, :len(encoded[index])] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        labels = ids[:, 1:].to(device).masked_fill(mask[:, 1:].to(device) == 0, -100)
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none",
                                                   ignore_index=-100)
        nll[rows] = losses.double().sum(dim=1).cpu().numpy()
    return TokenLosses(nll, counts)


def perplexity_report(losses: dict[str, dict[str, TokenLosses]], texts: dict[str, list[str]],
                      bootstrap: dict[str, Any]) -> dict[str, Any]:
    """metrics/eval.json's `perplexity`: per source, each variant's loss and perplexity, and the comparisons.

    `losses`: variant -> source -> its TokenLosses."""
    report: dict[str, Any] = {}
    for source, source_texts in texts.items():
        block: dict[str, Any] = {"texts": len(source_texts)}
        for name, by_source in losses.items():
            loss = by_source[source].loss()
            block[name] = {"loss": round(loss, 4), "perplexity": round(math.exp(loss), 3),
                           "tokens": int(by_source[source].tokens.sum())}
        for label, (before, after) in COMPARISONS.items():
            if before in losses and after in losses:
                a, b = losses[before][source], losses[after][source]
                difference = paired_difference(a.loss, b.loss, len(source_texts), bootstrap["resamples"],
                                               bootstrap["seed"], bootstrap["confidence"])
                block[label] = {"loss": difference.as_dict(), "perplexity_ratio": round(math.exp(difference.delta), 4),
                                "rose": difference.low > 0}
        report[source] = block
    return report


def rise_warnings(report: dict[str, Any]) -> list[str]:
    """One line per comparison whose held-out loss rose beyond its bootstrap interval."""
    lines = []
    for source, block in report.items():
        if not isinstance(block, dict):
            continue
        for label, (before, after) in COMPARISONS.items():
            comparison = block.get(label)
            if comparison and comparison["rose"]:
                loss = comparison["loss"]
                lines.append(f"perplexity on {source.replace('_', ' ')}: {after} {block[after]['perplexity']} against "
                             f"{before} {block[before]['perplexity']} (loss {loss['delta']:+} nats per token, interval "
                             f"{loss['low']:+} to {loss['high']:+}): training raised the loss on text it never saw")
    return lines
