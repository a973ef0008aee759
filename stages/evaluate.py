"""evaluate: answer the test split with each variant (or score eval.predictions_file), compare them.

Outputs: the metrics file (every metric per variant, split by golden document present/absent, reasoning
checks, bootstrap intervals of fine-tuned vs base and distilled vs student base), the predictions
for review (question, reference, each variant's output and scores) and the headline metrics per variant,
for `dvc plots`, and
the cost of each variant (latency, tokens/s, peak memory, adapter size), apart from the compared metrics.
"""

from koraft.core.cli import run_stage, stage_paths
from koraft.core.config import load_params
from koraft.core.jsonl import read_jsonl, write_json, write_jsonl
from koraft.evaluation.condition_scores import condition_points
from koraft.evaluation.config import load_eval
from koraft.evaluation.evaluate import evaluate
from koraft.evaluation.labels import systems, variant_rows
from koraft.evaluation.systems import EvalPaths

OPTIONS = ("test", "split_test", "base_models", "adapter", "preferred", "student", "exports", "predictions_dir",
           "metrics", "predictions", "variants", "conditions", "cost", "judge_calls")


def main() -> None:
    args = stage_paths("evaluate", *OPTIONS)
    settings = load_eval(load_params())
    paths = EvalPaths(adapter=args.adapter, student=args.student, tiny_models=args.base_models,
                      predictions=args.predictions_dir, exports=args.exports, judge_calls=args.judge_calls,
                      preferred=args.preferred)
    args.judge_calls.parent.mkdir(parents=True, exist_ok=True)
    args.judge_calls.touch()  # a declared output, empty until a judge is set
    metrics, review = evaluate(list(read_jsonl(args.test)), settings, paths, list(read_jsonl(args.split_test)))
    # timings differ run to run: kept out of the compared metrics
    write_json(args.cost, {name: metrics[name].pop("cost") for name in systems(metrics) if "cost" in metrics[name]})
    write_json(args.metrics, metrics)
    write_jsonl(args.predictions, review)
    write_json(args.variants, variant_rows(metrics))
    write_json(args.conditions, condition_points(metrics.get("conditions", {})))
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
