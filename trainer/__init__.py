"""Diffusion-DPO training on preference pairs, with a reference model refreshed from the policy.

- `trainer.train`: the command line (`python trainer/train.py`, `accelerate launch trainer/train.py`) and `train`;
- `trainer.recipe`: `train(cfg) -> TrainOutputs`, the run in named phases (setup, evaluate, train, finish);
- `trainer.step`: one Diffusion-DPO optimizer step (the forward pass, backward, update);
- `trainer.loss`: the loss as a pure function, and our β convention;
- `trainer.reference`: the reference model (LoRA adapter or UNet copy) and its hard / EMA refresh;
- `trainer.policy`: the UNet, policy, reference, optimizer and LR schedule training starts from;
- `trainer.sampling`: which pairs and noise each micro-step uses (pure in seed and position: exact resume);
- `trainer.data`: pairs ⋈ candidates, the once-only latent / text-embedding cache;
- `trainer.checkpoints`: checkpoints as safetensors + JSON (no pickle), verified before a resume reads them;
- `trainer.fingerprint`: what a run's weights depend on; no checkpoint or `final/` of another run is reused;
- `trainer.export`: final weights, `final_weights_dir(run, strategy)`, `load_tuned_pipeline(model, dir)`.
"""
