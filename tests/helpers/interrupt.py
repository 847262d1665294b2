"""Stop a stage as if its driver were killed right after one step finished.

The kernel's ``TaskRunner.run`` is wrapped, for the duration of the ``with`` block, to
raise once the named step has recorded its results; everything the real run wrote up
to that point stays on disk for the resumed run to find.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pytest

from pipeline.kernel import TaskRunner


class Interrupted(Exception):
    """The stage was stopped after the step it names."""


@contextmanager
def interrupted_after(step: str) -> Iterator[None]:
    """Run the block's stage until ``step`` has finished, then stop it; fails if the
    stage never reached that step."""
    run = TaskRunner.run

    def run_then_stop(self: TaskRunner, name: str, *args, **kwargs):
        results = run(self, name, *args, **kwargs)
        if name == step:
            raise Interrupted(step)
        return results

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TaskRunner, "run", run_then_stop)
        with pytest.raises(Interrupted):
            yield
