"""A context manager whose exit is ``close()``, for the video module's resources."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class ClosesOnExit:
    """``with obj:`` gives ``obj`` and calls ``obj.close()`` on the way out, even on error
    (the exception is never swallowed). Subclasses define ``close``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
