"""Model cards: the README.md a trained folder carries to the Hugging Face Hub.

The train and distill stages write one next to the weights: the base model and its license, the
method and hyperparameters, the hash of the training data, the training metrics. `python -m
koraft.publish.hub` renders it again with the evaluate stage's metrics before an upload. Nothing
machine-dependent (runtimes, paths of this checkout) goes in, so equal runs give equal cards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from koraft.core.hashing import file_sha256
from koraft.models.manifest import read_manifest
from koraft.models.packaged import PRESET, STUDENT_PRESET, UPSTREAM

# family -> (hub license id, license_name for "other", what to read before using the weights)
LICENSES = {
    "exaone4": ("other", "exaone", "EXAONE AI Model License Agreement 1.1 - NC: non-commercial use only"),
    "exaone3": ("other", "exaone", "EXAONE AI Model License Agreement 1.1 - NC: non-commercial use only"),
    "gemma2": ("gemma", None, "Gemma Terms of Use and the Gemma Prohibited Use Policy"),
    "gemma3": ("gemma", None, "Gemma Terms of Use and the Gemma Prohibited Use Policy"),
    "gemma3_pt": ("gemma", None, "Gemma Terms of Use and the Gemma Prohibited Use Policy"),
    "llama3": ("llama3.2", None, "Llama 3.2 Community License and Acceptable Use Policy"),
    "qwen2": ("other", "qwen-research", "Qwen Research License for Qwen2.5-3B (other sizes: Apache-2.0)"),
    "tiny": ("other", "koraft-tiny", "random weights built by koraft/tiny.py; no upstream license"),
}
UNKNOWN_LICENSE = ("other", "see-base-model", "not known to koraft: read the base model's own card")
EVALUATION = {"f1": "F1 (KorQuAD)", "exact_match": "EM", "rougeL": "ROUGE-L (Kiwi)", "chrf": "chrF",
              "bleu": "BLEU (Kiwi)", "bertscore_f1": "BERTScore-F1", "cosine": "cosine"}


def render_card(folder: Path, training: dict[str, Any], settings: Any, data_sha256: str,
                evaluation: dict[str, Any] | None = None) -> str:
    """`training`: the stage's metrics; `settings`: its koraft.training.config.TrainSettings (lora,
    quantization and args are written down)."""
    """The card's markdown: YAML front matter for the Hub, then what the model is and how it was made."""
    manifest = read_manifest(folder)
    model, method = manifest["model"], manifest["method"]
    base = model["preset"] or model["source"]
    hub_license, license_name, license_note = LICENSES.get(model["family"], UNKNOWN_LICENSE)
    distilled = manifest.get("distilled_from")
    front = {"language": ["ko"], "license": hub_license, **({"license_name": license_name} if license_name else {}),
             "library_name": "transformers" if method == "full" else "peft",
             "tags": ["koraft", "raft", "korean", "context-qa", method] + (["distillation"] if distilled else [])}
    if model["family"] != "tiny":
        front["base_model"] = UPSTREAM if model["preset"] in (PRESET, STUDENT_PRESET) else model["source"]
    loss, samples = training.get("loss", {}), training.get("samples", {}).get("train", {})
    lines = ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", "",
             f"# {base}, {'distilled' if distilled else 'fine-tuned'} with koraft ({method})", "",
             "Korean context QA in RAFT format: a question, its golden document among distractor documents, "
             "and an answer (optionally a chain of thought quoting the golden document).", "",
             "## Base model", "",
             f"- model: `{model['source']}`" + (f" at revision `{model['revision']}`" if model["revision"] else ""),
             f"- family: {model['family']}, dtype {model['dtype']}",
             f"- license: {license_note}. This {'adapter' if method != 'full' else 'model'} is bound by it.", ""]
    if distilled:
        lines += ["## Teacher", "", f"- teacher: `{distilled['teacher']}` (koraft train stage output)",
                  f"- loss: {distilled['loss']}", f"- teacher mode: {distilled['mode']}", ""]
    lines += ["## Training", "", f"- method: {method}"]
    if method != "full":
        lines.append(f"- LoRA: {settings.lora}")
    if method == "qlora":
        lines.append(f"- quantization: {settings.quantization}")
    lines += [f"- trainer arguments: {settings.args}",
              f"- steps {training.get('steps')}, epochs {training.get('epochs')}, final train loss "
              f"{loss.get('train_final')}, final eval loss {loss.get('eval_final')} (best {loss.get('eval_best')})",
              f"- system prompt: {manifest['system_prompt']!r}", "",
              "## Data", "",
              f"- training split sha256: `{data_sha256}`",
              f"- {samples.get('samples')} samples of {samples.get('records')} records; "
              f"{samples.get('samples_trimmed')} trimmed, {samples.get('samples_skipped')} skipped",
              f"- rendered prompts sha256: `{manifest['prompts_sha256']}` (every prompt and target is listed in "
              f"koraft_manifest.json)", ""]
    if evaluation:
        lines += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {label} | {evaluation['metrics'][key]} |" for key, label in EVALUATION.items()
                  if key in evaluation["metrics"]]
        for name, interval in evaluation.get("comparison", {}).items():
            lines.append(f"| {name} F1 vs its base | {interval['delta']:+g} [{interval['low']:+g}, "
                         f"{interval['high']:+g}] |")
        lines += ["", f"On {evaluation['samples']} test records; BLEU and chrF 0-100, the rest 0-1.", ""]
    lines += ["## Use", "", "Prompts must be rendered as in training: the base model's chat template, the system "
              "prompt above, and the RAFT user message (instruction, `<DOCUMENT>` blocks, question). koraft's "
              "`koraft.models.chat.render_prompt` does exactly that.", ""]
    return "\n".join(lines)


def write_card(folder: Path, training: dict[str, Any], settings: Any, data_path: str | Path) -> None:
    card = render_card(folder, training, settings, file_sha256(data_path))
    (folder / "README.md").write_text(card, encoding="utf-8")
