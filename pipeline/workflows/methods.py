"""The methods of the paper's table, as training variants of one run configuration.

| method | labels (vote strategy) | reference |
|---|---|---|
| `balanced_dpo` | majority of the metrics | dynamic (the config's `train.ref_update`, hard or EMA) |
| `diffusion_dpo` | `experiment.baseline_labels`: the dataset's human labels (relabel mode), or one metric | static |
| `static_reference` | majority | static: the ablation of the dynamic reference |
| `random_metric` | one metric drawn per pair | dynamic |
| `sum` | raw score sum | dynamic |
| `normalized_sum` | sum of per-prompt z-scores | dynamic |

Diffusion-DPO (Wallace et al.) trains against the frozen initial model, hence `train.ref_update.mode=none`; every
other setting (β, learning rate, steps, batch) is the config's for all methods, so they differ only where the
paper's comparison does. `experiment.extra_methods` adds variants as `STRATEGY[:KEY=VALUE|:shuffle]...`.
"""

from __future__ import annotations

from pipeline.config import RunConfig
from pipeline.workflows.ablation import Variant, parse_variant

STATIC = "train.ref_update.mode=none"


class MethodError(ValueError):
    """The experiment's methods cannot be trained with this config; the message says what to change."""


def paper_methods(baseline_labels: str) -> dict[str, Variant]:
    return {
        "balanced_dpo": Variant("balanced_dpo", "majority"),
        "diffusion_dpo": Variant("diffusion_dpo", baseline_labels, (STATIC,)),
        "static_reference": Variant("static_reference", "majority", (STATIC,)),
        "random_metric": Variant("random_metric", "random_metric"),
        "sum": Variant("sum", "sum"),
        "normalized_sum": Variant("normalized_sum", "normalized_sum"),
    }


def experiment_methods(cfg: RunConfig) -> list[Variant]:
    """The configured methods in order; an error when the config cannot train them as the paper defines them."""
    exp = cfg.experiment
    if exp.baseline_labels == "human" and cfg.prompts.pairs is None:
        raise MethodError(
            "experiment.baseline_labels is human, but the prompts carry no labels: set prompts.pairs to a "
            "Pick-a-Pic-layout table (relabel mode), or experiment.baseline_labels to single:<metric>"
        )
    if cfg.train.ref_update.mode == "none":
        raise MethodError(
            "BalancedDPO trains with a dynamic reference, but train.ref_update.mode is none: set it to hard or "
            "ema (the static-reference methods set none themselves)"
        )
    known = paper_methods(exp.baseline_labels)
    for name, spec in exp.extra_methods.items():
        variant = parse_variant(f"{name}={spec}")
        known[name] = variant
    if "base" in known:
        raise MethodError("a method cannot be called 'base': that names the base model in the tables")
    return [known[name] for name in exp.methods]
