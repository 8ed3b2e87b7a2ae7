"""The dynamic batcher alone (no model, no HTTP): images that wait together run as one batch
of at most ``max_batch``; every request gets its own row; any fault in gathering, stacking,
counting or running a batch answers every request of that batch and the batcher goes on; a
batcher whose task ends answers everything queued and refuses new images; a full queue
refuses at once. Events and futures, never sleeps, decide when each thing has happened."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from vggnet.serve.batcher import BatchError, DynamicBatcher, Overloaded


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))  # a request left waiting fails, not hangs


def test_waiting_images_run_as_batches_of_at_most_max_batch():
    sizes = []

    def infer(x):
        sizes.append(len(x))
        return x * 2

    async def go():
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=50)
        b.start()
        xs = [torch.full((1, 3), float(i)) for i in range(10)]
        out = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()
        return xs, out

    xs, out = run(go())
    assert sizes == [4, 4, 2]  # all ten waited together; the last batch closed on max_wait
    for x, y in zip(xs, out):  # every request got its own row back
        assert torch.equal(y, x[0] * 2)


def test_a_lone_image_waits_at_most_max_wait_for_company():
    """One image and nothing else: its batch closes on the deadline with that image alone;
    an image that comes while the first is waiting joins its batch."""
    sizes = []

    def infer(x):
        sizes.append(len(x))
        return x

    async def go():
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=2, max_wait_ms=1)
        b.start()
        alone = await b.submit(torch.ones(1, 2))
        b.max_wait = 600  # from the next batch on: wait for the second image, however late
        first = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        while b._queue._unfinished_tasks < 2 or not b._queue.empty():
            await asyncio.sleep(0)  # until the first was queued and the task has taken it
        second = asyncio.ensure_future(b.submit(torch.zeros(1, 2)))
        out = await asyncio.gather(first, second)
        await b.stop()
        return alone, out

    alone, (first, second) = run(go())
    assert sizes == [1, 2] and torch.equal(alone, torch.ones(2))
    assert torch.equal(first, torch.ones(2)) and torch.equal(second, torch.zeros(2))


def test_an_image_that_comes_within_max_wait_joins_the_batch():
    """Under a second of waiting (as served: 5 ms by default), a second image that comes
    while the first waits still joins it."""
    sizes = []

    def infer(x):
        sizes.append(len(x))
        return x

    async def go():
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=2, max_wait_ms=900)
        b.start()
        first = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        while b._queue._unfinished_tasks < 1 or not b._queue.empty():
            await asyncio.sleep(0)  # until the task has taken it and waits for company
        second = asyncio.ensure_future(b.submit(torch.zeros(1, 2)))
        await asyncio.gather(first, second)
        await b.stop()

    run(go())
    assert sizes == [2]


def test_the_model_runs_in_the_executor_it_was_given():
    """One model thread (the service's pool of one): batches never run the model at the
    same time, and never on the event loop."""
    threads = []

    def infer(x):
        threads.append(threading.current_thread().name)
        return x

    async def go():
        pool = ThreadPoolExecutor(1, thread_name_prefix="vggnet-model")
        b = DynamicBatcher(infer, pool, max_batch=1, max_wait_ms=0)
        b.start()
        assert b._task.get_name() == "vggnet-batcher"
        await asyncio.gather(*(b.submit(torch.ones(1, 2)) for _ in range(3)))
        await b.stop()

    run(go())
    assert len(threads) == 3 and all(t.startswith("vggnet-model") for t in threads)


def test_without_batching_and_with_a_failing_model():
    sizes = []

    def infer(x):
        sizes.append(len(x))
        if (x < 0).any():
            raise RuntimeError("boom")
        return x

    async def go():
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=1, max_wait_ms=0)
        b.start()
        ok = await asyncio.gather(*(b.submit(torch.ones(1, 2)) for _ in range(3)))
        with pytest.raises(BatchError, match="a batch of 1 image\\(s\\) failed: RuntimeError: boom"):
            await b.submit(-torch.ones(1, 2))
        after = await b.submit(torch.ones(1, 2))  # the batcher survived the failure
        alive = b.alive
        await b.stop()
        return ok, after, alive

    ok, after, alive = run(go())
    assert sizes == [1, 1, 1, 1, 1] and len(ok) == 3 and torch.equal(after, torch.ones(2))
    assert alive


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_batch=0), "max_batch must be >= 1, not 0"),
    (dict(max_wait_ms=-1), "max_wait_ms must be >= 0, not -1"),
])
def test_settings_that_cannot_work_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicBatcher(lambda x: x, None, **kwargs)
    DynamicBatcher(lambda x: x, None, max_batch=1, max_wait_ms=0)  # the smallest that work


def test_the_defaults_are_the_documented_ones():
    """32 images a batch, 5 ms of waiting for company, no bound on the queue (`vggnet serve`
    sets its own --max-queue)."""
    b = DynamicBatcher(lambda x: x, None)
    assert (b.max_batch, b.max_wait, b.max_queue) == (32, 0.005, 0)
    assert DynamicBatcher(lambda x: x, None, max_wait_ms=250).max_wait == 0.25


def test_a_batcher_not_started_says_so():
    b = DynamicBatcher(lambda x: x, None)
    assert not b.alive and b.ended is None
    with pytest.raises(RuntimeError, match="not started"):
        run(b.submit(torch.ones(1, 2)))


def _fault(case):
    """(infer, on_batch) for a batch that fails at one point, given in ``case``."""
    def infer(x):
        if case == "model raises":
            raise RuntimeError("boom")
        if case == "rows missing":
            return x[:-1]
        return x

    def on_batch(n):
        if case == "counting raises":
            raise ValueError("metrics broke")
    return infer, on_batch


@pytest.mark.parametrize("case, cause", [
    ("shapes differ", "RuntimeError"),     # two uploads decoded to different sizes: torch.cat
    ("model raises", "a batch of 2 image(s) failed: RuntimeError: boom"),
    ("rows missing", "the model answered 1 rows for 2 images"),
    ("counting raises", "ValueError: metrics broke"),
])
def test_every_fault_in_a_batch_answers_all_its_requests_and_the_batcher_goes_on(case, cause):
    infer, on_batch = _fault(case)
    counted = []

    async def go():
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=2, max_wait_ms=10_000,
                           on_batch=on_batch)
        b.start()
        second = torch.ones(1, 3, 2, 2) if case == "shapes differ" else torch.ones(1, 3, 4, 4)
        results = await asyncio.gather(b.submit(torch.ones(1, 3, 4, 4)), b.submit(second),
                                       return_exceptions=True)
        alive = b.alive
        b.infer, b.on_batch = (lambda x: x), counted.append  # the fault is gone
        b.max_wait = 0
        after = await b.submit(torch.ones(1, 3, 4, 4))
        await b.stop()
        return results, alive, after

    results, alive, after = run(go())
    assert all(isinstance(r, BatchError) and cause in str(r) for r in results), results
    assert alive and after.shape == (3, 4, 4) and counted == [1]


def test_a_request_cancelled_while_waiting_is_left_out_of_its_batch():
    """A client that went away: its image is dropped before the batch runs, the others of
    the batch are answered."""
    sizes = []
    started, release = threading.Event(), threading.Event()

    def infer(x):
        sizes.append(len(x))
        started.set()
        release.wait(60)
        return x

    async def go():
        loop = asyncio.get_running_loop()
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=0)
        b.start()
        busy = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        await loop.run_in_executor(None, started.wait, 60)  # the model is busy
        gone = asyncio.ensure_future(b.submit(torch.zeros(1, 2)))
        stays = asyncio.ensure_future(b.submit(torch.full((1, 2), 3.0)))
        await asyncio.sleep(0)  # both are queued
        gone.cancel()
        release.set()
        out = await asyncio.gather(busy, stays)
        await b.stop()
        return out

    busy, stays = run(go())
    assert sizes == [1, 1] and torch.equal(stays, torch.full((2,), 3.0))


def test_a_batcher_whose_task_ends_answers_everything_queued_and_refuses_new_images():
    async def go():
        b = DynamicBatcher(lambda x: x, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=1000)
        b.start()
        assert b.alive and b.ended is None
        waiting = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        await asyncio.sleep(0)  # queued
        b._task.cancel()  # the task ends (as it would on a bug outside its try)
        results = await asyncio.gather(waiting, return_exceptions=True)
        with pytest.raises(BatchError, match="the batching task has ended \\(stopped\\); the "
                                             "service must be restarted"):
            await b.submit(torch.ones(1, 2))
        return results, b.alive, b.ended

    results, alive, ended = run(go())
    assert isinstance(results[0], BatchError) and not alive and ended == "stopped"
    assert "has ended (stopped)" in str(results[0])


def test_images_being_gathered_when_the_service_stops_are_answered():
    async def go():
        b = DynamicBatcher(lambda x: x, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=60_000)
        b.start()
        taken = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        while b._queue._unfinished_tasks == 0 or not b._queue.empty():
            await asyncio.sleep(0)  # until it was queued and the task has taken it
        await b.stop()
        return await asyncio.gather(taken, return_exceptions=True)

    (answer,) = run(go())
    assert isinstance(answer, BatchError)
    assert str(answer) == "the service stopped before this image's batch ran"


def test_a_task_that_dies_of_an_error_says_which_and_answers_what_waits():
    async def go():
        b = DynamicBatcher(lambda x: x, ThreadPoolExecutor(1), max_batch=4, max_wait_ms=1000)
        b.start()
        queued = asyncio.get_running_loop().create_future()
        b._task.cancel()
        await asyncio.gather(b._task, return_exceptions=True)

        async def broken():
            raise KeyError("lost")
        await b._queue.put((torch.ones(1, 2), queued))  # left in the queue when it died
        b._task = asyncio.get_running_loop().create_task(broken())
        b._task.add_done_callback(b._on_end)
        await asyncio.gather(b._task, return_exceptions=True)
        return b.ended, await asyncio.gather(queued, return_exceptions=True)

    ended, (answer,) = run(go())
    assert ended == "KeyError: 'lost'"
    assert isinstance(answer, BatchError) and "has ended (KeyError: 'lost')" in str(answer)

    async def returns():
        b = DynamicBatcher(lambda x: x, ThreadPoolExecutor(1))
        b.start()
        b._task.cancel()
        await asyncio.gather(b._task, return_exceptions=True)

        async def done():
            return None
        b._task = asyncio.get_running_loop().create_task(done())
        b._task.add_done_callback(b._on_end)
        await b._task
        await asyncio.sleep(0)  # the done callback runs on the next turn of the loop
        return b.ended

    assert run(returns()) == "returned"


def test_a_full_queue_refuses_at_once_and_what_waits_is_answered():
    """With the model busy and max_queue images waiting, the next image is refused at once;
    the waiting ones are all answered once the model is free."""
    started, release = threading.Event(), threading.Event()

    def infer(x):
        started.set()
        release.wait(60)
        return x

    async def go():
        loop = asyncio.get_running_loop()
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=1, max_wait_ms=0,
                           max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        await loop.run_in_executor(None, started.wait, 60)  # the model is busy with it
        queued = [asyncio.ensure_future(b.submit(torch.ones(1, 2))) for _ in range(2)]
        await asyncio.sleep(0)  # both in the queue
        with pytest.raises(Overloaded, match="2 images are already waiting for the model "
                                             "\\(the queue holds 2\\)"):
            await b.submit(torch.ones(1, 2))
        release.set()
        done = await asyncio.gather(running, *queued)
        await b.stop()
        return done

    assert len(run(go())) == 3


def test_an_unbounded_queue_takes_everything():
    started, release = threading.Event(), threading.Event()

    def infer(x):
        started.set()
        release.wait(60)
        return x

    async def go():
        loop = asyncio.get_running_loop()
        b = DynamicBatcher(infer, ThreadPoolExecutor(1), max_batch=64, max_wait_ms=0)
        b.start()
        running = asyncio.ensure_future(b.submit(torch.ones(1, 2)))
        await loop.run_in_executor(None, started.wait, 60)
        queued = [asyncio.ensure_future(b.submit(torch.ones(1, 2))) for _ in range(300)]
        await asyncio.sleep(0)
        release.set()
        done = await asyncio.gather(running, *queued)
        await b.stop()
        return done

    assert len(run(go())) == 301
