"""The offline data pipeline: prompts → candidates (stage 1, Ray) → pairs (stage 2, polars) → evaluation."""
