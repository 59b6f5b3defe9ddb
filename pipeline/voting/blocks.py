"""The vote for `pairing: all` without a join: candidates grouped by prompt, pairs made by index, block by block.

Why a second path beside the lazy join of `pipeline.voting.pairing.form_pairs`: at 45M pairs the join path spends most
of its time moving and encoding strings (two image ids and two prompt columns gathered into every pair, then
hashed again by the parquet dictionary encoder). With each prompt's rows together (`group_by_prompt`; stage 1
writes them so), a block of whole prompts is a contiguous slice of the candidates, so

- a pair is two row numbers `i < j` inside one prompt; which image is a does not change the winner (every
  strategy is symmetric), and the pair id puts the smaller id first, as in the join path;
- scores are gathered by row number, and the strategy decides with the same polars expressions
  (`pipeline.voting.strategies`) on a frame of numbers only;
- `image_id_w`, `image_id_l`, `prompt_id`, `prompt` and `strategy` are written as parquet dictionary columns whose
  dictionary is the block's own slice of the candidates and whose indices are the row numbers: no string is copied
  or hashed per pair. Only `pair_id` is a string built per pair.

The file is the same pairs contract (readers see plain UTF-8 columns; `store_schema=False`), and the tests check
that both paths write the same pairs and counts for every strategy.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.schema import PAIR_ID_SEPARATOR, SCORE_PREFIX, pairs_schema
from pipeline.voting.strategies import Decision, VoteRule, metric_votes, vote_counts

DICTIONARY_COLUMNS = ("prompt_id", "prompt", "image_id_w", "image_id_l", "strategy")
Z_CHUNK_ROWS = 1 << 16  # rows per chunk of the per-prompt z-scores (whole prompts)


def block_schema(metrics: list[str]) -> pa.Schema:
    """`pairs_schema` with the string columns as dictionaries (int32 indices into the block's slice)."""
    return pa.schema(
        [
            f.with_type(pa.dictionary(pa.int32(), pa.large_string())) if f.name in DICTIONARY_COLUMNS else f
            for f in pairs_schema(metrics)
        ]
    )


@dataclass(frozen=True)
class ZSum:
    """The z-score sum of `normalized_sum` over rows grouped by prompt: the statistics of `pipeline.voting.pairing.z_scores`
    (mean and population std per prompt or over the table; a constant metric gives 0) as per-prompt reductions
    over contiguous rows, with no group-by and no join back.

    Equal to the join path's z-scores up to float rounding (another summation order); sums that close are ties
    for both (`pipeline.voting.strategies.Z_SUM_TIE`), and the tests compare the two paths pair for pair.
    """

    rule: VoteRule
    scope: str

    def compute(self, df: pl.DataFrame, starts: np.ndarray) -> np.ndarray:
        scores = [df[SCORE_PREFIX + m].to_numpy() for m in self.rule.metrics]
        if self.scope == "table":
            return z_sum(scores, np.zeros(1, np.int64), np.array([df.height]))
        # Chunks of whole prompts, so the temporaries stay in cache: 0.4 s instead of 1.0-1.2 s at 10M rows.
        total = np.empty(df.height)
        bounds = np.searchsorted(starts, np.arange(Z_CHUNK_ROWS, df.height, Z_CHUNK_ROWS))
        bounds = np.unique(np.concatenate([[0], bounds, [len(starts) - 1]]))
        for p, q in itertools.pairwise(bounds.tolist()):
            r0, r1 = starts[p], starts[q]
            chunk = [s[r0:r1] for s in scores]
            total[r0:r1] = z_sum(chunk, starts[p:q] - r0, np.diff(starts[p : q + 1]))
        return total


def z_sum(scores: list[np.ndarray], first: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Σ over metrics of (score − mean) / std (population std), per group of rows `first[g]:first[g] + sizes[g]`."""
    total = np.zeros(int(sizes.sum()))
    for score in scores:
        deviation = score.astype(np.float64)
        deviation -= np.repeat(np.add.reduceat(deviation, first) / sizes, sizes)
        std = np.sqrt(np.add.reduceat(np.square(deviation), first) / sizes)
        std[std == 0] = np.inf  # a constant metric: every deviation is 0, and 0 / inf gives its z of 0
        deviation /= np.repeat(std, sizes)
        total += deviation
    return total


@dataclass
class GroupedCandidates:
    """Candidates with each prompt's rows together: ids and values per row, prompt columns per prompt.

    Neither the prompts nor the images inside one are in any particular order: a pair's votes do not depend on
    which image is called a, and `join_ids` orders each pair id by the ids themselves.
    """

    image_id: pa.Array  # large_string, one per row
    prompt_id: pa.Array  # large_string, one per prompt
    prompt: pa.Array  # large_string, one per prompt
    values: dict[str, np.ndarray]  # score_<m> and carried per-image columns, by name
    starts: np.ndarray  # first row of each prompt, plus the row count at the end

    @classmethod
    def collect(
        cls, lf: pl.LazyFrame, value_columns: list[str], prompts: int, z_sum: ZSum | None = None
    ) -> GroupedCandidates:
        """Collect and group (`prompts`: how many distinct prompt ids the table has); `z_sum` adds `_zsum`."""
        df, starts = group_by_prompt(
            lf.select("prompt_id", "prompt", "image_id", *value_columns).collect(), prompts
        )
        oldest = pl.CompatLevel.oldest()  # large_string: offsets and bytes, what `join_ids` reads
        per_prompt = df.select("prompt_id", "prompt")[starts[:-1]].to_arrow(compat_level=oldest)
        image_id = df["image_id"].to_arrow(compat_level=oldest)
        df = df.select(value_columns)  # frees polars' copy of the strings before the numeric work
        values = {c: df[c].to_numpy() for c in value_columns}
        if z_sum is not None:
            values["_zsum"] = z_sum.compute(df, starts)
        return cls(
            image_id=image_id,
            prompt_id=per_prompt.column("prompt_id").combine_chunks(),
            prompt=per_prompt.column("prompt").combine_chunks(),
            values=values,
            starts=starts,
        )

    def blocks(self, target_pairs: int) -> Iterator[tuple[int, int]]:
        """(first prompt, end prompt) ranges of whole prompts holding about `target_pairs` pairs each."""
        sizes = np.diff(self.starts)
        cum = np.cumsum(sizes * (sizes - 1) // 2)
        first = 0
        n_prompts = len(sizes)
        while first < n_prompts:
            done = cum[first - 1] if first else 0
            end = int(np.searchsorted(cum, done + target_pairs, side="right"))
            end = min(max(end, first + 1), n_prompts)
            yield first, end
            first = end


def group_by_prompt(df: pl.DataFrame, prompts: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Each prompt's rows together, and each prompt's first row (plus the row count at the end).

    Stage 1 writes prompt-major, so usually nothing moves (checking costs one pass). Otherwise sort by the prompt
    id's 64-bit hash (10M rows: 1.0-1.4 s; by prompt and image id it took 2.2-2.8 s), and by the id string
    too only if two prompt ids share a hash.
    """
    starts = prompt_starts(df["prompt_id"])
    key = pl.col("prompt_id").hash()
    for keys in ([key], [key, pl.col("prompt_id")]):
        if len(starts) - 1 == prompts:
            return df, starts
        df = df.sort(keys)
        starts = prompt_starts(df["prompt_id"])
    if len(starts) - 1 != prompts:
        raise AssertionError(f"{len(starts) - 1} runs of prompt ids after sorting, but {prompts} prompts")
    return df, starts


def prompt_starts(prompt_id: pl.Series) -> np.ndarray:
    """The first row of every run of equal prompt ids, plus the row count."""
    new_prompt = prompt_id.ne_missing(prompt_id.shift(1))
    return np.append(new_prompt.arg_true().to_numpy(), len(prompt_id)).astype(np.int64)


def pair_rows(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i, j), i < j, inside each prompt of a block of prompts with these sizes: rows relative to the block
    (int32), and each pair's prompt (block-relative).

    Prompts of equal size share one `triu_indices` pattern, so the work is a few broadcasts, not a loop per prompt.
    Stage 1 makes the same number of candidates for every prompt, so most blocks have the same sizes: the last
    pattern is reused (read-only).
    """
    return _pair_rows(sizes.astype(np.int64).tobytes())


@functools.lru_cache(maxsize=1)
def _pair_rows(key: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = np.frombuffer(key, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32)
    a, b, p = [], [], []
    for k in np.unique(sizes[sizes > 1]):
        which = np.flatnonzero(sizes == k)
        i, j = (x.astype(np.int32) for x in np.triu_indices(int(k), 1))
        a.append((starts[which, None] + i).ravel())
        b.append((starts[which, None] + j).ravel())
        p.append(np.repeat(which, len(i)))
    if not a:
        empty = np.zeros(0, np.int32)
        return empty, empty, empty
    rows = np.concatenate(a), np.concatenate(b), np.concatenate(p).astype(np.int32)
    for r in rows:
        r.flags.writeable = False
    return rows


@dataclass
class DecidedBlock:
    """One block's pairs after the strategy: what the counts need and the kept pairs in the pairs schema."""

    reason: np.ndarray  # uint8, 0 = kept, else 1 + index into REASONS
    votes_a: np.ndarray
    votes_b: np.ndarray
    kept: pa.Table


def decide_block(
    cands: GroupedCandidates,
    first: int,
    end: int,
    metrics: list[str],
    carry: list[str],
    epsilon: dict[str, float],
    decision: Decision,
    strategy: str,
    schema: pa.Schema,
) -> DecidedBlock:
    """Pairs of prompts `first:end`: votes and decision by the strategies' polars expressions, then the table."""
    r0, r1 = int(cands.starts[first]), int(cands.starts[end])
    ia, ib, prompt_of = pair_rows(np.diff(cands.starts[first : end + 1]))
    values = {c: v[r0:r1] for c, v in cands.values.items()}
    gather = {"_ia": ia, "_ib": ib, "_prompt": prompt_of}
    gather |= {f"a_{m}": values[SCORE_PREFIX + m][ia] for m in metrics}
    gather |= {f"b_{m}": values[SCORE_PREFIX + m][ib] for m in metrics}
    gather |= {f"{side}_{c}": values[c][rows] for c in carry for side, rows in (("a", ia), ("b", ib))}
    decided = (
        pl.LazyFrame(gather)
        .with_columns(metric_votes(metrics, epsilon))
        .with_columns(vote_counts(metrics))
        .with_columns(_a_wins=decision.a_wins, _reason=decision.reason.fill_null(0))
        .select(
            "_ia",
            "_ib",
            "_prompt",
            *(f"vote_{m}" for m in metrics),
            "votes_a",
            "votes_b",
            "_a_wins",
            "_reason",
        )
        .collect()
    )
    a_wins, n = pl.col("_a_wins"), len(metrics)
    sign = a_wins.cast(pl.Int8) * 2 - 1
    votes_w = pl.when(a_wins).then("votes_a").otherwise("votes_b")
    kept = (
        decided.lazy()
        .filter(pl.col("_reason") == 0)
        .select(
            "_ia",
            "_ib",
            "_prompt",
            _w=pl.when(a_wins).then("_ia").otherwise("_ib"),
            _l=pl.when(a_wins).then("_ib").otherwise("_ia"),
            **{f"vote_{m}": pl.col(f"vote_{m}") * sign for m in metrics},
            votes_w=votes_w,
            votes_l=pl.col("votes_a") + pl.col("votes_b") - votes_w,
            n_metrics=pl.lit(n, pl.Int16),
            confidence=(votes_w / n).cast(pl.Float32),
        )
        .collect()
    )
    ids = cands.image_id.slice(r0, r1 - r0)
    columns = {
        "pair_id": join_ids(ids, kept["_ia"].to_numpy(), kept["_ib"].to_numpy(), PAIR_ID_SEPARATOR),
        "prompt_id": _indices(kept["_prompt"], cands.prompt_id.slice(first, end - first)),
        "prompt": _indices(kept["_prompt"], cands.prompt.slice(first, end - first)),
        "image_id_w": _indices(kept["_w"], ids),
        "image_id_l": _indices(kept["_l"], ids),
        "strategy": _indices(
            pl.zeros(kept.height, pl.Int32, eager=True), pa.array([strategy], pa.large_string())
        ),
    }
    numbers = kept.select(pairs_schema(metrics).names[len(columns) :]).to_arrow()
    table = pa.Table.from_arrays([*columns.values(), *numbers.columns], names=schema.names).cast(schema)
    return DecidedBlock(
        reason=decided["_reason"].to_numpy(),
        votes_a=decided["votes_a"].to_numpy(),
        votes_b=decided["votes_b"].to_numpy(),
        kept=table,
    )


def _indices(indices: pl.Series, dictionary: pa.Array) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(indices.cast(pl.Int32).to_arrow(), dictionary)


def join_ids(ids: pa.Array, a: np.ndarray, b: np.ndarray, separator: str) -> pa.Array:
    """`min(ids[a], ids[b]) + separator + max(ids[a], ids[b])` per pair, the contract's pair id.

    Stage-1 ids all have one length: then the strings are laid out as one fixed-width byte matrix (two row
    gathers), several times faster than a string gather and join, and compared 8 bytes at a time.
    """
    offsets = np.frombuffer(ids.buffers()[1], np.int64, count=len(ids) + 1, offset=8 * ids.offset)
    lengths = np.diff(offsets)
    sep = separator.encode()
    if len(ids) == 0 or lengths.min() != lengths.max() or lengths[0] == 0:
        id_a, id_b = ids.take(a), ids.take(b)
        a_first = pc.less(id_a, id_b)
        return pc.binary_join_element_wise(
            pc.if_else(a_first, id_a, id_b), pc.if_else(a_first, id_b, id_a), pa.scalar(separator, ids.type)
        )
    width, k = int(lengths[0]), len(a)
    chars = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    a_first = fixed_width_less(chars.reshape(-1, width), a, b)
    first, second = np.where(a_first, a, b), np.where(a_first, b, a)
    whole = chars.view(f"V{width}")  # one opaque item per id: a gather is one memcpy per pair side
    row = np.dtype([("a", f"V{width}"), ("sep", f"V{len(sep)}"), ("b", f"V{width}")])
    out = np.empty(k, row)
    out["a"], out["b"] = whole[first], whole[second]
    out["sep"] = np.frombuffer(sep, f"V{len(sep)}")[0]
    new_offsets = np.arange(0, (k + 1) * row.itemsize, row.itemsize, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(k, pa.py_buffer(new_offsets), pa.py_buffer(out.view(np.uint8)))


def fixed_width_less(rows: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`rows[a] < rows[b]` in byte order (the order of UTF-8 strings), for a matrix of equal-length ids.

    Each id is cut into big-endian 64-bit words, whose integer order is the byte order; the next word is compared
    only for the pairs equal so far (hex ids almost never share their first eight characters).
    """
    n, width = rows.shape
    padded = np.zeros((n, -(-width // 8) * 8), np.uint8)
    padded[:, :width] = rows
    words = padded.view(">u8").astype(np.uint64)
    key = np.ascontiguousarray(words[:, 0])
    key_a, key_b = key[a], key[b]
    less = key_a < key_b
    tied = np.flatnonzero(key_a == key_b)
    for w in range(1, words.shape[1]):
        if not tied.size:
            break
        key_a, key_b = words[a[tied], w], words[b[tied], w]
        less[tied] = key_a < key_b
        tied = tied[key_a == key_b]
    return less
