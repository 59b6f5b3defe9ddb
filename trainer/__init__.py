"""Diffusion-DPO training on preference pairs, with a reference model refreshed from the policy.

- `trainer.train.train(cfg) -> TrainOutputs` (also `python trainer/train.py` / `accelerate launch trainer/train.py`)
- `trainer.loss`: the loss as a pure function, and our β convention
- `trainer.data`: pairs ⋈ candidates, once-only latent / text-embedding cache, step → pairs / noise
- `trainer.reference`: the reference model (LoRA adapter or UNet copy) and its hard / EMA refresh
- `trainer.loop`: the accelerate loop, checkpoints, manifest
- `trainer.export`: final weights, `final_weights_dir(run_dir, strategy)`, `load_tuned_pipeline(model, dir)`
- `trainer.toy`: a tiny real training set for tests and benchmarks
"""
