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


class BatchError(RuntimeError):
    """A batch could not be answered: every request that waited for it gets this error,
    which names the cause (the service answers it as a 500 JSON)."""


class Overloaded(RuntimeError):
    """More images wait than the queue holds: the request is refused at once (503 with
    Retry-After) rather than left to wait for seconds."""


class DynamicBatcher:
    """No request is ever left waiting: any exception while gathering, stacking or running a
    batch answers every image of that batch with a :class:`BatchError`, and the task goes
    on; if the task ends all the same (stopped, or a bug), everything queued is answered,
    :attr:`alive` turns false (``/healthz`` then answers 503) and new images are refused."""

    def __init__(self, infer: Callable[[torch.Tensor], torch.Tensor], executor: Executor, *,
                 max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 0,
                 on_batch: Callable[[int], None] | None = None):
        """``max_queue``: the most images that may wait for a batch (0: no bound); beyond it
        :meth:`submit` raises :class:`Overloaded` at once."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, not {max_wait_ms}")
        self.infer, self.executor = infer, executor
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch, self.max_queue = on_batch, max_queue
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.ended: str | None = None  # why the task ended, once it has

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self.ended = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vggnet-batcher")
        self._task.add_done_callback(self._on_end)

    @property
    def alive(self) -> bool:
        """Whether the batching task runs (false before start, after stop or a crash)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output row for one 1 x C x H x W input."""
        if self._queue is None:
            raise RuntimeError("the batcher is not started (start() on the event loop)")
        if not self.alive:
            raise BatchError(f"the batching task has ended ({self.ended}); the service must "
                             "be restarted")
        if self.max_queue and self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} images are already waiting for the model "
                             f"(the queue holds {self.max_queue}): retry in a moment")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((x, future))
        return await future

    async def _gather(self, items: list) -> list:
        """Fill ``items`` (the caller's list, so that what was taken off the queue is still
        answered if gathering is interrupted) with the next batch's images."""
        items.append(await self._queue.get())
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
        while True:
            items: list = []
            try:
                await self._gather(items)
                items[:] = [(x, f) for x, f in items if not f.done()]  # drop cancelled
                if items:
                    self._answer(items, await self._infer(items))
            except asyncio.CancelledError:
                _fail(items, BatchError("the service stopped before this image's batch ran"))
                raise
            except Exception as exc:  # noqa: BLE001 - every waiting request hears of any error
                _fail(items, BatchError(f"a batch of {len(items)} image(s) failed: "
                                        f"{type(exc).__name__}: {exc}"))

    async def _infer(self, items: list) -> torch.Tensor:
        if self.on_batch is not None:
            self.on_batch(len(items))
        batch = torch.cat([x for x, _ in items])
        out = await asyncio.get_running_loop().run_in_executor(self.executor, self.infer, batch)
        if len(out) != len(items):
            raise RuntimeError(f"the model answered {len(out)} rows for {len(items)} images")
        return out

    @staticmethod
    def _answer(items: list, out: torch.Tensor) -> None:
        for row, (_, future) in zip(out, items):
            if not future.done():
                future.set_result(row)

    def _on_end(self, task: asyncio.Task) -> None:
        """The task ended: say why, and answer whatever still waits in the queue."""
        self.ended = ("stopped" if task.cancelled() else
                      f"{type(task.exception()).__name__}: {task.exception()}"
                      if task.exception() else "returned")
        waiting = []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        _fail(waiting, BatchError(f"the batching task has ended ({self.ended})"))


def _fail(items: list, error: BatchError) -> None:
    for _, future in items:
        if not future.done():
            future.set_exception(error)
