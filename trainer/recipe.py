"""The Diffusion-DPO training recipe, in named phases: set up, evaluate, train, finish.

`train(cfg) -> TrainOutputs` is the Python API (the CLI `trainer/train.py` and the workflows call it). It reads
only `<run>/pairs/<strategy>/` and `<run>/candidates/`, so it can be rerun alone on cached pairs, and writes
`<run>/train/<strategy>/`:

    cache/<key>/          latents, text embeddings (built once, see trainer/data.py)
    checkpoints/checkpoint-NNNNNNN/   safetensors + JSON, no pickle (trainer/checkpoints.py)
    logs/                 tensorboard, and metrics.jsonl (trainer/metrics_log.py) for the report
    final/                diffusers-format weights (trainer/export.py) and their model card (README.md)
    manifest.json         config, fingerprint, effective batch and learning rate, data counts, prompt dropout,
                          refreshes, metrics before/after, timings, status

Every output carries the run's fingerprint (`trainer.fingerprint`: the train section minus keys that cannot change
the weights, the model, the process count, the pairs and candidates): a checkpoint or `final/` of a run with
another fingerprint is never resumed or reused, and the error names each change.

The method, one phase at a time:
1. setup: accelerator, the UNet and noise schedule, the cached data, policy / reference / optimizer / LR schedule,
   the fingerprint, and the resume from the newest usable checkpoint of the same run (or a fresh start);
2. evaluate: DPO metrics of the starting policy on held pairs with fixed noise;
3. train: per optimizer step, one Diffusion-DPO step (`trainer.step.optimizer_step`), then the reference refresh
   (BalancedDPO's dynamic reference), the log line, the checkpoint;
4. finish: final weights in diffusers format and the manifest.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import record_function

from pipeline.config import RunConfig, TrainSection
from pipeline.console import Progress, say
from pipeline.io import write_manifest
from pipeline.paths import RunPaths
from pipeline.reporting.model_card import CARD_FILE, write_model_card
from pipeline.voting.strategies import disk_name
from trainer.checkpoints import (
    TrainingObjects,
    TrainState,
    choose_checkpoint,
    load_checkpoint,
    read_fingerprint,
    save_checkpoint,
)
from trainer.data import TrainData, prepare_train_data
from trainer.export import WEIGHTS_INFO, save_final_weights
from trainer.fingerprint import check_same_run, check_step, digest, training_fingerprint
from trainer.images import ImageRule
from trainer.metrics_log import METRICS_FILE, append_metrics
from trainer.policy import build_training, load_models
from trainer.reference import should_refresh
from trainer.scaling import describe_scaling, effective_batch, effective_learning_rate
from trainer.step import NonFiniteLossError, StepContext, evaluate_pairs, optimizer_step, reduce_window

logger = logging.getLogger("trainer")

__all__ = ["DPORecipe", "NonFiniteLossError", "TrainOutputs", "train"]


@dataclass
class TrainOutputs:
    """Where a training run put everything, plus its headline numbers."""

    train_dir: Path
    final_dir: Path | None
    checkpoints_dir: Path
    logs_dir: Path
    manifest: Path
    last_checkpoint: Path | None
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    refreshes: list[int] = field(default_factory=list)


def train(cfg: RunConfig, stop_at_step: int | None = None) -> TrainOutputs:
    """Train the configured strategy's pairs; resume from the newest checkpoint when `train.resume` is auto.

    `stop_at_step` ends the process's work after that optimizer step (after checkpointing it), as a preempted
    job would; a later call resumes. Raises `TrainDataError` on bad tables and `NonFiniteLossError` on a NaN/inf
    loss (the last good checkpoint is kept, nothing newer is written).
    """
    recipe = DPORecipe(cfg, stop_at_step)
    try:
        recipe.setup()
        recipe.evaluate_before()
        recipe.train()
        return recipe.finish()
    finally:
        recipe.cleanup()


def _flat_hparams(tcfg: TrainSection) -> dict[str, Any]:
    """The train section as the flat scalars a tracker accepts (`ref_update.every`, lists joined)."""
    flat: dict[str, Any] = {}
    for k, v in tcfg.model_dump(mode="json").items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, list):
            flat[k] = ",".join(map(str, v))
        else:
            flat[k] = v
    return flat


class DPORecipe:
    """One training run's state across its phases; each phase is a short method, called in order by `train`."""

    def __init__(self, cfg: RunConfig, stop_at_step: int | None = None) -> None:
        self.cfg, self.tcfg, self.stop_at_step = cfg, cfg.train, stop_at_step
        self.paths = RunPaths(cfg.output_dir)
        self.out_dir = self.paths.train(self.tcfg.strategy)
        self.checkpoints_dir = self.out_dir / "checkpoints"
        self.logs_dir = self.out_dir / "logs"
        self.final_dir = self.out_dir / "final"
        self.state = TrainState()  # step, refreshes and the reported metrics; saved with every checkpoint
        self.timings: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.resumed_from: Path | None = None
        self.steps_done = 0
        self.accelerator: Any = None

    # -- 1. setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Accelerator, models, cached data, policy / reference / optimizer / schedule, then the resume."""
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        tcfg = self.tcfg
        self.accelerator = acc = Accelerator(
            # Several processes and no GPU: gloo on CPU (`accelerate launch --multi_gpu --num_processes N`).
            cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
            mixed_precision=tcfg.mixed_precision,
            log_with=None if tcfg.tracker == "none" else tcfg.tracker,
            project_config=ProjectConfiguration(
                project_dir=str(self.out_dir), logging_dir=str(self.logs_dir)
            ),
        )
        self.device = acc.device
        # First in the log: what the optimizer will really get (the reference's --scale_lr rule).
        logger.info("%s", describe_scaling(tcfg, acc.num_processes))
        set_seed(tcfg.seed)
        t0 = time.perf_counter()
        # The UNet to train and the noise schedule; text encoders and VAE only ever build the cache.
        model_path, self.family, unet, noise_scheduler = load_models(self.cfg, self.device)
        with acc.main_process_first():
            self.data = self._prepare_data(model_path, unet.config.in_channels)
        self.timings["prepare_s"] = time.perf_counter() - t0

        # Policy (LoRA adapter or all weights), reference (frozen adapter or UNet copy), optimizer, schedule.
        unet, self.reference, params, optimizer, self.lr_scheduler = build_training(
            unet, tcfg, self.device, acc.num_processes
        )
        self.unet, self.optimizer = acc.prepare(unet, optimizer)
        self.raw_unet = acc.unwrap_model(self.unet)
        self.objects = TrainingObjects(
            self.raw_unet, self.reference, self.optimizer, self.lr_scheduler, self.state, scaler=acc.scaler
        )
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.to(self.device)
        self.prediction_type = noise_scheduler.config.prediction_type
        self.ctx = StepContext(
            acc, self.unet, self.reference, self.optimizer, self.lr_scheduler, params, self.data, tcfg,
            self.alphas_cumprod, self.prediction_type,
        )  # fmt: skip

        pairs = {
            "strategy": disk_name(tcfg.strategy),
            "rows": len(self.data),
            "digest": self.data.pairs_digest,
        }
        self.fingerprint = training_fingerprint(
            self.cfg,
            acc.num_processes,
            pairs,
            self.data.candidates,
            encodes_images=self.data.num_vae_encoded > 0,
        )
        self._resume()
        if acc.is_main_process:
            self._write_manifest("running", None)
            if tcfg.tracker != "none":
                acc.init_trackers("dpo", config=_flat_hparams(tcfg))

    def _resume(self) -> None:
        """Continue the newest usable checkpoint of this same run, or start fresh; never another run's state.

        `resume: never` really starts fresh: this strategy's old checkpoints and final weights are removed first.
        A run that starts at step 0 removes a stale `final/` too, so none is ever read beside a newer manifest.
        """
        tcfg, acc = self.tcfg, self.accelerator
        path = None if tcfg.resume == "never" else choose_checkpoint(tcfg.resume, self.checkpoints_dir)
        if path is None:
            stale = [self.final_dir] + ([self.checkpoints_dir] if tcfg.resume == "never" else [])
            if acc.is_main_process:
                for old in (p for p in stale if p.exists()):
                    logger.warning("starting fresh: removing %s", old)
                    shutil.rmtree(old)
            acc.wait_for_everyone()
            return
        what = f"checkpoint {path}"
        check_same_run(read_fingerprint(path), self.fingerprint, what)
        check_step(int(json.loads((path / "checkpoint.json").read_text())["step"]), tcfg.max_steps, what)
        load_checkpoint(path, self.objects, acc.process_index)
        self.last_checkpoint = self.resumed_from = path
        logger.info("resumed from %s at step %d", path, self.state.step)

    def _prepare_data(self, model_path: str, in_channels: int) -> TrainData:
        """Pairs ⋈ candidates with latents and text embeddings cached once (the pipeline loads only to build it)."""
        cfg, device = self.cfg, self.device

        def pipe_factory():
            from pipeline.models.diffusion import load_pipeline

            pipe = load_pipeline(cfg.model, device=str(device))
            if pipe.vae.dtype != torch.float32:  # encode external images in fp32 (SDXL VAE overflows in fp16)
                pipe.vae.to(torch.float32)
            return pipe

        model, tcfg = cfg.model, self.tcfg
        # Images without a stored latent (imported datasets) are brought to the run's resolution.
        rule = ImageRule(cfg.generation.height, cfg.generation.width, tcfg.crop, tcfg.hflip, tcfg.seed)
        return prepare_train_data(
            self.paths.pairs(tcfg.strategy),
            self.paths.candidates,
            self.out_dir / "cache",
            f"{model.pretrained}|{model_path}|{model.revision}|{model.variant}|vae={model.vae}",
            pipe_factory,
            in_channels,
            tcfg.encode_batch_size,
            rule,
        )

    # -- 2. evaluate ----------------------------------------------------------------------------------------
    def _evaluate_pairs(self) -> dict[str, float]:
        """DPO metrics of the policy against the current reference on held pairs, with fixed noise."""
        with self.accelerator.autocast():  # same numerics as the training step (half weights on GPU)
            return evaluate_pairs(
                self.raw_unet, self.reference, self.data, self.alphas_cumprod, self.prediction_type, self.tcfg,
                self.device, self.tcfg.batch_size,
            )  # fmt: skip

    def evaluate_before(self) -> None:
        if self.tcfg.eval_pairs and self.state.step == 0:
            self.state.eval_before = self._evaluate_pairs()

    # -- 3. train -------------------------------------------------------------------------------------------
    def _done(self) -> bool:
        step = self.state.step
        return step >= self.tcfg.max_steps or (self.stop_at_step is not None and step >= self.stop_at_step)

    def train(self) -> None:
        """Optimizer steps until `max_steps` (or `stop_at_step`), each followed by refresh, log and checkpoint."""
        tcfg, acc = self.tcfg, self.accelerator
        progress = Progress(
            f"train ({self.out_dir.name})",
            tcfg.max_steps,
            "steps",
            initial=self.state.step,
            enabled=acc.is_local_main_process,
        )
        window: dict[str, torch.Tensor] = {}
        window_steps = 0
        started = time.perf_counter()
        while not self._done():
            step_metrics = self._optimizer_step()
            self.state.step += 1
            self.steps_done += 1
            progress.update(1)
            if self.state.step == tcfg.max_steps and tcfg.eval_pairs:
                # Before the schedule's last refresh: against a reference just copied from the policy, the
                # comparison would read 0.5 by construction.
                self.state.eval_after = self._evaluate_pairs()
            self._refresh_reference()
            for k, v in step_metrics.items():  # summed on the device; one reduction per log line
                window[k] = window.get(k, 0.0) + v
            window_steps += 1
            if self.state.step % tcfg.log_every == 0 or self.state.step == tcfg.max_steps:
                self._log(window, window_steps, progress)
                window, window_steps = {}, 0
            self._checkpoint()
        progress.close()
        self.timings["train_s"] = time.perf_counter() - started
        self.timings["steps_per_s"] = (
            self.steps_done / self.timings["train_s"] if self.steps_done else math.nan
        )
        if window_steps:
            self.state.metrics = reduce_window(acc, window, window_steps)

    def _optimizer_step(self) -> dict[str, torch.Tensor]:
        """One Diffusion-DPO step; a NaN/inf loss records the failure in the manifest and stops the run."""
        try:
            return optimizer_step(self.ctx, self.state.step)
        except NonFiniteLossError as exc:
            message = f"{exc}; last good checkpoint: {self.last_checkpoint}"
            if self.accelerator.is_main_process:
                write_manifest(
                    self.out_dir,
                    stage="train",
                    status=f"failed: {message}",
                    step=self.state.step,
                    last_checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
                    config=self.cfg.model_dump(mode="json"),
                )
            raise NonFiniteLossError(message) from None

    def _refresh_reference(self) -> None:
        """BalancedDPO's dynamic reference: every `ref_update.every` steps, copy (or blend) the policy into it."""
        ref = self.tcfg.ref_update
        if not should_refresh(self.state.step, ref.mode, ref.every):
            return
        with record_function("dpo/refresh"):
            self.reference.refresh(self.raw_unet, ref.mode, ref.decay)
        self.state.refreshes.append(self.state.step)
        self.accelerator.log({"ref/refresh": 1.0}, step=self.state.step)
        logger.info("reference refreshed (%s) at step %d", ref.mode, self.state.step)

    def _log(self, window: dict[str, torch.Tensor], steps: int, progress: Progress) -> None:
        metrics = self.state.metrics = reduce_window(self.accelerator, window, steps)
        metrics["lr"] = self.lr_scheduler.get_last_lr()[0]
        self.accelerator.log({f"train/{k}": v for k, v in metrics.items()}, step=self.state.step)
        if self.accelerator.is_main_process:  # the report's curves, whatever the tracker
            append_metrics(self.logs_dir / METRICS_FILE, self.state.step, metrics)
        progress.set_note(f"loss {metrics['loss']:.4f}, acc {metrics['implicit_acc']:.2f}")

    def _checkpoint(self) -> None:
        step, tcfg = self.state.step, self.tcfg
        if step % tcfg.checkpoint_every == 0 or step == tcfg.max_steps or step == self.stop_at_step:
            self.last_checkpoint = save_checkpoint(
                self.accelerator,
                self.objects,
                self.fingerprint,
                self.checkpoints_dir,
                step,
                tcfg.keep_checkpoints,
            )

    # -- 4. finish ------------------------------------------------------------------------------------------
    def finish(self) -> TrainOutputs:
        """Final weights (when every step ran) and the manifest; returns where everything is."""
        acc, tcfg = self.accelerator, self.tcfg
        finished = self.state.step >= tcfg.max_steps
        acc.wait_for_everyone()
        exported = finished and acc.is_main_process and self._export_final()
        written_final = self.final_dir if finished else None
        status = "finished" if finished else f"stopped at step {self.state.step}"
        manifest = self.out_dir / "manifest.json"
        if acc.is_main_process:
            self._write_manifest(status, written_final)
            # The hub model card, from the manifest just written; reused weights keep theirs, which the
            # evaluation may have completed since.
            if written_final is not None and (exported or not (written_final / CARD_FILE).is_file()):
                write_model_card(written_final, self.out_dir)
            say(self._summary(written_final))
        acc.wait_for_everyone()
        return TrainOutputs(
            train_dir=self.out_dir,
            final_dir=written_final,
            checkpoints_dir=self.checkpoints_dir,
            logs_dir=self.logs_dir,
            manifest=manifest,
            last_checkpoint=self.last_checkpoint,
            step=self.state.step,
            metrics=dict(self.state.metrics),
            eval_before=dict(self.state.eval_before),
            eval_after=dict(self.state.eval_after),
            refreshes=list(self.state.refreshes),
        )

    def _summary(self, final: Path | None) -> str:
        """`train (majority): step 300 of 300, 300 run in 150 s, implicit accuracy 0.51 → 0.78 → <final>`."""
        line = f"train ({self.out_dir.name}): step {self.state.step} of {self.tcfg.max_steps}"
        if self.steps_done:
            line += f", {self.steps_done} run in {self.timings.get('train_s', 0.0):.0f} s"
        if self.state.eval_before and self.state.eval_after:
            before, after = self.state.eval_before["implicit_acc"], self.state.eval_after["implicit_acc"]
            line += f", implicit accuracy {before:.2f} → {after:.2f}"
        return line + f" → {final if final is not None else self.checkpoints_dir}"

    def _export_final(self) -> bool:
        """The policy in diffusers format, written under a temporary name and renamed into `final/`; False when
        nothing was written.

        A `final/` this run already exported (same fingerprint and step: a rerun that resumed at `max_steps`) is
        kept as it is, so its files, and the evaluation's cached images of them, stay valid.
        """
        info = {
            "base_model": self.cfg.model.pretrained,
            "family": self.family,
            "step": self.state.step,
            "fingerprint": digest(self.fingerprint),
        }
        existing = self.final_dir / WEIGHTS_INFO
        if existing.is_file():
            old = json.loads(existing.read_text())
            if (old.get("fingerprint"), old.get("step")) == (info["fingerprint"], info["step"]):
                return False
        tmp_final = self.out_dir / ".tmp-final"
        shutil.rmtree(tmp_final, ignore_errors=True)
        save_final_weights(self.raw_unet, tmp_final, self.tcfg.use_lora, self.family == "sdxl", info)
        shutil.rmtree(self.final_dir, ignore_errors=True)
        tmp_final.rename(self.final_dir)
        return True

    def _write_manifest(self, status: str, final: Path | None) -> None:
        world, ctx = self.accelerator.num_processes, self.ctx
        write_manifest(
            self.out_dir,
            stage="train",
            status=status,
            config=json.loads(json.dumps(self.cfg.model_dump(mode="json"), default=str)),
            fingerprint=self.fingerprint,
            fingerprint_digest=digest(self.fingerprint),
            family=self.family,
            num_pairs=len(self.data),
            num_images=int(self.data.latents.shape[0]),
            num_prompts=int(self.data.embeds.shape[0]),
            num_vae_encoded=self.data.num_vae_encoded,
            latent_shape=list(self.data.latent_shape),
            num_processes=world,
            global_batch=effective_batch(self.tcfg, world),
            effective_batch=effective_batch(self.tcfg, world),
            effective_learning_rate=effective_learning_rate(self.tcfg, world),
            scale_lr=self.tcfg.scale_lr,
            prediction_type=self.prediction_type,
            prompt_dropout={  # counted over the steps this process ran (since its resume, if any)
                "rate": self.tcfg.prompt_dropout,
                "prompts": ctx.prompts_seen,
                "empty": ctx.prompts_dropped,
                "share": ctx.prompts_dropped / ctx.prompts_seen if ctx.prompts_seen else None,
            },
            step=self.state.step,
            reference_refreshes=self.state.refreshes,
            resumed_from=str(self.resumed_from) if self.resumed_from else None,
            last_checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
            final_weights=str(final) if final else None,
            train_metrics=self.state.metrics,
            eval_before=self.state.eval_before,
            eval_after=self.state.eval_after,
            timings=self.timings,
        )

    def cleanup(self) -> None:
        """End the trackers; with one process, let a later `train()` build a fresh Accelerator."""
        from accelerate.state import AcceleratorState

        if self.accelerator is None:
            return
        self.accelerator.end_training()
        if self.accelerator.num_processes == 1:
            AcceleratorState._reset_state(reset_partial_state=True)
