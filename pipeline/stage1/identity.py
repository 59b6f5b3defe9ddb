"""What makes a candidate image besides its id: the settings recorded with a table and checked on every rerun.

`image_id` hashes prompt, model tag and seed, so a rerun recognises its images; but the pixels also depend on the
size, the steps, the guidance, the scheduler, the dtype and the weights behind the model tag. A rerun with other
settings would find every id done, report "0 new rows" and keep the old images, or add images of another size that
the vote pairs with the old ones and the trainer rejects. So a candidates table holds images of one set of
settings: they are recorded in its `manifest.json` (`image_settings`) before anything is generated, and a call
whose settings differ is refused before any work is planned.

Pure functions of the config and the recorded manifest; the evaluation's own candidates go through the same check
(every stage-1 call does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import RunConfig
from pipeline.schema import SeedScheme
from pipeline.stage1.errors import Stage1Error

IMAGE_SETTINGS = "image_settings"  # the manifest key
# What the rows of a table record themselves: the check for tables written before settings were recorded.
ROW_SETTINGS = ("height", "width", "num_inference_steps", "guidance_scale")


class SettingsMismatchError(Stage1Error):
    """A stage-1 call whose image settings differ from those of the table it would add to."""


# Tables written before a setting existed were made the one way there was then: read them so, rather than not at all.
SETTINGS_BEFORE_RECORDED = {"seed_scheme": "shared"}


def image_settings(
    cfg: RunConfig, model_refs: Mapping[str, Any], relabel: bool, seed_scheme: SeedScheme | None = None
) -> dict[str, Any]:
    """The settings that decide the pixels of this call's images (`model_refs`: tag → reference).

    `seed_scheme` (default `cfg.generation.seed_scheme`): a table holds one scheme, since a rerun under the other
    would add a second set of candidates instead of recognising the first.
    """
    if relabel:
        return {"mode": "relabel", "source": str(cfg.prompts.pairs)}
    gen, model = cfg.generation, cfg.model
    return {
        "mode": "generate",
        "seed_scheme": seed_scheme or gen.seed_scheme,
        "height": gen.height,
        "width": gen.width,
        "num_inference_steps": gen.num_inference_steps,
        "guidance_scale": _guidance(gen.guidance_scale),
        "scheduler": gen.scheduler,
        "dtype": model.dtype,
        "revision": model.revision,
        "variant": model.variant,
        # A callable loader is known by its tag only (the evaluation puts a weight fingerprint into it).
        "models": {
            tag: "<loader>" if callable(ref) else str(ref or model.pretrained)
            for tag, ref in model_refs.items()
        },
    }


def _guidance(value: float) -> float:
    """Guidance as compared: the rows store float32 (7.3 reads back as 7.300000190734863)."""
    return round(float(value), 4)


def settings_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key: old → new` for every setting both sides state that differs (a table written before a setting was
    recorded is not judged on it); model tags only count when both sides have them."""
    changes = []
    for key in sorted(set(recorded) & set(current)):
        if key == "models":
            continue
        old, new = recorded.get(key), current.get(key)
        if old != new:
            changes.append(f"{key}: {old!r} → {new!r}")
    old_models, new_models = recorded.get("models") or {}, current.get("models") or {}
    for tag in sorted(set(old_models) & set(new_models)):
        if old_models[tag] != new_models[tag]:
            changes.append(f"model tag {tag!r}: {old_models[tag]!r} → {new_models[tag]!r}")
    return changes


def merged_settings(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a table holds after this call: the recorded ones plus any new model tags."""
    if not recorded:
        return dict(current)
    out = dict(recorded)
    if "models" in current:
        out["models"] = {**(recorded.get("models") or {}), **current["models"]}
    return out


def check_image_settings(
    candidates_dir: Path, recorded: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> dict[str, Any]:
    """Refuse a call whose settings differ from the table's; return the settings to record after it.

    `recorded` is the manifest's `image_settings` or, for a table written before they were recorded, what its
    rows say (`settings_from_rows`).
    """
    if recorded and recorded.get("mode") == "generate":
        recorded = {**SETTINGS_BEFORE_RECORDED, **recorded}
    changes = settings_changes(recorded, current) if recorded else []
    if changes:
        raise SettingsMismatchError(
            f"{candidates_dir} holds images made with other settings ({'; '.join(changes)}); a rerun never "
            "mixes them or reuses the old images. Write to another run directory (run.output_dir, or --out-dir), "
            f"or delete {candidates_dir} (and {candidates_dir.parent / 'errors'}) to regenerate"
        )
    return merged_settings(recorded, current)


def settings_from_rows(rows: list[dict[str, Any]], candidates_dir: Path) -> dict[str, Any] | None:
    """The settings a table's rows record: the distinct (`ROW_SETTINGS`) rows of a table written before settings
    were recorded. Imported images (0 steps, any size) are relabel mode; None for an empty table."""
    if not rows:
        return None
    imported = [r for r in rows if r["num_inference_steps"] == 0]
    generated = [r for r in rows if r["num_inference_steps"] != 0]
    if (imported and generated) or len(generated) > 1:
        raise SettingsMismatchError(
            f"{candidates_dir} already mixes images of several settings {generated + imported[:1]}: regenerate it "
            "in a new run directory"
        )
    if imported:
        return {"mode": "relabel"}
    found = {k: generated[0][k] for k in ROW_SETTINGS}
    found["guidance_scale"] = _guidance(found["guidance_scale"])
    return {"mode": "generate", **found}
