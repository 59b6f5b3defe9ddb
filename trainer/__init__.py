"""Diffusion-DPO training on preference pairs, with a reference model refreshed from the policy."""
