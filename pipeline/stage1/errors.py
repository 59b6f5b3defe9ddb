"""Stage 1's errors, and how to find one inside the exception a Ray worker's failure arrives as."""

from __future__ import annotations


class Stage1Error(RuntimeError):
    """Stage 1 cannot continue; the message names the prompt ids, scorer or file involved."""


class ScoringError(Stage1Error):
    """A scorer raised on a batch (or returned non-finite scores) and `on_error` is `fail`."""


def find_stage1_error(exc: BaseException) -> Stage1Error | None:
    """The `Stage1Error` a worker raised, found by type in the chain Ray hands back.

    Ray re-raises a task's exception as a `RayTaskError` subclass of the original type (`as_instanceof_cause`),
    keeps the original in `.cause`, and Ray Data may wrap that again (`__cause__`); all three are followed.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, Stage1Error):
            return cause
        if isinstance(current, Stage1Error):
            return current
        stack += [e for e in (cause, current.__cause__, current.__context__) if isinstance(e, BaseException)]
    return None
