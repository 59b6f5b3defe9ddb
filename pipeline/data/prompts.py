"""Prompt sources: declarative manifests (data_manifests/*.yaml) or a file given directly, read into one clean table.

A prompt set is a polars DataFrame with `prompt_id`, `prompt`, `source`, in first-seen order. Cleaning is the same for
every source: whitespace is normalised, empty prompts are dropped, duplicates (after normalising) are dropped keeping
the first, and every prompt gets the stable `make_prompt_id`. Long prompts are kept (truncating them is the
tokenizer's job) but counted, so a manifest says how many will be cut at 77 CLIP tokens.

Supported formats: txt (one prompt a line), csv / tsv (a named column), jsonl (a named key), json (a list of strings,
or of objects with a named key), parquet. Local paths and globs work for all of them; remote `hf://` and other fsspec
URLs work for all of them too (parquet, csv and jsonl are read by polars directly, txt and json through fsspec).
"""

from __future__ import annotations

import glob
import json
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from pipeline.config import PromptsSection
from pipeline.schema import make_prompt_id, normalise_prompt

FORMATS = ("txt", "csv", "tsv", "jsonl", "json", "parquet")
_SUFFIXES = {".txt": "txt", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SUFFIXES |= {".json": "json", ".parquet": "parquet"}
CLIP_MAX_TOKENS = 77  # including the start and end tokens


class PromptSourceError(ValueError):
    """A prompt source that cannot be read; the message names the file, the column or the key."""


@dataclass(frozen=True)
class PromptManifest:
    """One `data_manifests/*.yaml` file: where a prompt set lives and how to read it."""

    name: str
    sources: list[str]
    format: str = "auto"
    column: str | None = None
    description: str = ""
    expected_count: int | None = None
    path: Path | None = None


@dataclass
class PromptSet:
    """Cleaned prompts plus the counts that say what cleaning did (recorded in the candidates manifest)."""

    name: str
    table: pl.DataFrame  # prompt_id, prompt, source
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.height

    @property
    def prompts(self) -> list[str]:
        return self.table["prompt"].to_list()


def read_prompt_manifest(path: str | Path) -> PromptManifest:
    """Parse and check a manifest YAML; an unknown or missing key is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise PromptSourceError(f"prompt manifest not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PromptSourceError(f"{path}: a prompt manifest must be a mapping")
    known = {"name", "description", "source", "format", "column", "expected_count"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PromptSourceError(f"{path}: unknown keys {unknown}; expected some of {sorted(known)}")
    if "source" not in data:
        raise PromptSourceError(f"{path}: missing key 'source'")
    sources = data["source"] if isinstance(data["source"], list) else [data["source"]]
    fmt = data.get("format", "auto")
    if fmt != "auto" and fmt not in FORMATS:
        raise PromptSourceError(f"{path}: format {fmt!r} is not one of {FORMATS}")
    return PromptManifest(
        name=str(data.get("name", path.stem)),
        sources=[str(s) for s in sources],
        format=fmt,
        column=data.get("column"),
        description=str(data.get("description", "")),
        expected_count=data.get("expected_count"),
        path=path,
    )


def load_prompts(section: PromptsSection) -> PromptSet:
    """The configured prompt set, cleaned, deduplicated and limited to `section.limit` prompts.

    A source that yields no prompt at all (an empty or blank file) is an error: a run on zero prompts would report
    "0 new rows" as if everything had been done already.
    """
    if section.manifest is not None:
        manifest = read_prompt_manifest(section.manifest)
        fmt = section.format if section.format != "auto" else manifest.format
        column = section.column or manifest.column
        name, sources = manifest.name, [_resolve(s, manifest.path) for s in manifest.sources]
    else:
        assert section.path is not None
        fmt, column, name, sources = section.format, section.column, _set_name(section.path), [section.path]
    parts = [read_raw_prompts(s, fmt, column, section.quoting) for s in sources]
    # Several sources are named subsets of the set (HPD v2's four styles), reported apart by the evaluation.
    subsets = [subset_name(s) for s, part in zip(sources, parts, strict=True) for _ in range(part.len())]
    prompts = clean_prompts(pl.concat(parts), source=name, subsets=subsets if len(sources) > 1 else None)
    if len(prompts) == 0:
        raise PromptSourceError(
            f"no prompts in {', '.join(sources)}: {prompts.stats['n_read']} entries read, all empty or blank"
        )
    expected = manifest.expected_count if section.manifest is not None else None
    if expected is not None:
        prompts.stats["expected_count"] = expected
        if prompts.stats["n_read"] != expected:
            warnings.warn(
                f"{section.manifest}: expected {expected} prompts, read {prompts.stats['n_read']} from {sources}",
                stacklevel=2,
            )
    if section.limit is not None:
        prompts.table = prompts.table.head(section.limit)
        prompts.stats["n_prompts"] = prompts.table.height
        prompts.stats["limit"] = section.limit
    prompts.stats["sources"] = sources
    return prompts


def _set_name(path: str) -> str:
    """The prompt set's name for a file given directly: its stem, or the folder name of a glob."""
    p = Path(path)
    return (p.parent.name or "prompts") if _is_glob(path) else p.stem


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _resolve(source: str, manifest_path: Path | None) -> str:
    """Relative sources are read from the project root (the cwd), else beside the manifest."""
    if "://" in source or Path(source).is_absolute() or glob.glob(source) or manifest_path is None:
        return source
    beside = manifest_path.parent / source
    return str(beside) if glob.glob(str(beside)) else source


def detect_format(source: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(source.split("?")[0]).suffix.lower()
    if suffix not in _SUFFIXES:
        raise PromptSourceError(f"cannot tell the format of {source!r} from its suffix; set format")
    return _SUFFIXES[suffix]


def source_files(source: str) -> list[str]:
    """The files a source names: a local file, every file a local glob matches (sorted), or one remote URL.

    `tiny/...` names data the project makes itself on first use (`pipeline.data.embedded`).
    """
    from pipeline.data.embedded import resolve_data_path

    source = resolve_data_path(source)
    if "://" in source:
        return [source]
    files = sorted(f for f in glob.glob(source) if Path(f).is_file())
    if not files:
        raise PromptSourceError(f"prompt file not found: {source}")
    return files


def read_raw_prompts(
    source: str, fmt: str = "auto", column: str | None = None, quoting: str = "auto"
) -> pl.Series:
    """All prompt strings of one source (a file, a glob or a URL), uncleaned (nulls and duplicates included)."""
    files = source_files(source)
    return pl.concat([read_prompt_file(f, fmt, column, quoting) for f in files]).rename("prompt")


def read_prompt_file(
    path: str, fmt: str = "auto", column: str | None = None, quoting: str = "auto"
) -> pl.Series:
    """The prompt strings of one file; every read error names the file.

    `quoting` (csv/tsv): `auto` reads TSV raw, without quote processing (a TSV field cannot hold a tab, and in real
    prompt sets such as PartiPrompts a field may start with a quote that is part of the prompt) and CSV with
    standard double quotes; `none` and `csv` force one of the two.
    """
    fmt = detect_format(path, fmt)
    try:
        if fmt == "txt":
            return pl.Series("prompt", _read_text(path).splitlines(), dtype=pl.String)
        if fmt == "json":
            return _json_prompts(json.loads(_read_text(path)), path, column)
        key = column or "prompt"
        if fmt == "parquet":
            frame = pl.scan_parquet(path)
        elif fmt in ("csv", "tsv"):
            raw = quoting == "none" or (quoting == "auto" and fmt == "tsv")
            frame = pl.scan_csv(
                path,
                separator="\t" if fmt == "tsv" else ",",
                infer_schema=False,
                quote_char=None if raw else '"',
            )
        else:
            frame = pl.scan_ndjson(path, infer_schema_length=None)
        names = frame.collect_schema().names()
        if key not in names:
            raise PromptSourceError(f"{path}: no column {key!r}; columns are {names}")
        return frame.select(pl.col(key).cast(pl.String).alias("prompt")).collect()["prompt"]
    except UnicodeDecodeError as exc:
        raise PromptSourceError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8"
        ) from None
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        if isinstance(exc, PromptSourceError):
            raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PromptSourceError(f"{path}: cannot read {fmt} prompts: {first_line}") from exc


def _read_text(path: str) -> str:
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    return Path(path).read_text(encoding="utf-8")


def _json_prompts(data: Any, source: str, column: str | None) -> pl.Series:
    if not isinstance(data, list):
        raise PromptSourceError(f"{source}: a json prompt file must hold a list, found {type(data).__name__}")
    key = column or "prompt"
    values: list[str | None] = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            if key not in item:
                raise PromptSourceError(f"{source}: item {i} has no key {key!r}")
            item = item[key]
        values.append(None if item is None else str(item))
    return pl.Series("prompt", values, dtype=pl.String)


def subset_name(source: str) -> str:
    """The subset a source file holds, named after the file: `.../benchmark/anime.json` → `anime`."""
    return Path(source.split("?")[0]).stem


def clean_prompts(
    raw: pl.Series | list[str | None], source: str, subsets: list[str] | None = None
) -> PromptSet:
    """Normalise whitespace, drop empties and duplicates (keeping the first), add stable prompt ids.

    `subsets` names the subset of each raw prompt (a prompt in two subsets stays in the first); the table's
    `subset` column is null when the set has none.
    """
    raw = pl.Series("prompt", raw, dtype=pl.String) if isinstance(raw, list) else raw.rename("prompt")
    n_read = raw.len()
    if subsets is not None and len(subsets) != n_read:
        raise ValueError(f"{len(subsets)} subset names for {n_read} prompts")
    normalised = raw.map_elements(normalise_prompt, return_dtype=pl.String).fill_null("")
    frame = pl.DataFrame(
        {"prompt": normalised, "subset": pl.Series(subsets or [None] * n_read, dtype=pl.String)}
    )
    non_empty = frame.filter(pl.col("prompt") != "")
    kept = non_empty.unique(subset="prompt", keep="first", maintain_order=True)
    unique = kept["prompt"]
    table = pl.DataFrame(
        {
            "prompt_id": unique.map_elements(make_prompt_id, return_dtype=pl.String),
            "prompt": unique,
            "source": pl.Series([source] * unique.len(), dtype=pl.String),
            "subset": kept["subset"],
        }
    )
    stats = {
        "n_read": n_read,
        "n_empty": n_read - non_empty.height,
        "n_duplicate": non_empty.height - unique.len(),
        "n_prompts": unique.len(),
        "n_long": count_long_prompts(unique.to_list()),
        "long_threshold_tokens": CLIP_MAX_TOKENS,
    }
    return PromptSet(name=source, table=table, stats=stats)


def count_long_prompts(prompts: list[str], max_tokens: int = CLIP_MAX_TOKENS) -> int:
    """Prompts longer than the CLIP context (start + end tokens included): the tokenizer will truncate them.

    A CLIP BPE token covers at least one non-space character, so only prompts with more than `max_tokens - 2`
    non-space characters can be long; only those are tokenised.
    """
    budget = max_tokens - 2
    candidates = [p for p in prompts if sum(not c.isspace() for c in p) > budget]
    if not candidates:
        return 0
    tokenizer = _clip_bpe()
    return sum(len(tokenizer.encode(p)) > budget for p in candidates)


@lru_cache(maxsize=1)
def _clip_bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def prompts_from_strings(prompts: list[str], source: str = "inline") -> PromptSet:
    """A prompt set from a Python list (notebooks, evaluation): the same cleaning as a file."""
    return clean_prompts(list(prompts), source=source)


__all__ = [
    "FORMATS",
    "PromptManifest",
    "PromptSet",
    "PromptSourceError",
    "clean_prompts",
    "count_long_prompts",
    "detect_format",
    "load_prompts",
    "prompts_from_strings",
    "read_prompt_file",
    "read_prompt_manifest",
    "read_raw_prompts",
    "source_files",
    "subset_name",
]
