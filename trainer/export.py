"""Final weights in diffusers format, and the one call that turns them back into a pipeline.

A training run writes `<run>/train/<strategy>/final/`:
- full fine-tune: `final/unet/` (`UNet2DConditionModel.save_pretrained`);
- LoRA: `final/pytorch_lora_weights.safetensors` (`save_lora_weights`), loadable with `pipe.load_lora_weights(dir)`;
- both: `final/weights.json` saying which kind it is, the base model and the training step.

For evaluation:

    from trainer.export import final_weights_dir, load_tuned_pipeline
    pipe = load_tuned_pipeline(cfg.model, final_weights_dir(cfg.output_dir, cfg.train.strategy))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.config import ModelSection
from pipeline.io import write_text_atomic
from pipeline.paths import RunPaths

WEIGHTS_INFO = "weights.json"
LORA_FILE = "pytorch_lora_weights.safetensors"


def final_weights_dir(run: RunPaths | str | Path, strategy: str = "majority") -> Path:
    """The final weights of a finished run; an error if training has not finished there."""
    paths = run if isinstance(run, RunPaths) else RunPaths(Path(run))
    path = paths.final_weights(strategy)
    if not (path / WEIGHTS_INFO).is_file():
        raise FileNotFoundError(
            f"no final weights at {path} (has `train` finished for strategy {strategy!r}?)"
        )
    return path


def save_final_weights(unet: Any, directory: Path, use_lora: bool, is_xl: bool, info: dict[str, Any]) -> Path:
    """Write the policy in diffusers format (full UNet or the `policy` LoRA adapter) plus `weights.json`."""
    directory.mkdir(parents=True, exist_ok=True)
    if use_lora:
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        from trainer.reference import POLICY_ADAPTER

        state = get_peft_model_state_dict(unet, adapter_name=POLICY_ADAPTER)
        state = {k: v.detach().to(torch.float32).cpu().contiguous() for k, v in state.items()}
        saver = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
        saver.save_lora_weights(
            directory,
            unet_lora_layers=convert_state_dict_to_diffusers(state),
            unet_lora_adapter_metadata=unet.peft_config[POLICY_ADAPTER].to_dict(),
            safe_serialization=True,
        )
        kind = "lora"
    else:
        unet.save_pretrained(directory / "unet", safe_serialization=True)
        kind = "unet"
    write_text_atomic(directory / WEIGHTS_INFO, json.dumps({"kind": kind, **info}, indent=2, default=str))
    return directory


def load_tuned_pipeline(base_model: ModelSection, weights_dir: str | Path, device: str = "auto"):
    """The base pipeline of `base_model` with the tuned weights in `weights_dir` applied (UNet or LoRA)."""
    from diffusers import UNet2DConditionModel

    from pipeline.models.diffusion import load_pipeline, pick_device, torch_dtype

    weights_dir = Path(weights_dir)
    info_path = weights_dir / WEIGHTS_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{weights_dir} has no {WEIGHTS_INFO}: not a trainer output directory")
    info = json.loads(info_path.read_text())
    pipe = load_pipeline(base_model, device=device)
    if info["kind"] == "unet":
        dtype = torch_dtype(base_model.dtype, pick_device(device))
        unet = UNet2DConditionModel.from_pretrained(weights_dir / "unet", torch_dtype=dtype)
        pipe.unet = unet.to(pipe.device)
    elif info["kind"] == "lora":
        pipe.load_lora_weights(weights_dir, weight_name=LORA_FILE, adapter_name="dpo")
    else:
        raise ValueError(f"{info_path}: unknown kind {info['kind']!r}; expected unet or lora")
    return pipe
