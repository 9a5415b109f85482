"""Real-time video: sources, tracking, per-track identity, annotated output, the pipeline."""
