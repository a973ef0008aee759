"""The evaluate stage: model variants, served GGUFs and endpoints, answer extraction, Korean metrics, embedding
scores, bootstrap intervals."""
