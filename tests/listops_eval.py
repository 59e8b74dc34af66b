"""An independent ListOps evaluator for the tests: it checks the generator's
labels from the written strings and shares nothing with `tasks/listops_gen.py`."""

from __future__ import annotations

OPERATORS = ("MIN", "MAX", "MED", "SM")

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