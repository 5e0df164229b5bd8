"""The sampler a run's rollouts use, loaded when they start and stopped when they end.

A vLLM engine takes seconds to start and holds memory (on a GPU, most of it) while it lives, and
ETO is offline per round: a policy is loaded when its rollouts start, and its engine must be gone
before the next training stage needs the memory. So a sampler is released after each rollout
call, except inside `hold()`, where consecutive rollouts of the same policy share it (the splits
of one evaluation start one engine, not one each).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Samplers:
    def __init__(self, kind) -> None:
        self.kind = kind  # pipeline.agents.TextAgents: knows which sampler a policy gets
        self._held: tuple[tuple, Any] | None = None
        self._holds = 0

    def get(self, model: str, template: str | None, width: int):
        """(backend, renderer) for `model`: the held one when it is the same, else a new one."""
        key = (model, template, width)
        if self._held is not None and self._held[0] == key:
            return self._held[1]
        self.release()
        loaded = self.kind.load_sampler(model, template, width)
        self._held = (key, loaded)
        return loaded

    def done(self) -> None:
        """A rollout call finished: stop its sampler unless a `hold()` keeps it."""
        if not self._holds:
            self.release()

    @contextmanager
    def hold(self) -> Iterator[None]:
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self.release()

    def release(self) -> None:
        held, self._held = self._held, None
        close = getattr(held[1][0], "close", None) if held is not None else None
        if close is not None:
            close()  # a vLLM engine stops now; an HF model is freed with its last reference
