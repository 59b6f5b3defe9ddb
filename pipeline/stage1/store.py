"""Where stage 1's rows land: `<run>/candidates/part-*.parquet` and `<run>/errors/part-*.parquet`, exactly once.

The store is driven from one process (the Ray driver), so "exactly once" is a set of image ids, not a protocol
between workers: ids already on disk (from an earlier, possibly killed, run) are skipped before any work is planned,
and a row that reaches the writer twice (Ray re-executes a task after a worker dies) is dropped the second time.
Each file is written under a temporary name and renamed, so a killed run leaves only whole files; stale temporary
files are removed when a store is opened.

Read the tables with `pipeline.paths.table_files(dir)` or the `part-*.parquet` glob (the directory also holds
`manifest.json`): `pl.scan_parquet("<run>/candidates/part-*.parquet")`, `pd.read_parquet(glob.glob(...))`,
`datasets.load_dataset("parquet", data_files="<run>/candidates/part-*.parquet")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import read_manifest, write_manifest, write_parquet_atomic
from pipeline.paths import RunPaths, part_name, table_files
from pipeline.schema import CANDIDATE_FIELDS, candidates_schema, metric_columns
from pipeline.stage1.batches import ERROR_COLUMN, GEN_SECONDS, SCORE_SECONDS
from pipeline.stage1.errors import Stage1Error
from pipeline.stage1.identity import IMAGE_SETTINGS, ROW_SETTINGS, check_image_settings, settings_from_rows

ERRORS_SCHEMA = pa.schema([*CANDIDATE_FIELDS, pa.field("error", pa.string(), nullable=False)])


def read_ids(directory: str | Path) -> set[str]:
    files = table_files(directory)
    if not files:
        return set()
    return set(pl.scan_parquet(files).select("image_id").collect()["image_id"].to_list())


def count_rows(directory: str | Path) -> int:
    files = table_files(directory)
    return pl.scan_parquet(files).select(pl.len()).collect().item() if files else 0


def steady_images_per_second(write_log: list[tuple[float, int]]) -> float | None:
    """Throughput between the first and the last batch written: start-up (model loading) left out.

    The first batch's rows are not counted, since its time is the start of the window. None with < 2 batches.
    """
    if len(write_log) < 2:
        return None
    (t0, _), (t1, _) = write_log[0], write_log[-1]
    rows = sum(n for _, n in write_log[1:])
    return rows / (t1 - t0) if t1 > t0 else None


class CandidateStore:
    """Writes scored batches into `<run>/candidates/` and quarantined rows into `<run>/errors/`."""

    def __init__(self, paths: RunPaths, metrics: list[str]) -> None:
        self.candidates_dir = paths.candidates
        self.errors_dir = paths.errors
        self.metrics = list(metrics)
        self.schema = candidates_schema(self.metrics)
        for directory in (self.candidates_dir, self.errors_dir):
            directory.mkdir(parents=True, exist_ok=True)
            for stale in directory.glob(".part-*.tmp"):
                stale.unlink()
        self._check_existing_metrics()
        self.done: set[str] = read_ids(self.candidates_dir) | read_ids(self.errors_dir)
        self.n_written = 0
        self.n_errors = 0
        self.n_duplicates_dropped = 0
        self.gen_seconds = 0.0
        self.score_seconds = 0.0
        self.write_log: list[tuple[float, int]] = []  # (perf_counter, rows) per batch that brought new rows
        self.settings: dict[str, Any] | None = None  # the table's image settings, once checked

    def _check_existing_metrics(self) -> None:
        files = table_files(self.candidates_dir)
        if not files:
            return
        found = metric_columns(pq.read_schema(files[0]).names)
        if found != self.metrics:
            raise Stage1Error(
                f"{files[0]} was written with metrics {found}, this run scores {self.metrics}; "
                f"write to another run directory"
            )

    def _manifest(self) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return read_manifest(self.candidates_dir)
        return {}

    def check_settings(self, current: dict[str, Any]) -> dict[str, Any]:
        """Refuse a call whose image settings differ from the table's (`pipeline.stage1.identity`).

        The table's settings come from its manifest or, for a table written before they were recorded, its rows.
        """
        recorded = self._manifest().get(IMAGE_SETTINGS)
        if recorded is None:
            files = table_files(self.candidates_dir) + table_files(self.errors_dir)
            if files:
                rows = pl.scan_parquet(files).select(ROW_SETTINGS).unique().collect().to_dicts()
                recorded = settings_from_rows(rows, self.candidates_dir)
        self.settings = check_image_settings(self.candidates_dir, recorded, current)
        return self.settings

    def record_settings(self) -> None:
        """Write the checked settings into the manifest before the first image is generated: a run killed
        before its own manifest still leaves a table whose settings are known."""
        manifest = self._manifest()
        if manifest.get(IMAGE_SETTINGS) == self.settings:
            return
        kept = {k: v for k, v in manifest.items() if k not in ("created", "packages", IMAGE_SETTINGS)}
        write_manifest(self.candidates_dir, **kept, **{IMAGE_SETTINGS: self.settings})

    def write(self, batch: pa.Table) -> int:
        """Write the rows of `batch` not written before; returns how many rows were new."""
        ids = batch.column("image_id").to_pylist()
        fresh, seen = [], set()
        for i, image_id in enumerate(ids):
            if image_id in self.done or image_id in seen:
                continue
            seen.add(image_id)
            fresh.append(i)
        self.n_duplicates_dropped += len(ids) - len(fresh)
        if not fresh:
            return 0
        batch = batch.take(pa.array(fresh, pa.int64()))
        self._add_timings(batch)
        errors = (
            batch.column(ERROR_COLUMN).to_pylist()
            if ERROR_COLUMN in batch.column_names
            else [None] * batch.num_rows
        )
        ok = pa.array([e is None for e in errors])
        good, bad = batch.filter(ok), batch.filter(pc.invert(ok))
        if good.num_rows:
            self._write_part(self.candidates_dir, good.select(self.schema.names).cast(self.schema))
        if bad.num_rows:
            quarantined = bad.select([f.name for f in CANDIDATE_FIELDS]).append_column(
                "error", bad.column(ERROR_COLUMN)
            )
            self._write_part(self.errors_dir, quarantined.cast(ERRORS_SCHEMA))
        self.done.update(batch.column("image_id").to_pylist())
        self.n_written += good.num_rows
        self.n_errors += bad.num_rows
        self.write_log.append((time.perf_counter(), batch.num_rows))
        return batch.num_rows

    def _add_timings(self, batch: pa.Table) -> None:
        if GEN_SECONDS in batch.column_names:
            self.gen_seconds += float(pc.sum(batch.column(GEN_SECONDS)).as_py() or 0.0)
        if SCORE_SECONDS in batch.column_names:
            self.score_seconds += float(pc.sum(batch.column(SCORE_SECONDS)).as_py() or 0.0)

    @staticmethod
    def _write_part(directory: Path, table: pa.Table) -> Path:
        digest = hashlib.sha1("\n".join(sorted(table.column("image_id").to_pylist())).encode()).hexdigest()
        return write_parquet_atomic(table, directory / part_name(digest[:16]))

    def write_manifest(self, call: dict[str, Any], **fields: Any) -> Path:
        """`<run>/candidates/manifest.json`: totals on disk, plus the history of calls that wrote them."""
        calls = list(self._manifest().get("calls", []))
        calls.append(call)
        return write_manifest(
            self.candidates_dir,
            schema=[{"name": f.name, "type": str(f.type)} for f in self.schema],
            metrics=self.metrics,
            **{IMAGE_SETTINGS: self.settings},
            n_rows=count_rows(self.candidates_dir),
            n_errors=count_rows(self.errors_dir),
            calls=calls,
            **fields,
        )
