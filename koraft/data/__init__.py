"""The data stages: raw files -> validated records -> train/val/test -> RAFT rows (readers, cleanup, schema,
near-duplicates, split, distractors)."""
