"""The train, teacher and distill stages: SFTTrainer fine-tuning, the distillation loss and trainer,
the teacher's top-k cache, and launching across processes."""
