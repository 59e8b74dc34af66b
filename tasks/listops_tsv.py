"""Reading LRA's released ListOps TSV files (`basic_{train,val,test}.tsv`).

Source: google-research/long-range-arena `lra_benchmarks/listops/input_pipeline.py`.
Each row is `Source<TAB>Target`; `Source` is tokenised with one of the
tokenisers of `listops_gen` (see its docstring) into the same ids the generator
writes, so a TSV written by `write_tsv` reads back to identical arrays.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from lra.errors import LraError
from lra.tasks.base import SPLITS
from lra.tasks.listops_gen import (
    DIGIT0, DROP_CLOSE, END_ID, KEEP_CLOSE, OP0, OPERATORS, TOKENIZERS, TSV_HEADER, TSV_PREFIX, UNK_ID,
    _check_tokenizer, _length_stats, _pad_rows,
)

_READ_BLOCK_BYTES = 1 << 24  # bytes per block when reading a TSV file


# ----------------------------------------------------------------------------
# Reading LRA's TSV files


def _translation(tokenizer: str) -> tuple[bytes, bytes]:
    """A bytes.translate table and deletions that leave token bytes (all > 32),
    spaces between tokens and the newlines."""
    table = bytearray(range(256))
    if tokenizer == DROP_CLOSE:
        # tfds Tokenizer(alphanum_only=True) splits on the regex \W+: word characters
        # are letters, digits and "_" (bytes >= 128 count as letters, as in UTF-8 text)
        word = set(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_") | set(range(128, 256))
        for byte in range(256):
            if byte not in word:
                table[byte] = 32
        delete = b""
    else:  # keep_close (S4/S5 code): s.translate(delete "(" and ")").split(); str.split separators in ASCII
        for byte in range(33):
            table[byte] = 32 if byte in b" \t\r\x0b\x0c\x1c\x1d\x1e\x1f" else 0x7F
        delete = b"()"
    table[10] = 10
    return bytes(table), delete


_TRANSLATE = {name: _translation(name) for name in TOKENIZERS}
_TOKEN_IDS = {
    DROP_CLOSE: {**{str(d): DIGIT0 + d for d in range(10)}, **{op: OP0 + k for k, op in enumerate(OPERATORS)}},
    KEEP_CLOSE: {
        **{str(d): DIGIT0 + d for d in range(10)},
        **{"[" + op: OP0 + k for k, op in enumerate(OPERATORS)},
        "]": END_ID,
    },
}
_KEY_BYTES = 4  # every known token of two or more bytes is at most 4 bytes long


def _token_key(text: bytes) -> int:
    key = len(text) << 32
    for j, byte in enumerate(text[:_KEY_BYTES]):
        key |= byte << (8 * j)
    return key


def _lookup_tables(tokenizer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    one = np.full(256, UNK_ID, np.int8)
    keys = {}
    for text, token_id in _TOKEN_IDS[tokenizer].items():
        if len(text) == 1:
            one[ord(text)] = token_id
        else:
            keys[_token_key(text.encode())] = token_id
    order = sorted(keys)
    return one, np.array(order, np.int64), np.array([keys[k] for k in order], np.int8)


_LOOKUP = {name: _lookup_tables(name) for name in TOKENIZERS}


def _tokens_of(t: np.ndarray, tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids and start offsets of the tokens of translated text (tokens = runs of bytes > 32)."""
    if not len(t):
        return np.zeros(0, np.int8), np.zeros(0, np.int64)
    word = np.zeros(len(t) + _KEY_BYTES + 2, bool)  # padded: reading past the end is safe
    np.greater(t, 32, out=word[1 : len(t) + 1])
    starts = np.flatnonzero(word[1:] > word[:-1])  # offsets in t
    one, keys, key_ids = _LOOKUP[tokenizer]
    ids = one[t[starts]]
    multi = np.flatnonzero(word[starts + 2])  # tokens longer than one byte
    if len(multi):  # identified by their first four bytes and their length
        at = starts[multi]
        padded = np.full(len(t) + _KEY_BYTES + 1, 32, np.uint8)
        padded[: len(t)] = t
        key = t[at].astype(np.int64) | (t[at + 1].astype(np.int64) << 8)
        size = np.full(len(at), 2, np.int64)
        going = np.ones(len(at), bool)
        for j in range(2, _KEY_BYTES + 1):
            byte = padded[at + j]
            going &= byte > 32
            size += going
            if j < _KEY_BYTES:
                key |= (byte * going).astype(np.int64) << (8 * j)
        key |= size << 32
        key[size > _KEY_BYTES] = -1
        slot = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        ids[multi] = np.where(keys[slot] == key, key_ids[slot], UNK_ID)
    return ids, starts


def tokenize(source: str, tokenizer: str = KEEP_CLOSE) -> list[int]:
    """Token ids of one Source string (unpadded, untruncated)."""
    _check_tokenizer(tokenizer)
    table, delete = _TRANSLATE[tokenizer]
    text = source.encode().translate(table, delete)
    return _tokens_of(np.frombuffer(text, np.uint8), tokenizer)[0].tolist()


_INT = re.compile(r"[+-]?[0-9]+")


def _where(file: Path, line: int) -> str:
    return f"{file}, line {line}"


def _lines(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end (newline excluded) and newline position of every line of a block."""
    nl = np.flatnonzero(a == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(a)]])
    if starts[-1] == len(a):  # the block ends with a newline
        starts, ends = starts[:-1], ends[:-1]
    return starts, ends, nl


def _parse_block(block: bytes, first_line: int, file: Path, tokenizer: str, seq_len: int):
    """Rows of complete lines -> (inputs [rows, seq_len], labels, token counts)."""
    a = np.frombuffer(block, np.uint8)
    starts, raw_ends, _ = _lines(a)
    line_no = first_line + np.arange(len(starts))
    ends = raw_ends - ((raw_ends > starts) & (a[np.maximum(raw_ends - 1, 0)] == 13))  # "\r\n"
    rows = np.flatnonzero(ends > starts)  # blank lines are skipped, as csv readers do
    tabs = np.flatnonzero(a == 9)
    first_tab = np.searchsorted(tabs, starts[rows])
    n_tabs = np.searchsorted(tabs, ends[rows]) - first_tab
    bad = np.flatnonzero(n_tabs != 1)
    if len(bad):
        i = rows[bad[0]]
        raise LraError(
            f"{_where(file, int(line_no[i]))}: expected 2 tab-separated fields (Source, Target), "
            f"found {int(n_tabs[bad[0]]) + 1}; fix or remove that row, or re-export the file"
        )
    tab = tabs[first_tab]
    # labels: a single digit is the fast path, anything else is checked one by one
    digit = a[np.minimum(tab + 1, len(a) - 1)]
    fast = (ends[rows] - tab == 2) & (digit >= ord("0")) & (digit <= ord("9"))
    labels = (digit.astype(np.int32) - ord("0")) * fast
    text = bytearray(block)
    blank = np.frombuffer(text, np.uint8)  # writable view: blank every Target field
    blank[tab[fast] + 1] = 32
    for j in np.flatnonzero(~fast):
        i = rows[j]
        field = block[tab[j] + 1 : ends[i]].decode("utf-8", "replace").strip()
        where = _where(file, int(line_no[i]))
        if not _INT.fullmatch(field):
            raise LraError(f"{where}: label {field[:40]!r} is not an integer; Target must be the answer 0-9")
        value = int(field)
        if not 0 <= value <= 9:
            raise LraError(f"{where}: label {value} is outside 0-9; Target must be the answer 0-9")
        labels[j] = value
        blank[tab[j] + 1 : ends[i]] = 32
    del blank
    table, delete = _TRANSLATE[tokenizer]
    t = np.frombuffer(text.translate(table, delete), np.uint8)
    if delete:  # positions moved; the lines are still the same lines
        starts, ends, _ = _lines(t)
    ids, tok_start = _tokens_of(t, tokenizer)
    first = np.searchsorted(tok_start, starts[rows])
    counts = np.searchsorted(tok_start, ends[rows]) - first
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise LraError(
            f"{_where(file, int(line_no[rows[empty[0]]]))}: Source has no tokens; fix or remove that row"
        )
    out = np.zeros((len(rows), seq_len), np.int8)
    _pad_rows(ids, counts, out, starts=first)
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
    file: str | os.PathLike, tokenizer: str = KEEP_CLOSE, seq_len: int = 2000
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One LRA ListOps TSV file -> (inputs [N, seq_len] int8, labels int32 [N], stats)."""
    _check_tokenizer(tokenizer)
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
    folder: str | os.PathLike, tokenizer: str = KEEP_CLOSE, seq_len: int = 2000, *, prefix: str = TSV_PREFIX
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
