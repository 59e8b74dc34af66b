"""ListOps (Nangia & Bowman 2018) as generated, written and tokenised by LRA.

Source of the procedure: google-research/long-range-arena,
`lra_benchmarks/data/listops.py` (generator) and
`lra_benchmarks/listops/input_pipeline.py` (reading and tokenising).

Generator. A tree is drawn top-down from the root at depth 1: below `max_depth`
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
the seed and sizes only, never on the number of workers or on timing.

String form (LRA's TSV `Source`): the tree as nested pairs
`((((op, a1), a2), ...), ])`, each pair written `( left right )`, e.g.
`( ( ( [MAX 2 ) 9 ) ] )`. `write_tsv` writes it, `read_tsv` reads it back.

Tokenisers (`task.data.tokenizer`):
- `lra`: what LRA's released code did, tfds' deprecated `Tokenizer` (alphanum
  only): split on non-alphanumeric characters and drop them, so `(`, `)`,
  `[` and also every closing `]` disappear and `[MAX` becomes `MAX`;
- `s4`: what the S4/S5 code does: delete `(` and `)`, split on whitespace,
  keep `]` as a token.
Both map to one fixed vocabulary (`VOCAB`); sequences are cut to `seq_len`
(LRA: `[:max_length]`) and right-padded with 0.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from lra.errors import LraError
from lra.registry import TASKS
from lra.tasks.base import SPLITS, Built, Task

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
TOKENIZERS = ("lra", "s4")
SOURCES = ("generate", "tsv")
TSV_PREFIX = "basic"  # LRA's FLAGS.task default: basic_train.tsv, ...
TSV_HEADER = "Source\tTarget"
CHUNK_SIZE = 1000  # accepted trees per generator chunk (part of the data's definition)

DEFAULTS: dict[str, Any] = {
    "source": "generate",
    "path": None,
    "tokenizer": "lra",
    "seed": 0,
    "train_size": 96000,
    "val_size": 2000,
    "test_size": 2000,
    "min_length": 500,
    "max_length": 2000,
    "max_depth": 10,
    "max_args": 10,
    "workers": None,
}

_ROW_BLOCK_TOKENS = 1 << 22  # canonical tokens per block when encoding/writing
_READ_BLOCK_BYTES = 1 << 24  # bytes per block when reading a TSV file


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
        size = np.ones(len(sym), np.int64)
        value = sym.astype(np.int64) - DIGIT0
        is_op = nargs > 0
        if is_op.any():
            na = nargs[is_op].astype(np.int64)
            starts = np.cumsum(na) - na
            child_size, child_value = sizes[d + 1], values[d + 1]
            size[is_op] = 2 + np.add.reduceat(child_size, starts)
            seg = np.repeat(np.arange(len(na), dtype=np.int64), na)
            ordered = np.sort(seg * 16 + child_value) & 15  # children sorted within each operator
            lo, hi = ordered[starts + (na - 1) // 2], ordered[starts + na // 2]
            results = np.stack(
                [
                    ordered[starts],  # MIN
                    ordered[starts + na - 1],  # MAX
                    (lo + hi) // 2,  # MED: int(np.median(...)) of non-negative ints
                    np.add.reduceat(child_value, starts) % 10,  # SM
                ]
            )
            op = sym[is_op].astype(np.int64) - OP0
            value[is_op] = results[op, np.arange(len(op))]
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
        op_pos, na = pos[is_op], nargs[is_op].astype(np.int64)
        tokens[op_pos + sizes[d][is_op] - 1] = END_ID
        child_size = sizes[d + 1]
        before = np.cumsum(child_size) - child_size
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


def _pad_rows(ids: np.ndarray, counts: np.ndarray, out: np.ndarray, row0: int = 0) -> None:
    """Write row-concatenated `ids` (row i has counts[i]) into rows row0... of `out`,
    cut at out.shape[1]; the rest of each row keeps its padding."""
    assert out.flags.c_contiguous
    seq_len = out.shape[1]
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(ids), dtype=np.int64) - np.repeat(starts, counts)
    row = np.repeat(np.arange(row0, row0 + len(counts), dtype=np.int64), counts)
    keep = pos < seq_len
    out.reshape(-1)[row[keep] * seq_len + pos[keep]] = ids[keep]


def encode(data: ListOpsData, tokenizer: str, seq_len: int) -> tuple[np.ndarray, dict]:
    """Inputs [N, seq_len] int8 of generated trees, as `tokenizer` would see their strings."""
    if tokenizer not in TOKENIZERS:
        raise LraError(f"listops: unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS)}")
    out = np.zeros((len(data), seq_len), np.int8)
    lengths = np.zeros(len(data), np.int64)
    for a, b in _row_blocks(data.offsets):
        seg = data.tokens[data.offsets[a] : data.offsets[b]]
        counts = np.diff(data.offsets[a : b + 1])
        if tokenizer == "lra":  # tfds' alphanumeric tokenizer loses every "]"
            keep = seg != END_ID
            csum = np.concatenate([[0], np.cumsum(keep)])
            rel = data.offsets[a : b + 1] - data.offsets[a]
            counts = csum[rel[1:]] - csum[rel[:-1]]
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

# written symbols: 0-9 digits, 10-13 operators, 14 "]", 15 "(", 16 ")"
_W_OPEN, _W_CLOSE = 15, 16
_W_TEXT = [str(d) for d in range(10)] + ["[" + op for op in OPERATORS] + ["]", "(", ")"]
_W_LEN = np.array([len(s) for s in _W_TEXT], np.int64)
_W_CHARS = np.zeros((len(_W_TEXT), 4), np.uint8)
for _i, _s in enumerate(_W_TEXT):
    _W_CHARS[_i, : len(_s)] = np.frombuffer(_s.encode(), np.uint8)


def _source_block(tokens: np.ndarray, counts: np.ndarray, labels: np.ndarray, newline: bytes) -> bytes:
    """Rows `Source<TAB>Target<newline>` for trees in canonical ids, LRA's to_string layout."""
    t = tokens.astype(np.int64)
    n = len(t)
    is_op = (t >= OP0) & (t < OP0 + len(OPERATORS))
    is_end = t == END_ID
    is_val = (t >= DIGIT0) & (t < DIGIT0 + 10)
    if not (is_op | is_end | is_val).all():
        raise ValueError("listops: cannot write a token outside operators, digits and ']'")
    step = is_op.astype(np.int64) - is_end
    after = np.cumsum(step)
    before = after - step  # open operators before each token (0 = root level)
    span = n + 1
    op_idx = np.flatnonzero(is_op)
    level = before[op_idx]
    end_idx = np.flatnonzero(is_end)
    end_keys = np.sort(after[end_idx] * span + end_idx)
    op_end = end_keys[np.searchsorted(end_keys, level * span + op_idx)] % span
    node_idx = np.flatnonzero(is_op | is_val)
    node_keys = np.sort(before[node_idx] * span + node_idx)
    child_level = (level + 1) * span
    n_children = np.searchsorted(node_keys, child_level + op_end) - np.searchsorted(
        node_keys, child_level + op_idx
    )
    # how many written symbols each token becomes
    width = np.ones(n, np.int64)
    width[is_val] += before[is_val] > 0  # ")" closing the pair it is the right half of
    width[is_end] += 1 + (after[is_end] > 0)  # ") " of (..., ]) and of its parent's pair
    width[op_idx] = n_children + 2  # "(" per pair, then the operator
    start = np.cumsum(width) - width
    sym = np.full(int(width.sum()), _W_OPEN, np.int64)
    sym[start[is_val]] = t[is_val] - DIGIT0
    sym[start[op_idx] + width[op_idx] - 1] = t[op_idx] - OP0 + 10
    sym[start[is_end]] = 14
    closes = np.flatnonzero(width > 1)
    closes = closes[~is_op[closes]]
    sym[start[closes] + 1] = _W_CLOSE
    sym[start[is_end & (after > 0)] + 2] = _W_CLOSE
    # rows in written symbols
    row_width = np.add.reduceat(width, np.cumsum(counts) - counts) if len(counts) else width[:0]
    last = np.cumsum(row_width) - 1
    # bytes: every symbol then one separator, then label and newline at each row end
    nbytes = _W_LEN[sym] + 1
    nbytes[last] += 1 + len(newline)
    off = np.cumsum(nbytes) - nbytes
    buf = np.full(int(nbytes.sum()), ord(" "), np.uint8)
    sym_len = _W_LEN[sym]
    for j in range(4):
        m = sym_len > j
        buf[off[m] + j] = _W_CHARS[sym[m], j]
    tail = off[last] + sym_len[last]
    buf[tail] = ord("\t")
    buf[tail + 1] = ord("0") + labels.astype(np.int64)
    for j, byte in enumerate(newline):
        buf[tail + 2 + j] = byte
    return buf.tobytes()


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


# ----------------------------------------------------------------------------
# Reading LRA's TSV files


def _byte_table(chars: bytes | Iterable[int]) -> np.ndarray:
    table = np.zeros(256, bool)
    table[list(chars)] = True
    return table


# tfds Tokenizer(alphanum_only=True) splits on the regex \W+: word characters are
# letters, digits and "_" (non-ASCII bytes are taken as letters, as in UTF-8 text).
_WORD = _byte_table(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_" + bytes(range(128, 256))
)
_SPACE = _byte_table(b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")  # str.split() separators (ASCII)
_PARENS = _byte_table(b"()")
_TOKEN_IDS = {
    "lra": {**{str(d): DIGIT0 + d for d in range(10)}, **{op: OP0 + k for k, op in enumerate(OPERATORS)}},
    "s4": {
        **{str(d): DIGIT0 + d for d in range(10)},
        **{"[" + op: OP0 + k for k, op in enumerate(OPERATORS)},
        "]": END_ID,
    },
}
_KEY_BYTES = 4  # every known token is at most 4 bytes long


def _token_key(text: bytes) -> int:
    key = len(text) << 32
    for j, byte in enumerate(text[:_KEY_BYTES]):
        key |= byte << (8 * j)
    return key


_KEY_IDS = {name: {_token_key(k.encode()): v for k, v in ids.items()} for name, ids in _TOKEN_IDS.items()}


def tokenize_text(text: bytes, tokenizer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids of a byte string; returns (ids, start offsets, end offsets) in the
    coordinates of the string after the tokenizer's deletions (parentheses for s4).
    """
    a = np.frombuffer(text, np.uint8)
    if tokenizer not in TOKENIZERS:
        raise LraError(f"listops: unknown tokenizer '{tokenizer}'; choose one of: {', '.join(TOKENIZERS)}")
    if tokenizer == "s4":
        a = a[~_PARENS[a]]
        word = ~_SPACE[a]
    else:
        word = _WORD[a]
    edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if not len(starts):
        return np.zeros(0, np.int8), starts, ends
    length = ends - starts
    key = length.astype(np.int64) << 32
    for j in range(_KEY_BYTES):
        byte = a[np.minimum(starts + j, len(a) - 1)].astype(np.int64)
        key |= np.where(length > j, byte, 0) << (8 * j)
    key[length > _KEY_BYTES] = -1
    uniq, inverse = np.unique(key, return_inverse=True)
    table = _KEY_IDS[tokenizer]
    ids = np.array([table.get(int(k), UNK_ID) for k in uniq], np.int8)[inverse.reshape(-1)]
    return ids, starts, ends


def tokenize(source: str, tokenizer: str = "lra") -> list[int]:
    """Token ids of one Source string (unpadded, untruncated)."""
    return tokenize_text(source.encode(), tokenizer)[0].tolist()


_INT = re.compile(r"[+-]?[0-9]+")


def _where(file: Path, line: int) -> str:
    return f"{file}, line {line} (data row {line - 1})"


def _parse_block(block: bytes, first_line: int, file: Path, tokenizer: str, seq_len: int):
    """Rows of complete lines -> (inputs [rows, seq_len], labels, token counts)."""
    a = np.frombuffer(block, np.uint8)
    nl = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(a)]])
    if starts[-1] == len(a):  # block ends with a newline
        starts, ends = starts[:-1], ends[:-1]
    line_no = first_line + np.arange(len(starts))
    has_cr = (ends > starts) & (a[np.maximum(ends - 1, 0)] == 13)
    ends = ends - has_cr
    nonempty = ends > starts  # blank lines are skipped, as csv readers do
    starts, ends, line_no = starts[nonempty], ends[nonempty], line_no[nonempty]
    tabs = np.flatnonzero(a == 9)
    first_tab = np.searchsorted(tabs, starts)
    n_tabs = np.searchsorted(tabs, ends) - first_tab
    bad = np.flatnonzero(n_tabs != 1)
    if len(bad):
        i = bad[0]
        raise LraError(
            f"{_where(file, int(line_no[i]))}: expected 2 tab-separated fields (Source, Target), "
            f"found {int(n_tabs[i]) + 1}; fix or remove that row, or re-export the file"
        )
    tab = tabs[first_tab] if len(starts) else first_tab
    # labels: a single digit is the fast path, anything else is checked one by one
    field_len = ends - tab - 1
    digit = a[np.minimum(tab + 1, len(a) - 1)] if len(a) else tab
    fast = (field_len == 1) & (digit >= ord("0")) & (digit <= ord("9"))
    labels = (digit.astype(np.int32) - ord("0")) * fast
    for i in np.flatnonzero(~fast):
        text = block[tab[i] + 1 : ends[i]].decode("utf-8", "replace").strip()
        where = _where(file, int(line_no[i]))
        if not _INT.fullmatch(text):
            raise LraError(
                f"{where}: label {text[:40]!r} is not an integer; Target must be the answer 0-9"
            )
        value = int(text)
        if not 0 <= value <= 9:
            raise LraError(f"{where}: label {value} is outside 0-9; Target must be the answer 0-9")
        labels[i] = value
    # tokens: only Source fields count, so blank out every Target (tab to line end)
    raw_end = np.concatenate([nl, [len(a)]])[np.searchsorted(nl, tab)] if len(tab) else tab
    span = np.zeros(len(a) + 1, np.int8)
    span[tab] = 1
    span[raw_end] = -1
    w = a.copy()
    w[np.cumsum(span[:-1], dtype=np.int8) > 0] = ord(" ")
    if tokenizer == "s4":  # positions move when parentheses are deleted
        kept_before = np.concatenate([[0], np.cumsum(~_PARENS[w], dtype=np.int64)])
        row_start = kept_before[starts]
    else:
        row_start = starts
    ids, tok_start, _ = tokenize_text(w.tobytes(), tokenizer)
    row = np.searchsorted(row_start, tok_start, side="right") - 1
    counts = np.bincount(row, minlength=len(starts)).astype(np.int64)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise LraError(
            f"{_where(file, int(line_no[empty[0]]))}: Source has no tokens; fix or remove that row"
        )
    out = np.zeros((len(starts), seq_len), np.int8)
    _pad_rows(ids, counts, out)
    return out, labels.astype(np.int32), counts


def _line_blocks(handle, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines and the number of lines in each."""
    carry = b""
    while True:
        chunk = handle.read(block_bytes)
        if not chunk:
            if carry:
                yield carry, carry.count(b"\n") + 1
            return
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        carry = data[cut:]
        yield data[:cut], data.count(b"\n", 0, cut)


def read_tsv_file(
    file: str | os.PathLike, tokenizer: str = "lra", seq_len: int = 2000
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One LRA ListOps TSV file -> (inputs [N, seq_len] int8, labels int32 [N], stats)."""
    file = Path(file)
    if not file.is_file():
        raise LraError(
            f"listops: {file} does not exist; put LRA's {file.name} there "
            "(lra_release/listops-1000) or use task.data.source=generate"
        )
    inputs, labels, counts = [], [], []
    with open(file, "rb") as handle:
        header = handle.readline()
        text = header.rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
        if text != TSV_HEADER:
            shown = "the file is empty" if not header else f"found {text[:60]!r}"
            raise LraError(
                f"{file}, line 1: header must be 'Source<TAB>Target' (LRA's ListOps TSV), "
                f"{shown}; is this the right file?"
            )
        line = 2
        for block, n_lines in _line_blocks(handle, _READ_BLOCK_BYTES):
            x, y, c = _parse_block(block, line, file, tokenizer, seq_len)
            inputs.append(x)
            labels.append(y)
            counts.append(c)
            line += n_lines
    if not labels or not sum(len(y) for y in labels):
        raise LraError(f"{file}: no data rows after the header; re-export or re-download the file")
    lengths = np.concatenate(counts)
    return np.concatenate(inputs), np.concatenate(labels), _length_stats(lengths, seq_len)


def read_tsv(
    folder: str | os.PathLike, tokenizer: str = "lra", seq_len: int = 2000, *, prefix: str = TSV_PREFIX
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """`<folder>/basic_{train,val,test}.tsv` -> splits and per-split stats."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LraError(
            f"listops: data folder {folder} does not exist; set task.data.path to the folder "
            f"holding {prefix}_train.tsv, {prefix}_val.tsv and {prefix}_test.tsv "
            "(LRA release: lra_release/listops-1000) or use task.data.source=generate"
        )
    splits, stats = {}, {}
    for split in SPLITS:
        x, y, s = read_tsv_file(folder / f"{prefix}_{split}.tsv", tokenizer, seq_len)
        splits[split] = {"inputs": x, "labels": y}
        stats[split] = s
    return splits, stats


# ----------------------------------------------------------------------------
# Independent evaluator (checks the generator's labels from the written strings)


def evaluate_string(source: str) -> int:
    """The value of a ListOps expression in its written form, read with a stack.

    Deliberately shares nothing with the generator: tokens are whitespace
    separated, `(`/`)` only have to balance, `[OP` opens, `]` closes.
    """
    frames: list[tuple[str, list[int]]] = []
    result: list[int] = []
    depth = 0

    def emit(v: int) -> None:
        (frames[-1][1] if frames else result).append(v)

    for tok in source.split():
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')'")
        elif tok.startswith("[") and tok[1:] in OPERATORS:
            frames.append((tok[1:], []))
        elif tok == "]":
            if not frames or not frames[-1][1]:
                raise ValueError("']' without an open operator and its arguments")
            op, args = frames.pop()
            emit(_apply(op, args))
        elif len(tok) == 1 and tok in "0123456789":
            emit(int(tok))
        else:
            raise ValueError(f"unknown token {tok!r}")
    if frames or depth or len(result) != 1:
        raise ValueError("incomplete expression")
    return result[0]


def _apply(op: str, args: list[int]) -> int:
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "SM":
        return sum(args) % 10
    s = sorted(args)  # MED: mean of the middle pair for an even count, then int()
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else int((s[mid - 1] + s[mid]) / 2)


# ----------------------------------------------------------------------------
# The task


def _field(node, name: str):
    """A data setting from a DictConfig, a mapping or an attribute object; default if absent."""
    if node is None:
        return DEFAULTS[name]
    if isinstance(node, Mapping) or hasattr(node, "keys"):
        return node.get(name, DEFAULTS[name])
    return getattr(node, name, DEFAULTS[name])


def _settings(cfg) -> dict[str, Any]:
    data = getattr(cfg, "data", None)
    if data is None and hasattr(cfg, "get"):
        data = cfg.get("data")
    return {name: _field(data, name) for name in DEFAULTS}


def _int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            value = int(value)
        else:
            raise LraError(f"task.data.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise LraError(f"task.data.{name} must be at least {minimum}, got {value}")
    return int(value)


@TASKS.register("listops")
class ListOps(Task):
    name = "listops"
    num_classes = 10
    version = "1"
    auto_prepare = True

    def vocab_size(self, cfg) -> int:
        return VOCAB_SIZE

    def check(self, cfg) -> None:
        super().check(cfg)
        s = _settings(cfg)
        if s["source"] not in SOURCES:
            raise LraError(f"task.data.source must be one of {', '.join(SOURCES)}, got {s['source']!r}")
        if s["tokenizer"] not in TOKENIZERS:
            raise LraError(
                f"task.data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {s['tokenizer']!r}"
            )
        if s["source"] == "tsv":
            if not s["path"]:
                raise LraError(
                    "task.data.path must name the folder holding basic_{train,val,test}.tsv "
                    "when task.data.source=tsv"
                )
            return
        for name in ("train_size", "val_size", "test_size", "max_length", "max_depth"):
            _int(s[name], name, 1)
        _int(s["seed"], "seed", 0)
        _int(s["min_length"], "min_length", 0)
        _int(s["max_args"], "max_args", 2)
        if s["workers"] is not None:
            _int(s["workers"], "workers", 1)
        if int(s["min_length"]) >= int(s["max_length"]):
            raise LraError(
                f"task.data.min_length ({s['min_length']}) must be below task.data.max_length "
                f"({s['max_length']}); both bounds are exclusive"
            )
        longest = max_tree_length(int(s["max_depth"]), int(s["max_args"]))
        if longest <= int(s["min_length"]):
            raise LraError(
                f"task.data.max_depth={s['max_depth']} and max_args={s['max_args']} allow trees of "
                f"at most {longest} tokens, not above min_length={s['min_length']}; raise them"
            )

    def build(self, cfg) -> Built:
        self.check(cfg)
        s = _settings(cfg)
        seq_len = int(cfg.seq_len)
        meta: dict[str, Any] = {
            "source": s["source"],
            "tokenizer": s["tokenizer"],
            "vocab": list(VOCAB),
        }
        start = time.perf_counter()
        if s["source"] == "tsv":
            splits, stats = read_tsv(s["path"], s["tokenizer"], seq_len)
            meta["path"] = str(Path(s["path"]).resolve())
            meta["read_seconds"] = round(time.perf_counter() - start, 2)
        else:
            sizes = {split: int(s[f"{split}_size"]) for split in SPLITS}
            generated = generate_splits(
                seed=int(s["seed"]),
                train_size=sizes["train"],
                val_size=sizes["val"],
                test_size=sizes["test"],
                min_length=int(s["min_length"]),
                max_length=int(s["max_length"]),
                max_depth=int(s["max_depth"]),
                max_args=int(s["max_args"]),
                workers=s["workers"],
            )
            meta["generation_seconds"] = round(time.perf_counter() - start, 2)
            splits, stats = {}, {}
            for split, data in generated.items():
                inputs, stats[split] = encode(data, s["tokenizer"], seq_len)
                stats[split]["mean_length"] = round(float(data.lengths().mean()), 1)
                splits[split] = {"inputs": inputs, "labels": data.labels}
            meta.update(
                seed=int(s["seed"]),
                min_length=int(s["min_length"]),
                max_length=int(s["max_length"]),
                max_depth=int(s["max_depth"]),
                max_args=int(s["max_args"]),
                chunk_size=CHUNK_SIZE,
                numpy=np.__version__,
            )
        meta["sizes"] = {split: int(len(splits[split]["labels"])) for split in SPLITS}
        meta["stats"] = stats
        meta["build_seconds"] = round(time.perf_counter() - start, 2)
        return Built(splits=splits, meta=meta)


def export_tsv(cfg, folder: str | os.PathLike) -> list[Path]:
    """Generate the splits that `cfg` (a task config) describes and write them as LRA TSV."""
    ListOps().check(cfg)
    s = _settings(cfg)
    splits = generate_splits(
        seed=int(s["seed"]),
        train_size=int(s["train_size"]),
        val_size=int(s["val_size"]),
        test_size=int(s["test_size"]),
        min_length=int(s["min_length"]),
        max_length=int(s["max_length"]),
        max_depth=int(s["max_depth"]),
        max_args=int(s["max_args"]),
        workers=s["workers"],
    )
    return write_tsv(folder, splits)
