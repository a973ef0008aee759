"""Serving: the trained model exported for inference engines (merged folder, GGUF, Ollama) and started on them."""
