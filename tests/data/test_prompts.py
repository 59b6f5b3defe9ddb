"""Prompt sources: every format, the cleaning rules, stable ids, and errors that name the file or column."""

from __future__ import annotations

import json

import fsspec
import polars as pl
import pytest

from pipeline.config import ConfigError, PromptsSection, load_config
from pipeline.data.prompts import (
    PromptSourceError,
    clean_prompts,
    count_long_prompts,
    load_prompts,
    read_prompt_manifest,
    read_raw_prompts,
)
from pipeline.schema import make_prompt_id

RAW = ["  a red   circle ", "", "a blue square", "a red circle", None, "a\tblue square", "a green cone"]
CLEAN = ["a red circle", "a blue square", "a green cone"]


def _write_all_formats(tmp_path) -> dict[str, str]:
    frame = pl.DataFrame({"text": RAW, "other": list(range(len(RAW)))})
    paths = {}
    paths["txt"] = tmp_path / "p.txt"
    paths["txt"].write_text("\n".join("" if p is None else p.replace("\t", " ") for p in RAW) + "\n")
    paths["csv"] = tmp_path / "p.csv"
    frame.write_csv(paths["csv"])
    paths["tsv"] = tmp_path / "p.tsv"
    frame.write_csv(paths["tsv"], separator="\t")
    paths["jsonl"] = tmp_path / "p.jsonl"
    frame.write_ndjson(paths["jsonl"])
    paths["json"] = tmp_path / "p.json"
    paths["json"].write_text(json.dumps([{"text": p} for p in RAW]))
    paths["parquet"] = tmp_path / "p.parquet"
    frame.write_parquet(paths["parquet"])
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl", "json", "parquet"])
def test_every_format_gives_the_same_clean_prompts(tmp_path, fmt):
    path = _write_all_formats(tmp_path)[fmt]
    # polars writes the TSV CSV-style, quoting the field that holds a tab: say so (raw TSV is the default).
    quoting = "csv" if fmt == "tsv" else "auto"
    section = PromptsSection(path=path, column=None if fmt == "txt" else "text", quoting=quoting)
    prompts = load_prompts(section)
    assert prompts.prompts == CLEAN
    assert prompts.table["prompt_id"].to_list() == [make_prompt_id(p) for p in CLEAN]
    assert prompts.table["source"].unique().to_list() == ["p"]
    assert prompts.stats["n_read"] == len(RAW)
    assert prompts.stats["n_empty"] == 2
    assert prompts.stats["n_duplicate"] == 2


def test_cleaning_keeps_first_occurrence_and_ids_are_whitespace_invariant():
    out = clean_prompts(["b  x", "a", "b x", " a "], source="s")
    assert out.prompts == ["b x", "a"]
    assert out.table["prompt_id"][0] == make_prompt_id("  b x\n")


def test_json_list_of_strings_from_an_fsspec_url():
    """Remote sources other than parquet/csv/jsonl go through fsspec (hf:// in real manifests)."""
    with fsspec.open("memory://prompts/hpd.json", "w") as fh:
        fh.write(json.dumps(["a cat", "a dog", "a cat"]))
    assert read_raw_prompts("memory://prompts/hpd.json").to_list() == ["a cat", "a dog", "a cat"]


def test_missing_file_and_column_are_named(tmp_path):
    with pytest.raises(PromptSourceError, match="nope.txt"):
        read_raw_prompts(str(tmp_path / "nope.txt"))
    path = _write_all_formats(tmp_path)["csv"]
    with pytest.raises(PromptSourceError, match=r"no column 'caption'.*\['text', 'other'\]"):
        read_raw_prompts(path, column="caption")
    with pytest.raises(PromptSourceError, match="item 0 has no key 'caption'"):
        read_raw_prompts(_write_all_formats(tmp_path)["json"], column="caption")


def test_long_prompts_are_kept_and_counted():
    long = "a very detailed painting of " + "a castle and a dragon and a knight " * 10
    out = clean_prompts(["short one", long], source="s")
    assert out.prompts[1] == " ".join(long.split())  # kept whole: truncation is the tokenizer's job
    assert out.stats["n_long"] == 1
    assert count_long_prompts(["x" * 70, "word " * 80]) == 1


def test_limit_applies_after_dedupe(tmp_path):
    path = _write_all_formats(tmp_path)["txt"]
    assert load_prompts(PromptsSection(path=path, limit=2)).prompts == CLEAN[:2]


def test_repository_manifests_parse_and_local_ones_load():
    tiny = load_prompts(load_config("configs/tiny.yaml").prompts)
    held_out = load_prompts(PromptsSection(manifest="data_manifests/tiny_eval.yaml"))
    assert (len(tiny), len(held_out)) == (24, 16)
    assert not set(tiny.prompts) & set(held_out.prompts)
    parti = read_prompt_manifest("data_manifests/partiprompts.yaml")
    assert (parti.column, parti.expected_count) == ("Prompt", 1632)
    assert read_prompt_manifest("data_manifests/pickapic_v2_captions.yaml").column == "caption"
    hpd = read_prompt_manifest("data_manifests/hpdv2_benchmark.yaml")
    assert [s.rsplit("/", 1)[1] for s in hpd.sources] == [
        "anime.json",
        "concept-art.json",
        "paintings.json",
        "photo.json",
    ]


def test_manifest_with_unknown_key_is_an_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsource: a.txt\ncolum: typo\n")
    with pytest.raises(PromptSourceError, match=r"bad.yaml: unknown keys \['colum'\]"):
        read_prompt_manifest(bad)


def test_pairs_source_replaces_the_default_manifest():
    section = PromptsSection(pairs="data.parquet")
    assert section.manifest is None
    with pytest.raises(ValueError, match="exactly one"):
        PromptsSection(path="a.txt", manifest="m.yaml")


def test_a_manifest_count_mismatch_is_recorded_and_warned(tmp_path):
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"name: m\nsource: {tmp_path / 'p.txt'}\nexpected_count: 3\n")
    with pytest.warns(UserWarning, match="expected 3 prompts, read 2"):
        prompts = load_prompts(PromptsSection(manifest=str(manifest)))
    assert prompts.stats["expected_count"] == 3


# A file of the real PartiPrompts TSV's shape: four columns, and fields that start with a quote that belongs to the
# prompt (quote processing reads them as an unterminated quoted field).
PARTI_TSV = (
    "Prompt\tCategory\tChallenge\tNote\n"
    "a cat sitting on a mat\tAnimals\tBasic\t\n"
    '"The Starry Night" by van Gogh, as a photograph\tArts\tStyle & Format\tfamous painting\n'
    "a dog\tAnimals\tBasic\t\n"
    '"hello" written on a sign\tWorld Knowledge\tWriting & Symbols\t\n'
)


def test_a_tsv_field_starting_with_a_quote_is_part_of_the_prompt(tmp_path):
    path = tmp_path / "PartiPrompts.tsv"
    path.write_text(PARTI_TSV)
    prompts = load_prompts(PromptsSection(path=str(path), column="Prompt"))
    assert prompts.prompts == [
        "a cat sitting on a mat",
        '"The Starry Night" by van Gogh, as a photograph',
        "a dog",
        '"hello" written on a sign',
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", b'prompt\n"an unterminated quote, a cat\na dog\n', "cannot read csv prompts"),
        ("latin1.csv", "prompt\ncaf\xe9 au lait\n".encode("latin-1"), "cannot read csv prompts"),
        ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "not UTF-8 text"),
        ("latin1.json", '["caf\xe9"]'.encode("latin-1"), "not UTF-8 text"),
        ("broken.json", b'["a cat", ', "cannot read json prompts"),
        ("broken.parquet", b"PAR1 not really", "cannot read parquet prompts"),
    ],
)
def test_every_read_error_names_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptSourceError, match=message) as err:
        load_prompts(PromptsSection(path=str(path)))
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)  # one line, not polars' page of hints


@pytest.mark.parametrize("content", ["", "\n\n", "   \n\t\n"])
def test_an_empty_or_blank_prompt_file_is_an_error(tmp_path, content):
    path = tmp_path / "prompts.txt"
    path.write_text(content)
    with pytest.raises(PromptSourceError, match=r"no prompts in .*prompts\.txt"):
        load_prompts(PromptsSection(path=str(path)))


def test_prompts_path_takes_a_glob(tmp_path):
    (tmp_path / "a.txt").write_text("a red circle\n")
    (tmp_path / "b.txt").write_text("a blue square\na red circle\n")
    cfg = load_config("configs/tiny.yaml", [f"prompts.path={tmp_path}/*.txt"])
    prompts = load_prompts(cfg.prompts)
    assert prompts.prompts == ["a red circle", "a blue square"]
    assert prompts.stats["n_read"] == 3


def test_a_source_override_replaces_the_configs_manifest(tmp_path):
    (tmp_path / "mine.txt").write_text("a red circle\n")
    cfg = load_config("configs/tiny.yaml", [f"prompts.path={tmp_path}/mine.txt"])
    assert cfg.prompts.manifest is None and cfg.prompts.path == f"{tmp_path}/mine.txt"
    pairs = tmp_path / "pairs.parquet"
    pairs.write_bytes(b"")
    cfg = load_config("configs/tiny.yaml", [f"prompts.pairs={pairs}"])
    assert cfg.prompts.manifest is None and cfg.prompts.pairs == str(pairs)
    cfg = load_config("configs/tiny.yaml", [f"eval.prompts.path={tmp_path}/mine.txt"])
    assert cfg.eval.prompts is not None and cfg.eval.prompts.manifest is None
    with pytest.raises(ConfigError, match="exactly one"):  # two sources at once: still ambiguous
        load_config("configs/tiny.yaml", [f"prompts.path={tmp_path}/mine.txt", f"prompts.pairs={pairs}"])


def test_each_source_of_a_manifest_is_a_named_subset(tmp_path):
    # HPD v2's benchmark: one JSON list per style; each style is reported apart by the evaluation.
    (tmp_path / "anime.json").write_text(json.dumps(["a cat", "a dog", "a fox"]))
    (tmp_path / "photo.json").write_text(json.dumps(["a dog", "a car"]))  # "a dog" stays in anime, the first
    manifest = tmp_path / "styles.yaml"
    manifest.write_text(f"name: styles\nsource:\n  - {tmp_path}/anime.json\n  - {tmp_path}/photo.json\n")
    table = load_prompts(PromptsSection(manifest=str(manifest))).table
    assert table["prompt"].to_list() == ["a cat", "a dog", "a fox", "a car"]
    assert table["subset"].to_list() == ["anime", "anime", "anime", "photo"]
    assert table["source"].unique().to_list() == ["styles"]
    # One source: no subsets.
    single = tmp_path / "single.yaml"
    single.write_text(f"name: single\nsource: {tmp_path}/anime.json\n")
    assert load_prompts(PromptsSection(manifest=str(single))).table["subset"].null_count() == 3
