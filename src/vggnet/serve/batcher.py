"""Dynamic batching: images of concurrent requests go through the model as one batch.

Each image waits in one queue. A single batching task takes the first waiting image, then
gathers more until it holds ``max_batch`` of them or ``max_wait_ms`` has passed since the
first, and runs the batch in a worker thread, off the event loop. While a batch runs, new
images queue up, so under load the next batch fills at once and the wait is not paid.
``max_batch=1`` serves one image at a time (no batching).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Callable

import torch


class DynamicBatcher:
    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], executor: Executor, *,
                 max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, not {max_wait_ms}")
        self.infer, self.executor = infer, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vggnet-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output row for one 1 x C x H x W input."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started (start() on the event loop)")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((x, future))
        return await future

    async def _gather(self) -> list:
        items = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(items) < self.max_batch:
            try:  # whatever already waits joins at once, without waiting
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [(x, f) for x, f in await self._gather() if not f.done()]  # drop cancelled
            if not items:
                continue
            if self.on_batch is not None:
                self.on_batch(len(items))
            batch = torch.cat([x for x, _ in items])
            try:
                out = await loop.run_in_executor(self.executor, self.infer, batch)
            except Exception as exc:  # every waiting request gets the error, the task goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for row, (_, future) in zip(out, items):
                if not future.done():
                    future.set_result(row)
