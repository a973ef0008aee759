"""Preference pairs from the train split: the reference answer against rule-based and on-policy rejected sides.

`chosen` is always the record's own target (its chain of thought and answer). Each source in
prefer.sources adds at most one rejected side per record. Nothing is dropped silently: per source, every
record it looked at is counted as kept, skipped (with the rule's reason), equal (both sides the same after
KorQuAD normalisation) or duplicate (another source already gave this record the same rejected side), and
the counts add up to the records.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.formats import completion
from koraft.evaluation.answers import extract_answer
from koraft.evaluation.metrics import char_f1, exact_match, korquad_normalize
from koraft.preference.config import OnPolicySettings, PairSettings
from koraft.preference.rejects import Skipped, rule_rejects


@dataclass
class PairSet:
    pairs: list[dict[str, Any]] = field(default_factory=list)  # id, source, chosen, rejected
    counts: dict[str, Counter] = field(default_factory=dict)  # source -> records, kept, skipped, equal, duplicate
    reasons: dict[str, Counter] = field(default_factory=dict)  # source -> skip reason -> records

    def report(self) -> dict[str, Any]:
        sources = {source: {**{key: counts[key] for key in ("records", "kept", "skipped", "equal", "duplicate")},
                            "skip_reasons": dict(sorted(self.reasons[source].items()))}
                   for source, counts in self.counts.items()}
        return {"pairs": len(self.pairs), "records": len({pair["id"] for pair in self.pairs}), "sources": sources}


def on_policy_sample(rows: list[dict[str, Any]], settings: OnPolicySettings, seed: int) -> list[dict[str, Any]]:
    """The train records the SFT model answers: a seeded sample, in split order."""
    if settings.records is None or settings.records >= len(rows):
        return list(rows)
    picked = sorted(random.Random(seed).sample(range(len(rows)), settings.records))
    return [rows[index] for index in picked]


def policy_reject(record: dict[str, Any], output: str, f1_below: float) -> str | Skipped:
    """The SFT model's own output as a rejected side, when its answer is wrong: EM 0 and F1 below f1_below."""
    answer = extract_answer(output, expects_reasoning=bool(record.get("cot"))).text
    if exact_match(answer, record["answer"]) or char_f1(answer, record["answer"]) >= f1_below:
        return Skipped(f"the model's answer is right (EM 1 or F1 >= {f1_below})")
    if not output.strip():
        return Skipped("the model's output is empty")
    return output.strip()


def build_pairs(rows: list[dict[str, Any]], settings: PairSettings, outputs: dict[str, str] | None = None
                ) -> PairSet:
    """Pairs for every source in settings.sources; `outputs` holds the SFT model's answers by record id."""
    result = PairSet()
    for source in settings.sources:
        result.counts[source], result.reasons[source] = Counter(), Counter()
    seen: set[tuple[str, str]] = set()
    for record in rows:
        chosen = completion(record)
        for source in settings.sources:
            if source == "on_policy":
                if record["id"] not in (outputs or {}):
                    continue  # not in the on-policy sample
                rejected = policy_reject(record, outputs[record["id"]], settings.on_policy.f1_below)
            else:
                rejected = rule_rejects(record, source, settings.seed, settings.abstain_answer)
            counts = result.counts[source]
            counts["records"] += 1
            if isinstance(rejected, Skipped):
                counts["skipped"] += 1
                result.reasons[source][rejected.reason] += 1
                continue
            key = (record["id"], korquad_normalize(rejected))
            if korquad_normalize(rejected) == korquad_normalize(chosen):
                counts["equal"] += 1
            elif key in seen:
                counts["duplicate"] += 1
            else:
                seen.add(key)
                counts["kept"] += 1
                result.pairs.append({"id": record["id"], "source": source, "chosen": chosen, "rejected": rejected})
    return result


def answer_sample(rows: list[dict[str, Any]], settings: PairSettings,
                  adapter: Path) -> tuple[dict[str, str], dict[str, int], float]:
    """The SFT model's greedy outputs on the on-policy sample, prompted as evaluate prompts a test record
    (the prompt budget is max_length - max_new_tokens, and the reference plays no part in it), their counts,
    and the generation's seconds: apart, because the counts go into a cached output and a clock would make
    it differ on every run."""
    import torch

    from koraft.inference.decoding import greedy_generate
    from koraft.models.chat import stop_token_ids
    from koraft.models.samples import SampleTokenizer, build_prompts
    from koraft.models.trained import load_trained, load_trained_tokenizer, trained_model_info

    sample = on_policy_sample(rows, settings.on_policy, settings.seed)
    manifest, resolved = trained_model_info(adapter)
    quantization = settings.train.quantization if manifest["method"] == "qlora" else None
    model = load_trained(adapter, quantization, key="prefer.on_policy")
    if torch.cuda.is_available():
        model.to("cuda")
    tokenizer = load_trained_tokenizer(adapter, resolved)
    encoder = SampleTokenizer(tokenizer, resolved.family, manifest["system_prompt"])
    budget = settings.train.max_length - settings.on_policy.max_new_tokens
    fitted = build_prompts(sample, encoder, budget)
    generated = greedy_generate(model, tokenizer, fitted.prompts, stop_token_ids(model, tokenizer, resolved.family),
                                settings.on_policy.max_new_tokens, settings.on_policy.batch_size)
    outputs = dict(zip(fitted.ids, generated.texts, strict=True))
    counts = {"records": len(sample), "answered": len(outputs), "unfit": fitted.counts["prompts_unfit"],
              "cut_at_token_limit": generated.stopped.count(False)}
    return outputs, counts, generated.seconds
