"""Inference every step shares: an OpenAI-compatible client and greedy batched decoding."""
