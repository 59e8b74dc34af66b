"""ListOps (Nangia & Bowman 2018): LRA's generator, the canonical token ids and
the writer of LRA's TSV files.

Source of the procedure: google-research/long-range-arena,
`lra_benchmarks/data/listops.py`.

A tree is drawn top-down from the root at depth 1: below `max_depth`
a node is an operator with probability VALUE_P = 0.25 (else a digit 0-9); at
`max_depth` it is always a digit. An operator is one of MIN, MAX, MED (median,
`int(np.median(args))`, so an even count averages the two middle values and
truncates) and SM (sum mod 10), chosen uniformly, with `randint(2, max_args)`
arguments. Its length counts operator + `]` + digits (parentheses excluded);
a tree is kept only if `min_length < length < max_length`, and trees are
drawn until `train + val + test` distinct ones exist.

The distribution is LRA's; the random stream is not (LRA used Python's
`random` with no seed). Here the trees are drawn breadth-first for thousands of
candidate roots at once with numpy, a candidate is dropped as soon as its
length can no longer stay under `max_length` (lengths only grow, so this
rejects exactly the trees LRA would reject), and token ids are written
directly. Work is cut into chunks whose random streams derive from
`(seed, chunk index)`; chunks run in worker processes and are merged in chunk
order, then duplicates are dropped keeping the first, so the data depends on
the seed, sizes and tree settings only, never on the number of workers or on
timing.

String form (LRA's TSV `Source`): the tree as nested pairs
`((((op, a1), a2), ...), ])`, each pair written `( left right )`, e.g.
`( ( ( [MAX 2 ) 9 ) ] )`. `write_tsv` writes it; `listops_tsv.read_tsv`
reads it back.

Tokenisers (`task.data.tokenizer`), one fixed vocabulary (`VOCAB`) for both;
sequences are cut to `seq_len` (LRA: `[:max_length]`) and right-padded with 0:
- `keep_close` (default): operators, digits and every closing `]`. This is
  LRA's input pipeline since google-research/long-range-arena c209b2a
  (2021-03-04, `rename_close_brackets` turns `]` into `X` and a whitespace
  tokenizer keeps it) and what the S4/S5 code does. The label is a function
  of these tokens.
- `drop_close`: LRA's code as first released (6d5e5ca, 2020-10-23, up to
  a2e5057, the parent of c209b2a): tfds' deprecated alphanumeric `Tokenizer`
  drops `(`, `)`, `[` and also every `]`, so different bracketings of the
  same tokens get one token sequence and the label is no longer a function of
  the input. Only for reproducing that code; a run using it carries a warning.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lra.errors import LraError
from lra.tasks.base import SPLITS

# ----------------------------------------------------------------------------
# Vocabulary: 0 = padding, 1-10 = digits, 11-14 = operators, 15 = "]", 16 = unknown.

OPERATORS = ("MIN", "MAX", "MED", "SM")
TOKENS = tuple(str(d) for d in range(10)) + OPERATORS + ("]",)
PAD_ID = 0
DIGIT0 = 1  # id of "0"; digit d has id DIGIT0 + d
OP0 = 11  # id of MIN; operator k of OPERATORS has id OP0 + k
END_ID = 15  # "]"
UNK_ID = 16
VOCAB = ("<pad>",) + TOKENS + ("<unk>",)
VOCAB_SIZE = len(VOCAB)  # 17

VALUE_P = 0.25
KEEP_CLOSE, DROP_CLOSE = "keep_close", "drop_close"
TOKENIZERS = (KEEP_CLOSE, DROP_CLOSE)
DROP_CLOSE_WARNING = (
    "task.data.tokenizer=drop_close reproduces LRA's first released ListOps pipeline "
    "(google-research/long-range-arena before c209b2a), which drops every ']': the label "
    "is not a function of the input; use keep_close for real results"
)
TSV_PREFIX = "basic"  # LRA's FLAGS.task default: basic_train.tsv, ...
TSV_HEADER = "Source\tTarget"
CHUNK_SIZE = 1000  # accepted trees per generator chunk (part of the data's definition)

_ROW_BLOCK_TOKENS = 1 << 22  # canonical tokens per block when encoding/writing



@dataclasses.dataclass
class ListOpsData:
    """Trees as canonical token ids (operators, digits and `]`, in written order).

    Example i is `tokens[offsets[i]:offsets[i + 1]]`; its LRA length is that
    slice's length. This is what the generator makes and `write_tsv` writes.
    """

    tokens: np.ndarray  # int8, all examples concatenated
    offsets: np.ndarray  # int64 [N + 1]
    labels: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def slice(self, start: int, stop: int) -> "ListOpsData":
        lo, hi = int(self.offsets[start]), int(self.offsets[stop])
        return ListOpsData(
            self.tokens[lo:hi].copy(), self.offsets[start : stop + 1] - lo, self.labels[start:stop].copy()
        )


# ----------------------------------------------------------------------------
# Generator


def max_tree_length(max_depth: int, max_args: int) -> int:
    """The longest tree the generator can draw (every node above max_depth an operator)."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def _sample_candidates(rng, count, max_length, max_depth, max_args):
    """Draw `count` candidate trees breadth-first; drop a tree once it reaches max_length.

    Returns the levels as (tree id, symbol id, argument count) per node, the
    length of every tree and whether it survived (length < max_length).
    """
    tree = np.arange(count, dtype=np.int32)
    length = np.ones(count, np.int64)  # the root; every drawn child was counted as 1 before
    alive = np.ones(count, bool)
    levels = []
    for depth in range(1, max_depth + 1):
        n = tree.size
        if n == 0:
            break
        if depth < max_depth:
            is_op = rng.random(n) <= VALUE_P  # LRA: value if random() > VALUE_P
        else:
            is_op = np.zeros(n, bool)
        n_ops = int(np.count_nonzero(is_op))
        nargs = np.zeros(n, np.int32)
        sym = np.empty(n, np.int8)
        sym[~is_op] = DIGIT0 + rng.integers(0, 10, n - n_ops)
        if n_ops:
            nargs[is_op] = rng.integers(2, max_args + 1, n_ops)
            sym[is_op] = OP0 + rng.integers(0, len(OPERATORS), n_ops)
        levels.append((tree, sym, nargs))
        if not n_ops:
            break
        op_tree, op_args = tree[is_op], nargs[is_op]
        # an operator adds itself, its "]" and its arguments (each at least one token)
        length += np.bincount(op_tree, weights=op_args + 1, minlength=count).astype(np.int64)
        alive &= length < max_length
        grow = alive[op_tree]
        tree = np.repeat(op_tree[grow], op_args[grow])
    return levels, length, alive


def _assemble(levels, chosen: np.ndarray, count: int) -> ListOpsData:
    """Token ids, offsets and labels of the candidate trees `chosen` (ascending ids)."""
    keep = np.zeros(count, bool)
    keep[chosen] = True
    lv = []
    for tree, sym, nargs in levels:
        k = keep[tree]
        lv.append((sym[k], nargs[k]))
    # bottom-up: subtree sizes and values
    sizes: list[np.ndarray] = [None] * len(lv)  # type: ignore[list-item]
    values: list[np.ndarray] = [None] * len(lv)  # type: ignore[list-item]
    for d in range(len(lv) - 1, -1, -1):
        sym, nargs = lv[d]
        size = np.ones(len(sym), np.int32)
        value = sym.astype(np.int32) - DIGIT0
        is_op = nargs > 0
        if is_op.any():
            na = nargs[is_op]
            starts = np.cumsum(na) - na
            child_size, child_value = sizes[d + 1], values[d + 1]
            size[is_op] = 2 + np.add.reduceat(child_size, starts)
            op = sym[is_op] - OP0
            result = np.where(
                op == 0,
                np.minimum.reduceat(child_value, starts),
                np.where(
                    op == 1,
                    np.maximum.reduceat(child_value, starts),
                    np.add.reduceat(child_value, starts) % 10,
                ),
            )
            med = np.flatnonzero(op == 2)
            if len(med):  # int(np.median(args)): mean of the middle pair, truncated
                seg = np.repeat(np.arange(len(na), dtype=np.int32), na)
                pick = np.repeat(op == 2, na)
                ordered = np.sort(seg[pick] * 16 + child_value[pick]) & 15
                m_na = na[med]
                m_start = np.cumsum(m_na) - m_na
                lo, hi = ordered[m_start + (m_na - 1) // 2], ordered[m_start + m_na // 2]
                result[med] = (lo + hi) // 2
            value[is_op] = result
        sizes[d], values[d] = size, value
    # top-down: positions of every token
    offsets = np.zeros(len(chosen) + 1, np.int64)
    np.cumsum(sizes[0], out=offsets[1:])
    tokens = np.empty(int(offsets[-1]), np.int8)
    pos = offsets[:-1]
    for d in range(len(lv)):
        sym, nargs = lv[d]
        tokens[pos] = sym
        is_op = nargs > 0
        if not is_op.any():
            break
        op_pos, na = pos[is_op], nargs[is_op]
        tokens[op_pos + sizes[d][is_op] - 1] = END_ID
        child_size = sizes[d + 1]
        before = np.cumsum(child_size, dtype=np.int64) - child_size
        starts = np.cumsum(na) - na
        pos = np.repeat(op_pos + 1 - before[starts], na) + before
    return ListOpsData(tokens, offsets, values[0].astype(np.int32))


def _concat(parts: list[ListOpsData]) -> ListOpsData:
    if not parts:
        return ListOpsData(np.zeros(0, np.int8), np.zeros(1, np.int64), np.zeros(0, np.int32))
    sizes = np.concatenate([p.lengths() for p in parts])
    offsets = np.zeros(len(sizes) + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return ListOpsData(
        np.concatenate([p.tokens for p in parts]), offsets, np.concatenate([p.labels for p in parts])
    )


def _chunk_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))


_MAX_EMPTY_CANDIDATES = 4_000_000


def generate_chunk(task: tuple) -> ListOpsData:
    """The first `target` accepted trees of chunk `index` (a pure function of its arguments).

    A smaller target gives a prefix of a larger one, since candidates are drawn
    in the same batches either way.
    """
    seed, index, target, min_length, max_length, max_depth, max_args = task
    rng = _chunk_rng(seed, index)
    parts, got, drawn, accepted_total, batch = [], 0, 0, 0, 4096
    while got < target:
        levels, length, alive = _sample_candidates(rng, batch, max_length, max_depth, max_args)
        accepted = np.flatnonzero(alive & (length > min_length))
        drawn += batch
        accepted_total += len(accepted)
        take = accepted[: target - got]
        if len(take):
            parts.append(_assemble(levels, take, batch))
            got += len(take)
        if accepted_total == 0:
            if drawn >= _MAX_EMPTY_CANDIDATES:
                raise LraError(
                    f"listops: none of {drawn:,} random trees has {min_length} < length < "
                    f"{max_length} (max_depth={max_depth}, max_args={max_args}); widen "
                    "task.data.min_length/max_length or raise max_depth/max_args"
                )
            batch = min(batch * 2, 1 << 16)
        else:
            rate = accepted_total / drawn
            batch = int(min(max((target - got) / rate * 1.1 + 64, 256), 1 << 16))
    return _concat(parts)


def _chunk_plan(missing: int, chunk_size: int) -> list[int]:
    full, rest = divmod(missing, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def _resolve_workers(workers) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    return max(1, int(workers))


def generate(
    n: int,
    *,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> ListOpsData:
    """`n` distinct trees in a fixed order (chunk by chunk, first occurrence kept).

    The result depends on `seed`, `n`, the tree settings and `chunk_size`, not
    on `workers`.
    """
    if max_tree_length(max_depth, max_args) <= min_length:
        raise LraError(
            f"listops: with max_depth={max_depth} and max_args={max_args} no tree is longer "
            f"than min_length={min_length}; lower min_length or raise max_depth/max_args"
        )
    workers = _resolve_workers(workers)
    if multiprocessing.current_process().daemon:  # a pool worker may not start processes
        workers = 1
    settings = (min_length, max_length, max_depth, max_args)
    seen: set[bytes] = set()
    kept: list[ListOpsData] = []
    have, drawn, next_index, pool = 0, 0, 0, None
    try:
        while have < n:
            plan = _chunk_plan(n - have, chunk_size)
            tasks = [(seed, next_index + i, t) + settings for i, t in enumerate(plan)]
            next_index += len(plan)
            if workers > 1 and len(tasks) > 1:
                if pool is None:
                    # spawn: safe when the caller has threads (JAX), same on every OS
                    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)))
                results: Iterable[ListOpsData] = pool.imap(generate_chunk, tasks)
            else:
                results = map(generate_chunk, tasks)
            for part in results:
                drawn += len(part)
                chosen = []
                for i in range(len(part)):
                    if have + len(chosen) >= n:
                        break
                    key = part.sequence(i).tobytes()
                    if key not in seen:
                        seen.add(key)
                        chosen.append(i)
                if len(chosen) == len(part):
                    kept.append(part)
                elif chosen:
                    kept.append(_select(part, np.asarray(chosen)))
                have += len(chosen)
                if have >= n:
                    break
            if have < n and drawn > 10 * n + 10 * chunk_size:
                raise LraError(
                    f"listops: only {have} distinct trees with {min_length} < length < "
                    f"{max_length} found among {drawn} drawn, {n} needed; widen the length "
                    "range or ask for fewer examples"
                )
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return _concat(kept)


def _select(data: ListOpsData, rows: np.ndarray) -> ListOpsData:
    return _concat([data.slice(int(i), int(i) + 1) for i in rows])


def generate_splits(
    *,
    seed: int = 0,
    train_size: int = 96000,
    val_size: int = 2000,
    test_size: int = 2000,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> dict[str, ListOpsData]:
    """LRA's split of one generated set: the first train_size, the next val_size, the rest."""
    total = train_size + val_size + test_size
    data = generate(
        total,
        seed=seed,
        min_length=min_length,
        max_length=max_length,
        max_depth=max_depth,
        max_args=max_args,
        workers=workers,
        chunk_size=chunk_size,
    )
    bounds = np.cumsum([0, train_size, val_size, test_size])
    return {split: data.slice(int(bounds[i]), int(bounds[i + 1])) for i, split in enumerate(SPLITS)}


# ----------------------------------------------------------------------------
# Tokenising generated data


def _row_blocks(offsets: np.ndarray, max_tokens: int = _ROW_BLOCK_TOKENS) -> Iterator[tuple[int, int]]:
    n = len(offsets) - 1
    start = 0
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + max_tokens, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def _pad_rows(ids: np.ndarray, counts: np.ndarray, out: np.ndarray, row0: int = 0, starts=None) -> None:
    """Write row i's ids (ids[starts[i]:][:counts[i]], by default rows back to back)
    into out[row0 + i], cut at out.shape[1]; the rest of each row keeps its padding."""
    seq_len = out.shape[1]
    if starts is None:
        starts = np.cumsum(counts) - counts
    for row, (start, count) in enumerate(zip(starts.tolist(), counts.tolist()), row0):
        take = min(count, seq_len)
        out[row, :take] = ids[start : start + take]


def _check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise LraError(f"listops: unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS)}")


def encode(data: ListOpsData, tokenizer: str, seq_len: int) -> tuple[np.ndarray, dict]:
    """Inputs [N, seq_len] int8 of generated trees, as `tokenizer` would see their strings."""
    _check_tokenizer(tokenizer)
    out = np.zeros((len(data), seq_len), np.int8)
    lengths = np.zeros(len(data), np.int64)
    for a, b in _row_blocks(data.offsets):
        seg = data.tokens[data.offsets[a] : data.offsets[b]]
        counts = np.diff(data.offsets[a : b + 1])
        if tokenizer == DROP_CLOSE:  # tfds' alphanumeric tokenizer loses every "]"
            keep = seg != END_ID
            row_starts = data.offsets[a:b] - data.offsets[a]  # trees are never empty
            counts = np.add.reduceat(keep.view(np.uint8), row_starts, dtype=np.int64)
            seg = seg[keep]
        _pad_rows(seg, counts, out, a)
        lengths[a:b] = counts
    return out, _length_stats(lengths, seq_len)


def _length_stats(lengths: np.ndarray, seq_len: int) -> dict:
    return {
        "max_tokens": int(lengths.max()) if len(lengths) else 0,
        "mean_tokens": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        "truncated": int(np.count_nonzero(lengths > seq_len)),
    }


# ----------------------------------------------------------------------------
# Writing LRA's TSV format


def _variants(max_children: int, newline: bytes) -> np.ndarray:
    """What each canonical token is written as, by code (see `_source_block`).

    Codes: 0-19 digit d as root (2d) or as an argument (2d+1, closing its pair
    with ")"); 20-21 "]" of the root or of an inner operator (which closes
    one more pair); 22+ an operator with k arguments, preceded by k+1 "(".
    Every text starts with its separating space; code + n_codes is the same
    text without it (first token of a row); 2 * n_codes + label ends a row.
    """
    texts = []
    for d in range(10):
        texts += [f" {d}", f" {d} )"]
    texts += [" ] )", " ] ) )"]
    for op in OPERATORS:
        texts += [" " + "( " * (k + 1) + "[" + op for k in range(max_children + 1)]
    encoded = [t.encode() for t in texts]
    table = encoded + [t[1:] for t in encoded] + [f"\t{y}".encode() + newline for y in range(10)]
    return np.array(table, dtype=object)


def _source_block(tokens: np.ndarray, counts: np.ndarray, labels: np.ndarray, newline: bytes) -> bytes:
    """Rows `Source<TAB>Target<newline>` for trees in canonical ids, in LRA's to_string layout."""
    t = tokens.astype(np.int32)
    n = len(t)
    is_op = (t >= OP0) & (t < OP0 + len(OPERATORS))
    is_end = t == END_ID
    is_val = (t >= DIGIT0) & (t < DIGIT0 + 10)
    if not (is_op | is_end | is_val).all():
        raise ValueError("listops: cannot write a token outside operators, digits and ']'")
    step = is_op.astype(np.int32) - is_end
    after = np.cumsum(step, dtype=np.int32)
    before = after - step  # operators open before each token (0: the token is at the root)
    # Argument counts without a stack: give every token up to two events, "is an
    # argument of the operator at level before-1" and, for an operator or "]",
    # "opens/closes level before/after". Stably sorted by level, each level reads
    # op, its arguments, "]", op, ...; so an operator's count is the gap to its "]".
    as_arg = np.where((is_op | is_val) & (before > 0), before - 1, -1)
    as_bracket = np.where(is_op, before, np.where(is_end, after, -1))
    level = np.stack([as_arg, as_bracket], axis=1).reshape(-1)
    events = np.flatnonzero(level >= 0)
    level = level[events]
    small = np.int16 if level.size and level.max() < 2**15 else np.int32
    events = events[np.argsort(level.astype(small), kind="stable")]
    brackets = np.flatnonzero(events & 1)
    op_at, end_at = brackets[0::2], brackets[1::2]
    n_args = np.zeros(n, np.int32)
    n_args[events[op_at] >> 1] = end_at - op_at - 1
    max_children = int(n_args.max()) if n else 0
    variants = _variants(max_children, newline)
    n_codes = 22 + len(OPERATORS) * (max_children + 1)
    code = np.empty(n, np.int32)
    code[is_val] = (t[is_val] - DIGIT0) * 2 + (before[is_val] > 0)
    code[is_end] = 20 + (after[is_end] > 0)
    code[is_op] = 22 + (t[is_op] - OP0) * (max_children + 1) + n_args[is_op]
    row_end = np.cumsum(counts)
    code[row_end - counts] += n_codes
    items = np.empty(n + len(counts), np.int32)
    ends_at = row_end + np.arange(len(counts))
    body = np.ones(len(items), bool)
    body[ends_at] = False
    items[body] = code
    items[ends_at] = 2 * n_codes + labels
    return b"".join(variants[items].tolist())


def to_strings(data: ListOpsData) -> list[str]:
    """LRA's `to_string` of every tree (for inspection and tests)."""
    text = _source_block(data.tokens, data.lengths(), data.labels, b"\n").decode()
    return [line.rsplit("\t", 1)[0] for line in text.splitlines()]


def write_tsv(
    folder: str | os.PathLike,
    splits: dict[str, ListOpsData],
    *,
    prefix: str = TSV_PREFIX,
    newline: str = "\r\n",
) -> list[Path]:
    """Write `<folder>/<prefix>_<split>.tsv` as LRA did (csv.writer: tab, CRLF, header)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, data in splits.items():
        if len(data.labels) and (data.labels.min() < 0 or data.labels.max() > 9):
            raise ValueError("listops: labels must lie in 0-9")
        path = folder / f"{prefix}_{split}.tsv"
        with open(path, "wb") as handle:
            handle.write((TSV_HEADER + newline).encode())
            for a, b in _row_blocks(data.offsets, _ROW_BLOCK_TOKENS // 2):
                seg = data.tokens[data.offsets[a] : data.offsets[b]]
                handle.write(
                    _source_block(seg, np.diff(data.offsets[a : b + 1]), data.labels[a:b], newline.encode())
                )
        paths.append(path)
    return paths

