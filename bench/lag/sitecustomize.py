"""A diagnostic loaded into a benchmarked server: what stops its event loop, and for how long.

``bench/threads.py MODE --lag`` puts this directory on the server's ``PYTHONPATH``. A task on
the loop wakes every millisecond and notes each wake-up that came more than 3 ms late; a thread
samples the main thread's stack whenever the loop is more than 4 ms behind (the thread itself
needs the GIL, so a sample shows where the main thread is once it lets go: Python code that
runs long, or the C code it released the GIL in); ``gc.callbacks`` time the cyclic collector's
runs. Every two seconds, and at exit, the events go to ``$MOECONNECT_LAG_OUT`` (JSON lines:
wall-clock time, kind, detail) for ``threads.py`` to report those of the measured run.

The probe costs the loop a wake-up per millisecond and the samples cost the GIL: compare runs
with it against runs with it, never against runs without.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

import uvicorn.server

_OUT = os.environ.get("MOECONNECT_LAG_OUT")
_BEAT = 0.001
_LATE = 0.003  # a wake-up this late is noted
_STALL = 0.004  # the loop this far behind gets its stack sampled

_events: list[tuple[float, str, Any]] = []
_last_beat = [time.perf_counter()]
_gc_started = [0.0]


async def _beat() -> None:
    while True:
        before = _last_beat[0] = time.perf_counter()
        await asyncio.sleep(_BEAT)
        late = time.perf_counter() - before - _BEAT
        if late > _LATE:
            _events.append((time.time(), "late", round(late * 1000, 2)))


def _stack(frame: Any) -> str:
    frames = traceback.extract_stack(frame)[-10:]
    return " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno}:{f.name}" for f in reversed(frames)
    )


def _sample() -> None:
    main = threading.main_thread().ident
    while True:
        time.sleep(_BEAT)
        if time.perf_counter() - _last_beat[0] > _STALL:
            frame = sys._current_frames().get(main)
            if frame is not None:
                _events.append((time.time(), "stack", _stack(frame)))


def _collected(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        took = (time.perf_counter() - _gc_started[0]) * 1000
        _events.append((time.time(), "gc", [info["generation"], round(took, 2)]))


def _dump() -> None:
    if _OUT:
        with open(_OUT, "w") as out:
            for event in list(_events):
                out.write(json.dumps(event) + "\n")


def _dump_every_two_seconds() -> None:
    while True:
        time.sleep(2)
        _dump()


_serve = uvicorn.server.Server.serve


async def _serve_probed(self: uvicorn.server.Server, *args: Any, **kwargs: Any) -> None:
    task = asyncio.get_running_loop().create_task(_beat())
    for work in (_sample, _dump_every_two_seconds):
        threading.Thread(target=work, daemon=True).start()
    gc.callbacks.append(_collected)
    try:
        await _serve(self, *args, **kwargs)
    finally:
        task.cancel()
        _dump()


uvicorn.server.Server.serve = _serve_probed  # type: ignore[method-assign]
