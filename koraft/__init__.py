"""koraft: reproducible fine-tuning of Korean LLMs on RAFT context-QA data."""

__version__ = "0.1.0"
