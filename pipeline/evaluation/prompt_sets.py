"""The prompt sets of an evaluation: loaded once, generated together, reported apart and pooled.

Every configured set (`eval.prompt_sets`, or the one `eval.prompts`) is loaded and cleaned as stage 1 loads prompts.
The union (a prompt in two sets once) is what stage 1 generates, in one call; the *groups* say which items each
table row covers: each set, each named subset of a set (HPD v2's four styles: `hpdv2_benchmark/anime`, ...), and,
with more than one set, `pooled` (every item once).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.config import PromptsSection
from pipeline.data.prompts import PromptSet, load_prompts
from pipeline.evaluation.models import EvalError

POOLED = "pooled"


@dataclass
class EvalPromptSets:
    """The loaded sets by name, their union for generation, and the membership of every prompt."""

    sets: dict[str, tuple[PromptsSection, PromptSet]]
    union: PromptSet
    membership: pl.DataFrame  # prompt_id, group: one row per (prompt, group it is reported in)

    @property
    def groups(self) -> list[str]:
        return self.membership["group"].unique(maintain_order=True).to_list()


def group_membership(sets: dict[str, PromptSet]) -> pl.DataFrame:
    """(prompt_id, group) rows: each set, each of its subsets as `set/subset`, and `pooled` for several sets."""
    frames = []
    for name, prompt_set in sets.items():
        table = prompt_set.table
        frames.append(table.select("prompt_id", group=pl.lit(name)))
        with_subset = table.filter(pl.col("subset").is_not_null())
        frames.append(with_subset.select("prompt_id", group=pl.lit(name + "/") + pl.col("subset")))
    if len(sets) > 1:
        union = pl.concat([ps.table.select("prompt_id") for ps in sets.values()]).unique(maintain_order=True)
        frames.append(union.with_columns(group=pl.lit(POOLED)))
    return pl.concat(frames).unique(maintain_order=True)


def load_eval_prompt_sets(sections: dict[str, PromptsSection]) -> EvalPromptSets:
    """Load every named set; an error when there is none or a set is empty."""
    if not sections:
        raise EvalError(
            "no evaluation prompts: set eval.prompts (one set) or eval.prompt_sets (several), held out from training"
        )
    sets = {name: (section, load_prompts(section)) for name, section in sections.items()}
    for name, (_, prompt_set) in sets.items():
        if len(prompt_set) == 0:
            raise EvalError(f"prompt set {name!r} holds no prompts")
    table = pl.concat([ps.table.with_columns(source=pl.lit(name)) for name, (_, ps) in sets.items()]).unique(
        subset="prompt_id", keep="first", maintain_order=True
    )
    union = PromptSet(name="+".join(sets), table=table, stats={"n_prompts": table.height})
    membership = group_membership({name: ps for name, (_, ps) in sets.items()})
    return EvalPromptSets(sets, union, membership)
