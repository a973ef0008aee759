"""The model variants answer the test split in-process: base, finetuned, preferred, student_base and distilled.

Each renders the test records through its own chat template exactly as training did (same system prompt,
same document dropping), fits each prompt to the prompt budget, a budget the reference answer plays no
part in, and answers greedily (koraft.inference.decoding).
"""

from __future__ import annotations

import gc
import time

from koraft.core.errors import KoraftError
from koraft.evaluation.config import EvalSettings
from koraft.evaluation.loading import load_named_variant
from koraft.evaluation.systems import EvalPaths, SystemOutput
from koraft.models.samples import SampleTokenizer, build_prompts


def load_variant(name: str, settings: EvalSettings, paths: EvalPaths):
    """(model, tokenizer, resolved model, system prompt, folder with trained weights or None)."""
    if name == "preferred" and paths.preferred is None:
        raise KoraftError("eval.variants.preferred: no preferred adapter was given (the evaluate stage's "
                          "--preferred); set eval.variants.preferred: false")
    return load_named_variant(name, settings.model, settings.student, settings.system_prompt, paths.tiny_models,
                              {"finetuned": (paths.adapter, "train"), "preferred": (paths.preferred, "prefer"),
                               "distilled": (paths.student, "distill")},
                              f"eval.variants.{name}", f"set eval.variants.{name}: false")


def run_variant(name: str, rows: list[dict], settings: EvalSettings, paths: EvalPaths,
                conditions: dict[str, list[dict]] | None = None,
                held_out: dict[str, list[str]] | None = None) -> SystemOutput:
    """The variant's answers to the test rows, in `.conditions` to each test condition's rows, and in
    `.perplexity` its token losses on each source of held-out text (koraft.evaluation.perplexity).

    Each condition generates on its own, after the test rows: batches mix no conditions, so the test
    rows' answers are the same whether conditions run or not."""
    import torch

    from koraft.core.measure import directory_bytes, peak_memory_mib
    from koraft.models.chat import stop_token_ids

    model, tokenizer, resolved, system_prompt, folder = load_variant(name, settings, paths)
    if torch.cuda.is_available():
        model.to("cuda")
        torch.cuda.reset_peak_memory_stats()
    encoder = SampleTokenizer(tokenizer, resolved.family, system_prompt)
    stops = stop_token_ids(model, tokenizer, resolved.family)
    output = answer(model, tokenizer, encoder, rows, stops, settings)
    # Counted, never used for the prompts: a budget too small for the references caps every score.
    output.long_targets = sum(len(encoder.target(row)[1]) > settings.max_new_tokens for row in rows)
    generated = sum(output.new_tokens.values())
    output.cost = {
        "latency_per_sample_s": round(output.seconds / max(len(output.outputs), 1), 4),
        "generated_tokens_per_s": round(generated / output.seconds, 1) if output.seconds else None,
        "peak_memory_mib": peak_memory_mib(),
        "adapter_bytes": directory_bytes(folder) if folder else 0,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    for condition, condition_rows in (conditions or {}).items():
        output.conditions[condition] = answer(model, tokenizer, encoder, condition_rows, stops, settings)
        output.cost.setdefault("conditions_seconds", {})[condition] = round(output.conditions[condition].seconds, 2)
    if held_out:
        from koraft.evaluation.perplexity import token_losses

        started = time.perf_counter()
        output.perplexity = {source: token_losses(model, tokenizer, texts, settings.perplexity.max_tokens)
                             for source, texts in held_out.items()}
        output.cost["perplexity_seconds"] = round(time.perf_counter() - started, 2)
    del model
    gc.collect()
    return output


def answer(model, tokenizer, encoder: SampleTokenizer, rows: list[dict], stops: list[int], settings: EvalSettings
           ) -> SystemOutput:
    """Rows fitted to the prompt budget and answered greedily."""
    from koraft.inference.decoding import greedy_generate

    fitted = build_prompts(rows, encoder, settings.prompt_budget)
    result = greedy_generate(model, tokenizer, fitted.prompts, stops, settings.max_new_tokens, settings.batch_size)
    kept = fitted.ids
    return SystemOutput(outputs=dict(zip(kept, result.texts, strict=True)),
                        documents=dict(zip(kept, fitted.documents, strict=True)),
                        stopped=dict(zip(kept, result.stopped, strict=True)),
                        new_tokens=dict(zip(kept, result.new_tokens, strict=True)),
                        seconds=result.seconds, unfit=fitted.unfit,
                        prompts=fitted.report(settings.prompt_budget, [len(ids) for ids in fitted.prompts]))
