"""What runs in a Dask task's container: the task on its dependencies. A
module of its own, with nothing to import, that the pools' workers preload,
so that a task's call brings no module into its container."""
from __future__ import annotations

from typing import Any


def run(task: Any, data: dict) -> Any:
    """task(data); a coroutine function's task runs to its end on an event
    loop of the container's own."""
    result = task(data)
    if hasattr(result, "__await__"):
        import asyncio

        async def awaited() -> Any:
            return await result
        result = asyncio.run(awaited())
    return result
