"""Models: presets and family quirks, the embedded tiny models, loading, chat rendering, fitted samples,
and what a trained folder carries (manifest, model card)."""
