"""An Ollama Modelfile for an exported GGUF: the family's prompt format, stop token and trained system prompt.

Ollama does not read the Hugging Face chat template; it renders its own Go template. Each one
below writes, for a system prompt and one user turn, the same text as the family's chat template
with koraft's template inputs (tests/test_export.py renders both and compares). The beginning-of-
sequence token is left to llama.cpp, which adds it where the GGUF says so.
"""

from __future__ import annotations

from koraft.core.errors import KoraftError

TEMPLATES = {
    "tiny": "{{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}<|user|>{{ .Prompt }}<|end|><|assistant|>",
    "exaone4": "{{ if .System }}[|system|]\n{{ .System }}[|endofturn|]\n{{ end }}[|user|]\n{{ .Prompt }}"
               "[|endofturn|]\n[|assistant|]\n<think>\n\n</think>\n\n",
    "exaone3": "[|system|]{{ if .System }}{{ .System }}{{ end }}[|endofturn|]\n[|user|]{{ .Prompt }}\n[|assistant|]",
    # No system role: koraft puts the system text at the head of the user turn.
    "gemma2": "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
              "<start_of_turn>model\n",
    # Gemma 3's turns are Gemma-2's; koraft folds the system text into the user turn the same way.
    "gemma3": "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
              "<start_of_turn>model\n",
    # The date is the one koraft pins (koraft.models.presets), as in training.
    "llama3": "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
              "Today Date: 26 Jul 2024\n\n{{ if .System }}{{ .System }}{{ end }}<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n",
    # koraft always sends Qwen a system turn, even empty, to keep its default one out.
    "qwen2": "<|im_start|>system\n{{ .System }}<|im_end|>\n<|im_start|>user\n{{ .Prompt }}<|im_end|>\n"
             "<|im_start|>assistant\n",
}

TEMPLATES["gemma3_pt"] = TEMPLATES["gemma3"]  # the same turns; answers end with <eos> (a stop token below)


def modelfile(gguf_name: str, family: str, system_prompt: str, stops: list[str], num_ctx: int) -> str:
    """The Modelfile text: `ollama create <name> -f Modelfile` next to the GGUF."""
    if family not in TEMPLATES:
        raise KoraftError(f"no Ollama template for family {family!r}; families: {', '.join(TEMPLATES)}")
    for name, text in (("system prompt", system_prompt), ("template", TEMPLATES[family])):
        if '"""' in text:
            raise KoraftError(f"the {name} contains \"\"\", which a Modelfile cannot quote")
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{TEMPLATES[family]}"""']
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    # Greedy, as evaluated (Ollama's repeat_penalty default, 1.1, would change the answers); the context is
    # the training length.
    lines += ["PARAMETER temperature 0", "PARAMETER top_k 1", "PARAMETER repeat_penalty 1.0",
              f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join(lines) + "\n"
