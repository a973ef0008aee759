"""The pull-request comment: this run's metrics and params against a base revision, as markdown.

    python scripts/pr_comment.py --base origin/main [--head REV] [--plots-url URL] [--out comment.md]

`.github/workflows/pr.yaml` runs it after `dvc repro` on the tiny pipeline and posts the output as
one comment, updated in place on later pushes (the first line is a marker to find it by). The
headline table holds the evaluation metrics per variant with the change; then, per variant, whether
its F1 and EM change is signal or within noise (a paired bootstrap over the records both runs scored,
read from each revision's metrics/eval/predictions.jsonl), and the fine-tuned vs base confidence
interval; the full `dvc metrics diff` and `dvc params diff` follow, folded.
Without --head the workspace is compared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from koraft.evaluation.labels import COMPARISONS, METRIC_LABELS, VARIANTS
from koraft.publish.noise import change_lines
from koraft.publish.report import conditions_table, experiment_revisions, perplexity_table, read_text

MARKER = "<!-- koraft-metrics -->"
EVAL = "metrics/eval.json"
PREDICTIONS = "metrics/eval/predictions.jsonl"
HEADLINE = {metric: METRIC_LABELS[metric] for metric in ("f1", "exact_match", "rougeL", "chrf", "bertscore_f1",
                                                          "cosine")}


def dvc(*args: str) -> str:
    return subprocess.run(["dvc", *args], capture_output=True, text=True, check=True).stdout


def number(value) -> str:
    return "–" if value is None else f"{value:.4g}"


def headline(diff: dict) -> list[str]:
    evaluation = diff.get(EVAL, {})
    lines = ["| variant | " + " | ".join(HEADLINE.values()) + " |", "|---|" + "---|" * len(HEADLINE)]
    for variant in VARIANTS:
        cells = []
        for metric in HEADLINE:
            entry = evaluation.get(f"{variant}.{metric}")
            if entry is None:
                cells.append("–")
                continue
            change = entry.get("diff")
            moved = f" ({change:+.4g})" if isinstance(change, float | int) and change else ""
            cells.append(f"{number(entry.get('new'))}{moved}")
        if any(cell != "–" for cell in cells):
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def intervals(diff: dict) -> list[str]:
    evaluation, lines = diff.get(EVAL, {}), []
    confidence = evaluation.get("scoring.bootstrap.confidence", {}).get("new", 0.95)
    for label in COMPARISONS:
        key = f"comparisons.{label}.f1"
        low, high = evaluation.get(f"{key}.low", {}).get("new"), evaluation.get(f"{key}.high", {}).get("new")
        delta = evaluation.get(f"{key}.delta", {}).get("new")
        if delta is not None:
            verdict = "ahead" if low is not None and low > 0 else "behind" if high is not None and high < 0 else \
                "within noise (the interval covers 0)"
            lines.append(f"- {label.replace('_vs_', ' vs ').replace('_', ' ')}: F1 {delta:+.4f}, {confidence:.0%} CI "
                         f"[{low:+.4f}, {high:+.4f}]: {verdict}")
    return lines


def commit_of(revision: str | None) -> str | None:
    """A git revision as git knows it; a DVC experiment name (what `dvc metrics diff` also takes) resolved."""
    if revision is None:
        return None
    known = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
                           capture_output=True, text=True)
    return revision if known.returncode == 0 else experiment_revisions([revision])[revision]


def predictions(revision: str | None) -> list[dict]:
    """A revision's per-record scores (the workspace's without one); [] when it has none."""
    text = read_text(PREDICTIONS, commit_of(revision))
    return [json.loads(line) for line in text.splitlines() if line.strip()] if text else []


def noise(base: str, head: str | None) -> list[str]:
    """Per variant: is its F1 and EM change against the base signal, or within noise?"""
    old, new = predictions(base), predictions(head)
    bootstrap = json.loads(read_text(EVAL, commit_of(head)) or "{}").get("scoring", {}).get("bootstrap")
    if not old or not new or not bootstrap:
        return ["- no per-record predictions on one side: signal and noise cannot be told apart"]
    return change_lines(old, new, VARIANTS, bootstrap, HEADLINE) or [
        "- no test record was scored by both runs: the test split changed, so no paired comparison"]


def comment(base: str, head: str | None, plots_url: str | None = None) -> str:
    revs = [base, head] if head else [base]  # one revision: compared with the workspace
    diff = json.loads(dvc("metrics", "diff", *revs, "--all", "--json") or "{}")
    changed = dvc("metrics", "diff", *revs, "--md").strip() or "No metric changed."
    params = dvc("params", "diff", *revs, "--md").strip() or "No param changed."
    parts = [MARKER, f"## koraft: `{head or 'this branch'}` against `{base}`", "", "Evaluation on the test split "
             "(BLEU and chrF 0-100, the rest 0-1; change against the base in brackets):", "", *headline(diff), ""]
    parts += ["Signal or noise, per variant (paired bootstrap against the base's own predictions):", "",
              *noise(base, head), "", *intervals(diff)]
    evaluation = json.loads(read_text(EVAL, commit_of(head)) or "{}")
    perplexity = perplexity_table(evaluation)
    if perplexity:
        parts += ["", "Held-out perplexity (a rise beyond noise is forgetting), this run:", "", *perplexity]
    conditions = conditions_table(evaluation)
    if conditions:
        parts += ["", "Test conditions (RAFT's protocol: oracle documents, the retriever's top k, none), this run:",
                  "", *conditions]
    if plots_url:
        parts += ["", f"Loss curves and plots: [dvc plots diff]({plots_url}) (artifact `plots`)."]
    parts += ["", "<details><summary>Params changed</summary>", "", params, "", "</details>", "",
              "<details><summary>Every metric that changed</summary>", "", changed, "", "</details>", ""]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--head")
    parser.add_argument("--plots-url")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = comment(args.base, args.head, args.plots_url)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
