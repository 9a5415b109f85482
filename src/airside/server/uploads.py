"""Uploaded photos, read into memory (the body limit has already bounded them). Decoding
happens in the services (``vision/imageio``: size checked before any pixel)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import UploadFile


async def read_images(files: Sequence[UploadFile]) -> list[bytes]:
    return [await f.read() for f in files]
