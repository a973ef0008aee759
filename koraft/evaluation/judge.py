"""An LLM judge over any OpenAI-compatible endpoint: where no single reference string is right.

Two protocols, as MT-Bench defines them and KoMT-Bench (LG AI Research) carries them to Korean:
- single-answer grading: the judge scores one system's answer 1-10 against the reference, ending its
  reply with `[[N]]`. An answer whose Hangul share is below `min_hangul_share` scores 1 without a call
  (KoMT-Bench's penalty for an answer that is not Korean), as does an empty one;
- pairwise: the judge sees two systems' answers and ends with `[[A]]`, `[[B]]` or `[[C]]` (a tie). Each
  pair is asked in both orders to cancel position bias; when the two verdicts disagree the record is a
  tie, and the share that agree is the judge's position-swap consistency.
A reply with no verdict, or one the endpoint refused, is counted, never scored. Every call is kept in the
same content-hashed call cache as the generate stage's teacher (koraft.inference.call_cache), so a rerun
pays for new prompts only; requests run bounded, with the endpoints' retries and timeouts (eval.requests).
Agreement with the lexical metrics is reported: the Spearman correlation of the scores with F1, and how
often a pairwise winner is the one with the higher F1.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from koraft.core.config import check_number, check_text, reject_unknown_keys, section
from koraft.core.errors import KoraftError, ParamError
from koraft.core.hangul import hangul_share
from koraft.inference.endpoints import Endpoint, check_base_url, check_key_env

KEYS = {"endpoint", "systems", "pairs", "questions", "max_tokens", "min_hangul_share", "system_prompt",
        "single_prompt", "pairwise_prompt"}
PLACEHOLDERS = {"single_prompt": ("question", "reference", "answer"),
                "pairwise_prompt": ("question", "reference", "answer_a", "answer_b")}
SCORE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


@dataclass(frozen=True)
class JudgeSettings:
    endpoint: Endpoint
    systems: tuple[str, ...]  # each graded one answer at a time
    pairs: tuple[tuple[str, str], ...]  # (before, after): judged against each other in both orders
    questions: int | None  # a seeded sample of the test records; None: all
    max_tokens: int
    min_hangul_share: float
    system_prompt: str
    single_prompt: str
    pairwise_prompt: str


def check_judge(settings: dict[str, Any], evaluated: tuple[str, ...]) -> JudgeSettings | None:
    """eval.judge; None while its endpoint is null (the default: a judge is a model koraft cannot ship)."""
    judge = section(settings, "judge", "eval.")
    reject_unknown_keys(judge, KEYS, "eval.judge")
    entry = judge.get("endpoint")
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ParamError("eval.judge.endpoint", f"must be null or a mapping with base_url and model, got {entry!r}")
    reject_unknown_keys(entry, {"base_url", "model", "api_key_env"}, "eval.judge.endpoint")
    check_text(entry, "model", "eval.judge.endpoint")
    base_url = check_base_url(str(entry.get("base_url")), "eval.judge.endpoint.base_url")
    check_key_env(entry.get("api_key_env"), "eval.judge.endpoint.api_key_env")
    if entry.get("api_key_env") and not os.environ.get(entry["api_key_env"]):
        raise ParamError("eval.judge.endpoint.api_key_env", f"names {entry['api_key_env']}, which is not set in "
                                                            f"this environment: export it before the run")
    systems, pairs = judge.get("systems"), judge.get("pairs")
    if not isinstance(systems, list) or len(set(systems)) != len(systems) or any(
            name not in evaluated for name in systems):
        raise ParamError("eval.judge.systems", f"a list of distinct evaluated systems ({', '.join(evaluated)}), "
                                               f"got {systems!r}")
    if not isinstance(pairs, list) or any(
            not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1] or any(n not in evaluated for n in pair)
            for pair in pairs):
        raise ParamError("eval.judge.pairs", f"a list of [before, after] pairs of evaluated systems "
                                             f"({', '.join(evaluated)}), got {pairs!r}")
    if judge.get("questions") is not None:
        check_number(judge, "questions", "eval.judge", 1, 10**7, integer=True)
    check_number(judge, "max_tokens", "eval.judge", 1, 32768, integer=True)
    check_number(judge, "min_hangul_share", "eval.judge", 0.0, 1.0)
    if not isinstance(judge.get("system_prompt"), str):
        raise ParamError("eval.judge.system_prompt", f"must be a string ('' for none), got "
                                                     f"{judge.get('system_prompt')!r}")
    for key, names in PLACEHOLDERS.items():
        check_text(judge, key, "eval.judge")
        check_template(judge[key], names, f"eval.judge.{key}")
    return JudgeSettings(
        endpoint=Endpoint("judge", base_url, entry["model"], entry.get("api_key_env")), systems=tuple(systems),
        pairs=tuple(tuple(pair) for pair in pairs), questions=judge.get("questions"),
        max_tokens=judge["max_tokens"], min_hangul_share=float(judge["min_hangul_share"]),
        system_prompt=judge["system_prompt"], single_prompt=judge["single_prompt"],
        pairwise_prompt=judge["pairwise_prompt"])


def check_template(template: str, names: tuple[str, ...], key: str) -> None:
    """A prompt's {placeholders} are exactly `names`: a typo would otherwise fail on the first record."""
    try:
        found = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as exc:
        raise ParamError(key, f"is not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
    if found != set(names):
        raise ParamError(key, f"must use exactly the placeholders {', '.join('{' + n + '}' for n in names)}, "
                              f"got {', '.join('{' + n + '}' for n in sorted(found)) or 'none'}")


def parse_score(reply: str) -> float | None:
    """The last `[[N]]` (or `[[N/10]]`) of a reply, when it is within 1-10."""
    found = SCORE.findall(reply)
    return float(found[-1]) if found and 1 <= float(found[-1]) <= 10 else None


def parse_verdict(reply: str) -> str | None:
    """A, B or C (a tie) from `[[A]]`...; None when there is none, or two different ones."""
    found = set(VERDICT.findall(reply))
    return found.pop() if len(found) == 1 else None


def pair_outcome(first: str | None, second: str | None) -> tuple[str, bool] | None:
    """(winner, whether the two orders agreed) of a pair asked twice: `first` with (before, after) as (A, B),
    `second` swapped. The winner is 'before', 'after' or 'tie', and a disagreement is a tie; None when
    either verdict is missing."""
    if first is None or second is None:
        return None
    one = {"A": "before", "B": "after", "C": "tie"}[first]
    two = {"A": "after", "B": "before", "C": "tie"}[second]
    return (one if one == two else "tie"), one == two


def sample_records(ids: list[str], questions: int | None, seed: int) -> list[int]:
    """Indices of the judged test records: all, or a seeded sample kept in test order."""
    if questions is None or questions >= len(ids):
        return list(range(len(ids)))
    return sorted(np.random.default_rng([seed, 0x4A55]).choice(len(ids), size=questions, replace=False).tolist())


def ask_judge(prompts: dict[str, list[dict[str, str]]], settings: JudgeSettings, requests: dict[str, Any],
              cache_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(call key -> reply, call key -> failure) for every prompt: cached replies first, the rest asked."""
    from koraft.inference.call_cache import CallCache, Reply, call_key
    from koraft.inference.endpoints import answer_all

    identity = {"backend": "judge", "base_url": settings.endpoint.base_url, "model": settings.endpoint.model}
    sampling = {"temperature": 0.0, "max_tokens": settings.max_tokens}
    keys = {name: call_key(identity, messages, sampling) for name, messages in prompts.items()}
    cache = CallCache(cache_path)
    try:
        cached = {name: cache.get(key) for name, key in keys.items() if cache.get(key) is not None}
        replies = {name: reply.text for name, reply in cached.items() if not reply.refused}
        failures = {name: reply.refused for name, reply in cached.items() if reply.refused}
        missing = {name: prompts[name] for name in prompts if name not in cached}
        if missing:
            asked = answer_all(settings.endpoint, missing, settings.max_tokens, requests)
            for name, text in asked.outputs.items():
                cache.put(keys[name], Reply(text, 0, asked.new_tokens.get(name, 0), asked.stopped.get(name, True)))
                replies[name] = text
            for name, reason in asked.refused.items():  # a refusal is the judge's answer: kept, never asked again
                cache.put(keys[name], Reply("", 0, 0, True, refused=reason))
            failures.update(asked.failures)
    finally:
        cache.close()
    return replies, failures


def judge(rows: list[dict], answers: dict[str, list[str]], f1: dict[str, np.ndarray], settings: JudgeSettings,
          requests: dict[str, Any], cache_path: Path, seed: int) -> tuple[dict[str, Any], dict[str, dict]]:
    """(metrics/eval.json's `judge`, record id -> its judgements for the review file)."""
    for name in {*settings.systems, *(n for pair in settings.pairs for n in pair)}:
        if name not in answers:
            raise KoraftError(f"eval.judge: {name!r} was not evaluated in this run ({', '.join(answers)})")
    chosen = sample_records([row["id"] for row in rows], settings.questions, seed)
    system = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    prompts, fixed = {}, {}  # call name -> messages; (system, index) -> a score given without a call
    for index in chosen:
        row = rows[index]
        for name in settings.systems:
            answer = answers[name][index]
            share = hangul_share(answer)
            if not answer.strip() or (share is not None and share < settings.min_hangul_share):
                fixed[(name, index)] = "empty" if not answer.strip() else "not_korean"
                continue
            prompts[f"single|{name}|{index}"] = system + [{"role": "user", "content": settings.single_prompt.format(
                question=row["question"], reference=row["answer"], answer=answer)}]
        for before, after in settings.pairs:
            for order, (a, b) in (("ab", (before, after)), ("ba", (after, before))):
                prompts[f"pair|{before}|{after}|{index}|{order}"] = system + [{"role": "user", "content":
                    settings.pairwise_prompt.format(question=row["question"], reference=row["answer"],
                                                    answer_a=answers[a][index], answer_b=answers[b][index])}]
    replies, failures = ask_judge(prompts, settings, requests, cache_path)
    review: dict[str, dict] = {rows[index]["id"]: {} for index in chosen}
    report: dict[str, Any] = {"model": settings.endpoint.model, "questions": len(chosen), "single": {},
                              "pairwise": {}}
    graded_scores, graded_f1 = [], []
    for name in settings.systems:
        scores, counts = [], {"unparsed": 0, "failed": 0, "empty": 0, "not_korean": 0}
        for index in chosen:
            key = f"single|{name}|{index}"
            if (name, index) in fixed:
                counts[fixed[(name, index)]] += 1
                score = 1.0
            elif key in failures:
                counts["failed"] += 1
                continue
            else:
                score = parse_score(replies[key])
                if score is None:
                    counts["unparsed"] += 1
                    continue
            scores.append(score)
            graded_scores.append(score)
            graded_f1.append(float(f1[name][index]))
            review[rows[index]["id"]][name] = score
        report["single"][name] = {"mean_score": round(float(np.mean(scores)), 3) if scores else None,
                                  "scored": len(scores), **counts}
    for before, after in settings.pairs:
        label = f"{after}_vs_{before}"
        outcomes, counts, agreeing, asked_twice, matches, decided = [], {"unparsed": 0, "failed": 0}, 0, 0, 0, 0
        for index in chosen:
            keys = [f"pair|{before}|{after}|{index}|{order}" for order in ("ab", "ba")]
            if any(key in failures for key in keys):
                counts["failed"] += 1
                continue
            outcome = pair_outcome(*(parse_verdict(replies[key]) for key in keys))
            if outcome is None:
                counts["unparsed"] += 1
                continue
            winner, consistent = outcome
            asked_twice += 1
            agreeing += consistent
            outcomes.append(winner)
            review[rows[index]["id"]][label] = {"before": before, "after": after}.get(winner, "tie")
            lexical = float(f1[after][index]) - float(f1[before][index])
            if winner != "tie" and lexical != 0:
                decided += 1
                matches += (winner == "after") == (lexical > 0)
        report["pairwise"][label] = {
            "judged": len(outcomes), **counts,
            **{key: round(outcomes.count(side) / len(outcomes), 4) if outcomes else None
               for key, side in ((f"{after}_wins", "after"), ("ties", "tie"), (f"{before}_wins", "before"))},
            "position_consistency": round(agreeing / asked_twice, 4) if asked_twice else None,
            "agrees_with_f1": round(matches / decided, 4) if decided else None}
    report["agreement"] = {"spearman_score_f1": spearman(graded_scores, graded_f1), "pairs": len(graded_scores)}
    return report, review


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant or there are fewer than 3 pairs."""
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return round(float(spearmanr(a, b).statistic), 4)
