"""Replay progress: a rich bar per trace file on stderr, driven by bytes read.

The replay loop (sysdispatch.trace.replay) knows nothing of rich: it calls a progress hook with
``(trace, bytes read, file size)`` a few times a second. :class:`ReplayProgress` is that hook.
"""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TaskID, TextColumn,
                           TimeRemainingColumn)


class ReplayProgress:
    """``with ReplayProgress(sys.stderr) as hook: replay(..., on_progress=hook)``.

    ``force_terminal`` draws the bar even when the stream is not a terminal (``--progress``);
    the final state of every bar is left on the stream when the context ends.
    """

    def __init__(self, stream: IO[str], *, force_terminal: bool = False) -> None:
        self.console = Console(file=stream, force_terminal=force_terminal or None,
                               stderr=False)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 "[progress.percentage]{task.percentage:>3.0f}%",
                                 DownloadColumn(), TimeRemainingColumn(),
                                 console=self.console, refresh_per_second=10,
                                 auto_refresh=True)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "ReplayProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, trace: str, done: int, size: int) -> None:
        task = self._tasks.get(trace)
        if task is None:
            # The file's name, not its whole path: a long path would squeeze the bar and the
            # percentage out of an 80-column terminal.
            task = self._tasks[trace] = self.progress.add_task(os.path.basename(trace),
                                                               total=max(size, 1))
        self.progress.update(task, completed=done if size else 1)
