"""Evaluation cost: batched generation vs a one-at-a-time loop, and scoring time for many predictions.

    python benchmarks/eval_throughput.py [--samples 48] [--max-new-tokens 32] [--batch 16] [--predictions 1000]

Generation: the tiny-m preset (random weights) answers RAFT-shaped prompts of varied length
with koraft's synthetic_corpus(), once with left-padded batches and once one prompt at a time (what
a notebook loop over `model.generate` does). Stop tokens are switched off so both produce
exactly `max_new_tokens` per prompt: tokens/s compares like with like. On CUDA the model is
random weights of the EXAONE-4.0-1.2B architecture instead.

Scoring: `--predictions` synthetic Korean answers (right, paraphrased or wrong) scored with
every metric of the evaluate stage (Kiwi ROUGE, BLEU, chrF, KorQuAD EM/F1, BERTScore and
cosine with the packaged encoder) and the paired bootstrap of the main metrics.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import EXAONE_4_1_2B, synthetic_samples  # noqa: E402


def build_generator(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Exaone4Config

    from koraft.models.tiny import build_tiny_model

    if torch.cuda.is_available():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(Exaone4Config(**EXAONE_4_1_2B), dtype=torch.bfloat16).cuda()
        return model.eval(), None, EXAONE_4_1_2B["vocab_size"]
    build_tiny_model("tiny-m", folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), tokenizer, len(tokenizer)


class _Pad:
    """The two tokenizer attributes synthetic_corpus() reads, for a model built without one."""

    pad_token_id = 0

    @staticmethod
    def decode(ids, skip_special_tokens=True) -> str:
        return " ".join(map(str, ids))


def bench_generation(args: argparse.Namespace) -> None:
    from koraft.inference.decoding import greedy_generate

    with tempfile.TemporaryDirectory() as folder:
        model, tokenizer, vocab = build_generator(Path(folder))
        samples = synthetic_samples(args.samples, args.prompt_length, vocab, seed=0)
        prompts = [sample["input_ids"] for sample in samples]
        tokenizer = tokenizer or _Pad()
        greedy_generate(model, tokenizer, prompts[:2], [], 4, 2)  # warm-up
        rows = []
        for label, batch in (("one at a time", 1), (f"batched ({args.batch})", args.batch)):
            result = greedy_generate(model, tokenizer, prompts, [], args.max_new_tokens, batch)
            tokens = sum(result.new_tokens)
            rows.append((label, result.seconds, tokens / result.seconds, result.seconds / len(prompts)))
    print(f"generation: {args.samples} prompts of {args.prompt_length // 3}-{args.prompt_length} tokens, "
          f"{args.max_new_tokens} new tokens each, greedy")
    print("| loop | seconds | generated tokens/s | latency per sample |\n|---|---|---|---|")
    for label, seconds, rate, latency in rows:
        print(f"| {label} | {seconds:.2f} | {rate:,.0f} | {latency * 1000:.1f} ms |")
    print(f"speed-up of batching: {rows[0][1] / rows[1][1]:.2f}x\n")


def synthetic_predictions(count: int) -> tuple[list[str], list[str]]:
    from koraft.data.synth import synthetic_corpus

    qas = [qa for _, doc_qas in synthetic_corpus(count // 3 + 1, seed=5) for qa in doc_qas][:count]
    rng = random.Random(0)
    predictions = []
    for qa in qas:
        roll = rng.random()
        predictions.append(qa.span if roll < 0.4 else qa.sentence if roll < 0.7 else rng.choice(qas).answer)
    return predictions, [qa.answer for qa in qas]


def bench_scoring(args: argparse.Namespace) -> None:
    from koraft.evaluation.bootstrap import mean_of, paired_difference
    from koraft.evaluation.embeddings import AUTO_COSINE, BertScore, CosineSimilarity, resolve_encoder
    from koraft.evaluation.metrics import LexicalScorer

    predictions, references = synthetic_predictions(args.predictions)
    timings = []

    def timed(label: str, work):
        started = time.perf_counter()
        value = work()
        timings.append((label, time.perf_counter() - started))
        return value

    encoder = resolve_encoder("auto", "tiny", AUTO_COSINE, "eval.cosine")  # the packaged all-MiniLM-L6-v2
    lexical = timed("load Kiwi + sacrebleu", LexicalScorer)
    scores = timed("EM, F1, ROUGE (Kiwi + characters), BLEU, chrF", lambda: lexical.score(predictions, references))
    bertscore = timed("load BERTScore encoder", lambda: BertScore(encoder, 6, 64))
    timed("BERTScore", lambda: bertscore.score(predictions, references))
    cosine = timed("load sentence encoder", lambda: CosineSimilarity(encoder, 64))
    timed("cosine", lambda: cosine.score(predictions, references))
    shifted = {name: values[::-1] for name, values in scores.per_sample.items()}
    timed("paired bootstrap, 1,000 resamples x 5 per-sample metrics", lambda: [
        paired_difference(mean_of(scores.per_sample[m]), mean_of(shifted[m]), len(predictions), 1000, 0)
        for m in ("f1", "exact_match", "rougeL", "rougeL_char", "rouge1")])
    timed("paired bootstrap, 1,000 resamples of corpus BLEU", lambda: paired_difference(
        lambda i: lexical.corpus_score("bleu", scores.corpus_stats["bleu"][i]),
        lambda i: lexical.corpus_score("bleu", scores.corpus_stats["bleu"][i[::-1]]), len(predictions), 1000, 0))
    print(f"scoring {len(predictions):,} predictions (mean reference {sum(map(len, references)) / len(references):.1f} "
          f"characters)")
    print("| step | seconds |\n|---|---|")
    for label, seconds in timings:
        print(f"| {label} | {seconds:.2f} |")
    print(f"| total | {sum(seconds for _, seconds in timings):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--prompt-length", type=int, default=352)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--predictions", type=int, default=1000)
    args = parser.parse_args()
    bench_generation(args)
    bench_scoring(args)


if __name__ == "__main__":
    main()
