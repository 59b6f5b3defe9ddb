"""The run directory, defined once: every stage finds its inputs and puts its outputs through `RunPaths`.

    <run>/
      candidates/              stage 1: one row per image          (part-*.parquet, manifest.json)
      errors/                  stage 1: rows quarantined by a scorer
      human_pairs/             relabel mode: the imported dataset's own labels
      pairs/<strategy>/        stage 2: one directory per strategy (diagnostics/ inside)
      train/<strategy>/        trainer: cache/, checkpoints/, logs/, final/, manifest.json
      eval/                    evaluation: candidates/, winrates.{md,parquet,png}, per_image.parquet
      ablation/<variant>/      one run directory per ablation variant; ablation/eval/ compares them
      round_<r>/               online rounds (run.rounds > 1): a run directory per round, plus policy/
      report/                  the run's HTML report: index.html and the images it shows
      experiment/              the paper's table (`ExperimentPaths`): methods/<name>/ (a run directory per
                               method), configs/<name>.yaml, eval/ (shared images, vs_base/, vs_<baseline>/),
                               table.{md,parquet,png}, manifest.json (each part and what defines it)

Every table directory holds its rows in `part-<key>.parquet` files beside a `manifest.json`; readers list the
files with `table_files` (a directory without a manifest is an unfinished write). A strategy's directory is its
disk name (`single:clip` → `single_clip`), whoever asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TABLE_GLOB = "part-*.parquet"


def part_name(key: str | int) -> str:
    """The file name of one part of a table: `part-<key>.parquet` (integers zero-padded to five digits)."""
    return f"part-{key:05d}.parquet" if isinstance(key, int) else f"part-{key}.parquet"


def table_files(directory: str | Path) -> list[Path]:
    """The finished data files of a table directory, in a stable order (temporary files are hidden names)."""
    return sorted(Path(directory).glob(TABLE_GLOB))


def strategy_dir_name(strategy: str) -> str:
    """The directory of a strategy: its disk name, checked (`single:clip` → `single_clip`; `../x` is an error)."""
    from pipeline.voting.strategies import disk_name

    return disk_name(strategy)


@dataclass(frozen=True)
class RunPaths:
    """Where a run's tables, weights and reports live; see the module docstring for the layout."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def candidates(self) -> Path:
        return self.root / "candidates"

    @property
    def errors(self) -> Path:
        return self.root / "errors"

    @property
    def human_pairs(self) -> Path:
        return self.root / "human_pairs"

    def pairs(self, strategy: str) -> Path:
        return self.root / "pairs" / strategy_dir_name(strategy)

    def train(self, strategy: str) -> Path:
        return self.root / "train" / strategy_dir_name(strategy)

    def final_weights(self, strategy: str) -> Path:
        return self.train(strategy) / "final"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def ablation(self, variant: str) -> RunPaths:
        return RunPaths(self.root / "ablation" / variant)

    @property
    def ablation_eval(self) -> Path:
        return self.root / "ablation" / "eval"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def experiment(self) -> ExperimentPaths:
        return ExperimentPaths(self.root / "experiment")

    def round(self, r: int) -> RunPaths:
        return RunPaths(self.root / f"round_{r}")

    @property
    def policy(self) -> Path:
        """A round's policy as a complete diffusers directory (online rounds)."""
        return self.root / "policy"


@dataclass(frozen=True)
class ExperimentPaths:
    """Where the experiment (`pipeline/experiment.py`) puts each part of the paper's table."""

    root: Path

    def method(self, name: str) -> RunPaths:
        """A method's own run directory: its pairs, training and final weights (candidates link to the run's)."""
        return RunPaths(self.root / "methods" / name)

    def config(self, name: str) -> Path:
        """A method's resolved config, for `accelerate launch trainer/train.py --config` on a cluster."""
        return self.root / "configs" / f"{name}.yaml"

    @property
    def eval(self) -> Path:
        """The evaluations' shared image cache (`eval/candidates/`) and their directories."""
        return self.root / "eval"

    def evaluation(self, baseline: str) -> Path:
        return self.eval / f"vs_{baseline}"

    def table(self, suffix: str) -> Path:
        return self.root / f"table.{suffix}"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"
