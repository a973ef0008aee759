"""Write a markdown report of the workspace's run or of chosen DVC experiments.

    python -m koraft.publish.report NAME                      # the workspace (after dvc repro)
    python -m koraft.publish.report NAME --exp EXP_A EXP_B    # experiments, by the names `dvc exp show` lists

Writes reports/NAME.md and its PNGs in reports/NAME/: per run, the evaluation table per variant,
the bootstrap intervals, a metric bar chart, the train and distill loss curves, and the best and
worst fine-tuned answers; with several runs, a table and a chart across them and the params that
differ. Everything is read from the committed metrics files (`metrics/`), from the workspace or,
for an experiment, from its git commit: nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koraft.core.errors import KoraftError
from koraft.evaluation.labels import COMPARISONS, CONDITION_COMPARISONS, METRIC_LABELS, VARIANTS, systems
from koraft.publish.noise import change_lines

TABLE = {metric: METRIC_LABELS[metric] for metric in ("f1", "exact_match", "rougeL", "rougeL_char", "bleu", "chrf",
                                                      "bertscore_f1", "cosine")}
CHART = ("f1", "rougeL", "rougeL_char", "bertscore_f1", "cosine")  # the [0, 1] metrics, one bar each
CURVES = {"train loss": "metrics/train/plots/metrics/train/loss.tsv",
          "train eval loss": "metrics/train/plots/metrics/eval/loss.tsv",
          "distill loss": "metrics/distill/plots/metrics/train/loss.tsv",
          "distill eval loss": "metrics/distill/plots/metrics/eval/loss.tsv"}


@dataclass
class Run:
    label: str
    evaluation: dict[str, Any]
    predictions: list[dict[str, Any]]
    params: dict[str, Any]
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def read_text(path: str, revision: str | None) -> str | None:
    """A file of the workspace, or of a git revision (experiments are commits); None when absent."""
    if revision is None:
        file = Path(path)
        return file.read_text(encoding="utf-8") if file.exists() else None
    shown = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def load_run(label: str, revision: str | None) -> Run:
    import yaml

    evaluation = read_text("metrics/eval.json", revision)
    if evaluation is None:
        where = f"experiment {label}" if revision else "the workspace"
        raise KoraftError(f"report: {where} has no metrics/eval.json; run `dvc repro` (or the experiment) first")
    predictions = read_text("metrics/eval/predictions.jsonl", revision) or ""
    curves = {}
    for name, path in CURVES.items():
        text = read_text(path, revision)
        if text:
            rows = [line.split("\t") for line in text.strip().splitlines()[1:]]
            curves[name] = [(float(step), float(value)) for step, value in rows]
    return Run(label, json.loads(evaluation), [json.loads(line) for line in predictions.splitlines() if line.strip()],
               yaml.safe_load(read_text("params.yaml", revision) or "{}"), curves)


def experiment_revisions(names: list[str]) -> dict[str, str]:
    """Experiment name -> its commit, from `dvc exp show --json`."""
    shown = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if shown.returncode:
        raise KoraftError(f"report: dvc exp show failed: {shown.stderr.strip().splitlines()[-1:]}")
    known = {exp["name"]: exp["revs"][0]["rev"] for baseline in json.loads(shown.stdout)
             for exp in (baseline.get("experiments") or []) if exp.get("name")}
    missing = [name for name in names if name not in known]
    if missing:
        raise KoraftError(f"report: no experiment named {', '.join(missing)}; `dvc exp show` lists "
                          f"{', '.join(sorted(known)) or 'none'}")
    return {name: known[name] for name in names}


def cell(text: Any, width: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def metrics_table(run: Run) -> list[str]:
    lines = ["| variant | " + " | ".join(TABLE.values()) + " | F1, golden given | F1, golden absent | "
             "answers extracted | quotes verbatim |", "|---" * (len(TABLE) + 5) + "|"]
    for name in systems(run.evaluation):
        values = run.evaluation[name]
        golden, reasoning = values["by_golden"], values["reasoning"]
        row = [values.get(metric) for metric in TABLE] + [
            golden["present"].get("f1"), golden["absent"].get("f1"), reasoning.get("answer_extraction_rate"),
            reasoning.get("quote_validity")]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else f"{v:g}" for v in row) + " |")
    return lines


def intervals_table(run: Run) -> list[str]:
    comparisons = run.evaluation.get("comparisons", {})
    if not comparisons:
        return []
    confidence = run.evaluation.get("scoring", {}).get("bootstrap", {}).get("confidence", 0.95)
    lines = [f"| comparison | metric | change | {confidence:.0%} interval | B better in |", "|---|---|---|---|---|"]
    for label, metrics in comparisons.items():
        for metric, value in metrics.items():
            lines.append(f"| {label.replace('_vs_', ' vs ')} | {TABLE.get(metric, metric)} | {value['delta']:+g} | "
                         f"[{value['low']:+g}, {value['high']:+g}] {verdict(value)} | {value['share_better']:.0%} |")
    return lines


def parity_table(run: Run) -> list[str]:
    """Served systems: how often each answered as the variant it serves did."""
    served = [name for name in systems(run.evaluation) if "parity" in run.evaluation[name]]
    if not served:
        return []
    lines = ["| served system | compared to | same answers | same outputs | failed requests |", "|---|---|---|---|---|"]
    for name in served:
        parity, failed = run.evaluation[name]["parity"], run.evaluation[name].get("requests", {}).get("failed", 0)
        lines.append(f"| {name} | {parity['compared_to']} | {parity['answers']:.1%} | {parity['outputs']:.1%} | "
                     f"{failed} |")
    return lines


def verdict(change: dict[str, float]) -> str:
    """The within-noise marking of a paired interval, shared by every table of comparisons."""
    return "ahead" if change["low"] > 0 else "behind" if change["high"] < 0 else "within noise (covers 0)"


def conditions_table(evaluation: dict[str, Any]) -> list[str]:
    """RAFT's comparison per test condition: each variant's EM / F1 on the same questions, the retriever's
    recall@k and MRR, and the paired F1 change of each trained variant over the base model given the same
    documents."""
    conditions = evaluation.get("conditions")
    if not conditions:
        return []
    variants = conditions["variants"]
    names = [name for name in conditions if name == "oracle" or name.startswith("retrieved_k") or
             name == "closed_book"]
    comparisons = [label for label in CONDITION_COMPARISONS
                   if any(label in conditions[name]["comparisons"] for name in names)]
    lines = ["| condition | recall@k | MRR | " + " | ".join(f"{v} EM / F1" for v in variants) + " | " +
             " | ".join(f"{label.replace('_vs_', ' − ')} F1" for label in comparisons) + " |",
             "|---" * (3 + len(variants) + len(comparisons)) + "|"]
    for name in names:
        retrieval = conditions.get("retrieval", {}).get(f"k{name.removeprefix('retrieved_k')}", {})
        cells = [name.replace("_k", " k=").replace("_", " "), retrieval.get("recall", "–"), retrieval.get("mrr", "–")]
        cells += [f"{conditions[name][v]['exact_match']:g} / {conditions[name][v]['f1']:g}" for v in variants]
        for label in comparisons:
            change = conditions[name]["comparisons"].get(label, {}).get("f1")
            cells.append(f"{change['delta']:+g} [{change['low']:+g}, {change['high']:+g}] {verdict(change)}"
                         if change else "–")
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def perplexity_table(evaluation: dict[str, Any]) -> list[str]:
    """Held-out perplexity per text source and variant, and each comparison's loss change with its interval:
    a rise beyond noise is marked, as the forgetting it is."""
    perplexity = evaluation.get("perplexity")
    if not perplexity:
        return []
    lines = ["| held-out text | texts | variant | perplexity | loss change (nats/token) |", "|---|---|---|---|---|"]
    for source, block in perplexity.items():
        if not isinstance(block, dict):
            continue
        for name, values in block.items():
            if not isinstance(values, dict) or "perplexity" not in values:
                continue
            change = next((block[label] for label, (_, after) in COMPARISONS.items()
                           if after == name and label in block), None)
            moved = "–"
            if change:
                loss = change["loss"]
                moved = (f"{loss['delta']:+g} [{loss['low']:+g}, {loss['high']:+g}] "
                         + ("**rose beyond noise**" if change["rose"] else
                            "fell" if loss["high"] < 0 else "within noise (covers 0)"))
            lines.append(f"| {source.replace('_', ' ')} | {block['texts']} | {name} | {values['perplexity']:g} | "
                         f"{moved} |")
    return lines


def retrieval_lines(evaluation: dict[str, Any]) -> list[str]:
    """What the retriever costs against what the model costs: F1 when the golden document was shown and
    when it was not, the budget's drops, and abstention where it is the target."""
    conditions = evaluation.get("conditions") or {}
    lines = []
    for name, values in conditions.items():
        if not name.startswith("retrieved_k") and name != "oracle":
            continue
        for variant in conditions["variants"]:
            golden = values[variant]["by_golden"]
            line = (f"- {name.replace('_k', ' k=')}, {variant}: F1 {golden['shown'].get('f1', '–')} with the golden "
                    f"document in the prompt ({golden['shown']['samples']}), {golden['not_shown'].get('f1', '–')} "
                    f"without it ({golden['not_shown']['samples']})")
            if values[variant].get("golden_dropped_by_budget"):
                line += f"; the prompt budget dropped it {values[variant]['golden_dropped_by_budget']} times"
            abstained = values[variant].get("abstention")
            if abstained:
                line += (f"; abstained {abstained['abstained_when_absent']} of {abstained['golden_absent']} times "
                         f"without it (recall {abstained['recall']}), {abstained['abstained_when_present']} of "
                         f"{abstained['golden_present']} with it (precision {abstained['precision']})")
            lines.append(line)
    return lines


def k_chart(path: Path, evaluation: dict[str, Any], title: str) -> bool:
    """F1 against the number of retrieved documents (0: closed book), one line per variant."""
    from koraft.evaluation.condition_scores import condition_points

    points = condition_points(evaluation.get("conditions") or {})
    if len(points) < 2:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for variant in evaluation["conditions"]["variants"]:
        axes.plot([p["k"] for p in points], [p.get(f"{variant}_f1") for p in points], marker="o", label=variant)
    axes.set_xlabel("retrieved documents (0: closed book)")
    axes.set_ylabel("F1")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize="small")
    _save(plt, figure, path)
    return True


def changes(first: Run, run: Run) -> list[str]:
    """Each variant's F1 and EM change from `first` to `run`, paired by record: signal, or within noise."""
    bootstrap = run.evaluation.get("scoring", {}).get("bootstrap")
    if not bootstrap or not first.predictions or not run.predictions:
        return []
    return change_lines(first.predictions, run.predictions, systems(run.evaluation), bootstrap, TABLE)


def examples(run: Run, count: int) -> list[str]:
    """The best and worst answers of the fine-tuned model (or the first system), by F1."""
    names = systems(run.evaluation)
    if not names or not run.predictions:
        return []
    name = "finetuned" if "finetuned" in names else names[0]
    ranked = sorted(run.predictions, key=lambda row: (-row["outputs"][name]["scores"]["f1"], row["id"]))
    lines = []
    for title, rows in (("Best", ranked[:count]), ("Worst", ranked[::-1][:count])):
        lines += [f"**{title} {len(rows)} answers of `{name}`** (by F1)", "",
                  "| question | reference | answer | F1 |", "|---|---|---|---|"]
        lines += [f"| {cell(row['question'], 60)} | {cell(row['reference'], 40)} | "
                  f"{cell(row['outputs'][name]['answer'], 60)} | {row['outputs'][name]['scores']['f1']:g} |"
                  for row in rows]
        lines.append("")
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(figure)


def bar_chart(path: Path, groups: list[str], series: dict[str, list[float]], title: str) -> None:
    """Grouped bars: one group per entry of `groups`, one bar per series."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.6))
    width = 0.8 / max(len(series), 1)
    for index, (name, values) in enumerate(series.items()):
        axes.bar([g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))], values, width, label=name)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize="small", ncols=min(len(series), 5))
    _save(plt, figure, path)


def loss_chart(path: Path, curves: dict[str, list[tuple[float, float]]], title: str) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3.6))
    for name, points in curves.items():
        axes.plot([step for step, _ in points], [value for _, value in points], label=name, marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.legend(fontsize="small")
    _save(plt, figure, path)


def changed_params(runs: list[Run]) -> list[str]:
    def flat(mapping: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in mapping.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    tables = [flat(run.params) for run in runs]
    keys = sorted(key for key in set().union(*tables) if len({json.dumps(t.get(key)) for t in tables}) > 1)
    if not keys:
        return []
    lines = ["| param | " + " | ".join(run.label for run in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    lines += [f"| {key} | " + " | ".join(cell(t.get(key, "–"), 40) for t in tables) + " |" for key in keys]
    return lines


def write_report(name: str, runs: list[Run], out_dir: Path = Path("reports"), top: int = 5) -> Path:
    figures = out_dir / name
    figures.mkdir(parents=True, exist_ok=True)
    lines = [f"# koraft report: {name}", ""]
    if len(runs) > 1:
        lines += ["## Runs compared", "", "| run | " + " | ".join(f"{v} F1" for v in VARIANTS) + " |",
                  "|---" * (len(VARIANTS) + 1) + "|"]
        for run in runs:
            lines.append(f"| {run.label} | " + " | ".join(
                f"{run.evaluation[v]['f1']:g}" if v in run.evaluation else "–" for v in VARIANTS) + " |")
        bar_chart(figures / "runs.png", [run.label for run in runs],
                  {v: [run.evaluation.get(v, {}).get("f1", 0.0) for run in runs] for v in VARIANTS}, "F1 by run")
        lines += ["", "![F1 by run](" + f"{name}/runs.png)", ""]
        params = changed_params(runs)
        lines += (["### Params that differ", "", *params, ""] if params else [])
        for run in runs[1:]:
            moved = changes(runs[0], run)
            lines += ([f"### {run.label} against {runs[0].label}", "", *moved, ""] if moved else [])
    for run in runs:
        slug = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in run.label)
        lines += [f"## {run.label}", "", *metrics_table(run), "",
                  "BLEU and chrF are on sacrebleu's 0-100 scale, the rest in [0, 1].", ""]
        intervals = intervals_table(run)
        lines += (["### Paired bootstrap intervals", "", *intervals, ""] if intervals else [])
        parity = parity_table(run)
        lines += (["### Parity of the served systems", "", *parity, ""] if parity else [])
        perplexity = perplexity_table(run.evaluation)
        lines += (["### Held-out perplexity (did fine-tuning cost general text?)", "", *perplexity, ""]
                  if perplexity else [])
        conditions = conditions_table(run.evaluation)
        if conditions:
            questions = run.evaluation["conditions"]["questions"]
            lines += ["### Test conditions (RAFT's protocol)", "",
                      f"The same {questions} test questions with the raft stage's documents (oracle), the "
                      f"retriever's top k and none (closed book); paired bootstrap intervals.", "", *conditions, "",
                      *retrieval_lines(run.evaluation), ""]
            if k_chart(figures / f"by_k_{slug}.png", run.evaluation, f"{run.label}: F1 by retrieved documents"):
                lines += [f"![F1 by k]({name}/by_k_{slug}.png)", ""]
        names = systems(run.evaluation)
        bar_chart(figures / f"metrics_{slug}.png", [TABLE[m] for m in CHART],
                  {n: [run.evaluation[n].get(m, 0.0) for m in CHART] for n in names}, f"{run.label}: metrics")
        lines += [f"![metrics]({name}/metrics_{slug}.png)", ""]
        if run.curves:
            loss_chart(figures / f"loss_{slug}.png", run.curves, f"{run.label}: loss")
            lines += [f"![loss curves]({name}/loss_{slug}.png)", ""]
        lines += examples(run, top)
        lines += [f"> warning: {cell(warning, 400)}" for warning in run.evaluation.get("warnings", [])]
        lines.append("")
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def main() -> None:
    from koraft.core.cli import run_stage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="writes reports/NAME.md and reports/NAME/*.png")
    parser.add_argument("--exp", nargs="+", default=[], help="experiment names; default: the workspace")
    parser.add_argument("--top", type=int, default=5, help="best and worst answers shown per run")
    args = parser.parse_args()

    def report() -> None:
        if args.exp:
            runs = [load_run(label, revision) for label, revision in experiment_revisions(args.exp).items()]
        else:
            runs = [load_run("workspace", None)]
        print(f"report: wrote {write_report(args.name, runs, top=args.top)}")

    run_stage("report", report)


if __name__ == "__main__":
    main()
