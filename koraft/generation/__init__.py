"""The generate stage: a team's documents -> RAFT records written by a teacher LLM (RAFT's own generator)."""
