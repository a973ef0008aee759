"""Greedy, batched, deterministic generation with left padding and the model's own stop tokens.

Prompts are grouped by length so that a batch pads little; rows are left-padded so every row's
next token is at the same position. Generation ends at any of the model's stop tokens (its
generation config's eos ids, the tokenizer's eos and the family's end-of-turn token); an
output that reaches `max_new_tokens` without one is cut there and reported as not stopped.
The model's own sampling defaults are ignored: decoding is greedy whatever its
generation_config.json says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Generation:
    texts: list[str]  # decoded up to (not including) the first stop token, in prompt order
    new_tokens: list[int]  # tokens generated, the stop token included
    stopped: list[bool]  # False: cut at max_new_tokens
    seconds: float


def greedy_generate(model, tokenizer, prompts: list[list[int]], stops: list[int], max_new_tokens: int,
             batch_size: int) -> Generation:
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=stops or None, pad_token_id=tokenizer.pad_token_id)
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))  # longest first: peak memory early
    texts, counts, stopped = [""] * len(prompts), [0] * len(prompts), [False] * len(prompts)
    start = time.perf_counter()
    for first in range(0, len(order), batch_size):
        batch = order[first:first + batch_size]
        width = max(len(prompts[i]) for i in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros(len(batch), width, dtype=torch.long)
        for row, index in enumerate(batch):
            ids = prompts[index]
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                    generation_config=config)
        for row, index in enumerate(batch):
            tokens = output[row, width:].tolist()
            end = next((position for position, token in enumerate(tokens) if token in stops), None)
            stopped[index] = end is not None
            counts[index] = end + 1 if end is not None else len(tokens)
            texts[index] = tokenizer.decode(tokens[:end], skip_special_tokens=True)
    return Generation(texts, counts, stopped, time.perf_counter() - start)
