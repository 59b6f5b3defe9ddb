"""Which pairs, which noise and which empty prompts each micro-step uses: pure functions of (seed, position in
the pair stream).

A resumed run, a run whose batch is split into micro-batches and a run split over processes therefore see exactly
the pairs and noise of one uninterrupted run (the trainer's exact-resume guarantee rests on this).
"""

from __future__ import annotations

import numpy as np
import torch


def step_pairs(micro_step: int, global_batch: int, num_pairs: int, seed: int) -> np.ndarray:
    """Pair rows of one micro-step's global batch: a stream of seeded epoch permutations, cut into batches.

    Pure in (micro_step, seed), so resuming at step k or splitting the batch over processes sees the same pairs.
    """
    positions = np.arange(micro_step * global_batch, (micro_step + 1) * global_batch, dtype=np.int64)
    epochs = positions // num_pairs
    out = np.empty(global_batch, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = np.random.default_rng([seed, int(epoch)]).permutation(num_pairs)
        sel = epochs == epoch
        out[sel] = perm[positions[sel] % num_pairs]
    return out


def step_noise(
    micro_step: int,
    global_batch: int,
    latent_shape: tuple[int, ...],
    num_train_timesteps: int,
    seed: int,
    stream: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (shared by a pair's winner and loser) and timesteps for one micro-step's global batch.

    Each draw is seeded by its position in the pair stream (micro_step · global_batch + j), not by the step, so
    a batch split into micro-batches or over processes draws exactly the noise of the unsplit batch. `stream`
    separates independent uses (training 0, evaluation 1) of the same seed.
    """
    noise = torch.empty((global_batch, *latent_shape))
    timesteps = torch.empty(global_batch, dtype=torch.long)
    gen = torch.Generator()
    for j in range(global_batch):
        position = micro_step * global_batch + j
        state = np.random.SeedSequence([seed, stream, position]).generate_state(1, dtype=np.uint64)[0]
        gen.manual_seed(int(state >> np.uint64(1)))
        noise[j] = torch.randn(latent_shape, generator=gen)
        timesteps[j] = torch.randint(0, num_train_timesteps, (1,), generator=gen)[0]
    return noise, timesteps


PROMPT_DROPOUT_STREAM = 2  # beside step_noise's streams (training 0, evaluation 1) of the same seed


def step_prompt_dropout(micro_step: int, global_batch: int, seed: int, rate: float) -> np.ndarray:
    """Which pairs of one micro-step's global batch train on the empty prompt (bool per pair).

    One uniform draw per position in the pair stream, seeded like `step_noise` but on its own stream: a resumed
    or split run drops exactly the prompts of an uninterrupted one, and rate 0 draws nothing at all.
    """
    if rate <= 0.0:
        return np.zeros(global_batch, dtype=bool)
    draws = np.empty(global_batch)
    for j in range(global_batch):
        position = micro_step * global_batch + j
        state = np.random.SeedSequence([seed, PROMPT_DROPOUT_STREAM, position]).generate_state(1, np.uint64)[
            0
        ]
        draws[j] = float(state >> np.uint64(11)) * 2.0**-53  # 53 random bits → [0, 1)
    return draws < rate
