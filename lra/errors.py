"""One exception type for every mistake a user can fix.

The CLI prints an LraError as a single line and exits with status 2; anything
else is a bug and keeps its traceback.
"""


class LraError(Exception):
    """A user-facing error whose message says what is wrong and what to do."""
