"""The effective batch and learning rate of a run, by the reference trainer's rule, written once.

Diffusion-DPO's `train.py` with `--scale_lr` multiplies the learning rate by the effective batch:
`lr × train_batch_size × gradient_accumulation_steps × num_processes` (its SD1.5 launcher: 1e-8 × 2048 =
2.048e-5 on 16 GPUs). `train.scale_lr` does the same; without it `learning_rate` is used as given.
"""

from __future__ import annotations

from pipeline.config import TrainSection


def effective_batch(tcfg: TrainSection, num_processes: int) -> int:
    """Pairs per optimizer step over all processes and micro-batches."""
    return tcfg.batch_size * tcfg.gradient_accumulation_steps * num_processes


def effective_learning_rate(tcfg: TrainSection, num_processes: int) -> float:
    """The learning rate the optimizer gets (the peak of the schedule)."""
    if tcfg.scale_lr:
        return tcfg.learning_rate * effective_batch(tcfg, num_processes)
    return tcfg.learning_rate


def describe_scaling(tcfg: TrainSection, num_processes: int) -> str:
    """One log line: the effective batch and learning rate, and where they come from."""
    batch = effective_batch(tcfg, num_processes)
    lr = effective_learning_rate(tcfg, num_processes)
    parts = f"{tcfg.batch_size} pair(s) × {tcfg.gradient_accumulation_steps} accumulation × {num_processes} process(es)"
    scaled = (
        f" = {tcfg.learning_rate:g} × {batch} (train.scale_lr)" if tcfg.scale_lr else " (train.scale_lr off)"
    )
    return f"effective batch {batch} = {parts}; learning rate {lr:g}{scaled}"
