"""The RAFT prompt and target text, before any chat template is applied.

One function for each, so the train, distill and evaluate stages render exactly the same text.
"""

from __future__ import annotations

import re
from typing import Any

ANSWER_MARKER = "<ANSWER>:"  # ends every chain-of-thought target (gorilla's RAFT format)
QUOTE = re.compile(r"##begin_quote##(.*?)##end_quote##", re.DOTALL)


def user_message(record: dict[str, Any]) -> str:
    documents = "\n".join(f"<DOCUMENT>{text}</DOCUMENT>" for text in record["documents"])
    return f"{record['instruction']}\n\n{documents}\n\n질문: {record['question']}"


def completion(record: dict[str, Any]) -> str:
    """The training target: the chain of thought ending in `<ANSWER>: answer`, or the answer alone."""
    if record.get("cot"):
        return f"{record['cot']}\n{ANSWER_MARKER} {record['answer']}"
    return record["answer"]


def quotes(cot: str) -> list[str]:
    """The spans marked ##begin_quote## ... ##end_quote##, stripped."""
    return [match.strip() for match in QUOTE.findall(cot) if match.strip()]
