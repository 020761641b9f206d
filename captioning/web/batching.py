"""Micro-batching: requests arriving together cost one encoder + decoder call, not one each.

A worker takes the first waiting image, waits up to `window_ms` for more (at most `max_batch`), and
runs one call for all of them in a thread, so 16 parallel clients cost about one batched call, not
16 sequential ones (the model's cost is mostly per call, not per image). Each Caption comes back
with its image's novelty, scored in the same call from the same features, and its confidence word.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from captioning.captioner import Captioner
from captioning.web.limits import ClientError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batching:
    # How long the first request of a batch waits for company. Short: under load, requests queue
    # while the model runs and all join the next call anyway; a lone request should not wait.
    window_ms: float = 2.0
    max_batch: int = 32


@dataclass
class _Job:
    image: np.ndarray
    beam_size: int
    attention: bool
    future: asyncio.Future


@dataclass
class BatchStats:
    """What the worker ran: tests and the benchmark read it from /health."""

    model_calls: int = 0
    images: int = 0
    recent_sizes: deque = field(default_factory=lambda: deque(maxlen=100))

    def as_json(self) -> dict:
        return {"model_calls": self.model_calls, "images": self.images,
                "largest_batch": max(self.recent_sizes, default=0), "recent_batch_sizes": list(self.recent_sizes)}


class MicroBatcher:
    """Collects concurrent requests into one `captioner.caption_arrays` call per beam size."""

    def __init__(self, captioner: Captioner, batching: Batching, max_queue: int):
        self.captioner, self.batching = captioner, batching
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self.stats = BatchStats()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def caption(self, image: np.ndarray, beam_size: int, attention: bool, timeout_s: float):
        job = _Job(image, beam_size, attention, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ClientError(503, f"server busy: {self.queue.maxsize} requests already waiting; retry shortly") from None
        try:
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            raise ClientError(503, f"timed out after {timeout_s:g} s waiting for the model; retry shortly") from None

    async def _collect(self) -> list[_Job]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batching.window_ms / 1000
        while len(batch) < self.batching.max_batch:
            try:  # everything already waiting joins at once; then wait out the window for more
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return [job for job in batch if not job.future.done()]  # timed-out requests are not run

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            groups: dict[int, list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.beam_size, []).append(job)
            for beam_size, jobs in groups.items():
                try:
                    captions = await asyncio.to_thread(
                        self.captioner.caption_arrays, np.stack([j.image for j in jobs]), beam_size,
                        None, any(j.attention for j in jobs))
                except Exception as e:  # noqa: BLE001 (reported to each waiting request, logged)
                    log.exception("model call failed for a batch of %d", len(jobs))
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                self.stats.model_calls += 1
                self.stats.images += len(jobs)
                self.stats.recent_sizes.append(len(jobs))
                for job, caption in zip(jobs, captions):
                    if not job.future.done():
                        job.future.set_result(caption)
