"""Preference tuning after SFT: pairs built from the RAFT records and the SFT model's own answers, and trl's
DPO, ORPO, KTO and SimPO trainers continuing the train stage's adapter."""
