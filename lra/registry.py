"""Small explicit registries: models and tasks are found by name, never by if/elif."""

from __future__ import annotations

import importlib
import os
from typing import Callable, Generic, TypeVar

from lra.errors import LraError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map that fails with the list of valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise LraError(
                f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


MODELS: Registry = Registry("model")
TASKS: Registry = Registry("task")


def load_all() -> None:
    """Import the model and task packages so that their modules register themselves.

    Modules named in LRA_PLUGINS (comma-separated import paths) are imported too:
    a researcher's own tasks and models register from outside the package, and
    reach every command, worker processes of a sweep included.
    """
    import lra.models  # noqa: F401
    import lra.tasks  # noqa: F401

    for name in filter(None, (n.strip() for n in os.environ.get("LRA_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise LraError(f"LRA_PLUGINS names '{name}', which cannot be imported ({err}); "
                           "fix the name or PYTHONPATH") from None
