"""Data coming in and going out: prompt sources, and the Pick-a-Pic / diffusers-DPO pair layout.

- `prompts`: manifests (`data_manifests/*.yaml`) and prompt files read into one clean, deduplicated prompt set
  (several sources of a manifest become named subsets);
- `pickapic`: import of a Pick-a-Pic-layout pair dataset (relabel mode) and export of our pairs to that layout;
- `embedded`: `tiny/pickapic/<split>.parquet`, the project's own small Pick-a-Pic-layout table, built on first use.
"""
