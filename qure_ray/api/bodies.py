"""Request bodies read whole, but never past a bound: a client's chunked body of any length stops there."""

from __future__ import annotations

from starlette.requests import Request


async def body_of_at_most(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (the rest is never read into memory)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
