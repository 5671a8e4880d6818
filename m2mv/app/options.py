"""How the web app is served: the one place that holds the defaults and checks of ``m2mv app``'s options.

Light on purpose (no Gradio, no torch): the CLI reads the defaults while it builds its parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from m2mv.errors import UsageError


@dataclass(frozen=True)
class ServeOptions:
    """Where and how many: the address to bind (``127.0.0.1``: this machine only), the port (None: Gradio's first
    free one from 7860), the requests generated at once and the requests that may wait in Gradio's queue."""

    host: str = "127.0.0.1"
    port: int | None = None
    concurrency_limit: int = 1
    max_queue: int = 16

    def __post_init__(self) -> None:
        if self.concurrency_limit < 1 or self.max_queue < 1:
            raise UsageError(f"the app's concurrency limit and queue must be at least 1, got "
                             f"{self.concurrency_limit} and {self.max_queue}")
        if self.port is not None and not 0 < self.port < 65536:
            raise UsageError(f"the app's port must be 1-65535, got {self.port}")
