"""One router per area of the API (docs/api.md)."""

from typing import Annotated

from fastapi import Path

# The largest row id the stores hold (a signed 64-bit INTEGER): a larger id in a path or a
# query is an invalid field (422), never handed to the database (an OverflowError, a 500).
ROW_ID_MAX = 2**63 - 1
RowId = Annotated[int, Path(ge=0, le=ROW_ID_MAX, description="A row id")]
