"""The evaluate stage: decoding, answer extraction, Korean metrics, embedding scores, bootstrap intervals."""
