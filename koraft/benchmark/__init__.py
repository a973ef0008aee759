"""The benchmark stage: lm-evaluation-harness tasks on the model variants, to see what fine-tuning cost."""
