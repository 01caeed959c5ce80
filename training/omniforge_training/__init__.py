"""Training, evaluation and export of omniforge models (imports torch; never used by serving)."""
