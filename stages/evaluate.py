"""evaluate: answer the test split with each variant (or score eval.predictions_file), compare them.

Outputs: metrics/eval.json (every metric per variant, split by golden document present/absent,
reasoning checks, cost, bootstrap intervals of fine-tuned vs base and distilled vs student base),
metrics/eval/predictions.jsonl (question, reference, each variant's output and scores), and
metrics/eval/variants.json (the headline metrics per variant, for `dvc plots`).
"""

from koraft.cli import run_stage
from koraft.evaluate import evaluate, systems, variant_rows
from koraft.jsonl import read_jsonl, write_json, write_jsonl
from koraft.params import load_params

TEST = "data/split/test.jsonl"
METRICS = "metrics/eval.json"
PREDICTIONS = "metrics/eval/predictions.jsonl"
VARIANT_PLOT = "metrics/eval/variants.json"


def main() -> None:
    metrics, review = evaluate(list(read_jsonl(TEST)), load_params())
    write_json(METRICS, metrics)
    write_jsonl(PREDICTIONS, review)
    write_json(VARIANT_PLOT, variant_rows(metrics))
    for name in systems(metrics):
        values = metrics[name]
        print(f"evaluate: {name}: F1 {values['f1']}, EM {values['exact_match']}, ROUGE-L {values['rougeL']}, "
              f"chrF {values['chrf']}, BERTScore-F1 {values['bertscore_f1']}, cosine {values['cosine']}")
    confidence = round(metrics["scoring"]["bootstrap"]["confidence"] * 100)
    for label, comparison in metrics["comparisons"].items():
        f1 = comparison["f1"]
        print(f"evaluate: {label}: F1 {f1['delta']:+} ({confidence}% CI {f1['low']:+} to {f1['high']:+})")
    for warning in metrics.get("warnings", []):
        print(f"evaluate: warning: {warning}")


if __name__ == "__main__":
    run_stage("evaluate", main)
