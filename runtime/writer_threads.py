"""Writer threads: each output (video, PNG, NPZ, ...) is fed from its own background thread, so
encoders work in parallel with each other and with the model, at most a few frames behind."""
from __future__ import annotations

import queue
import threading
import time
from typing import Dict, Optional, Tuple

import numpy as np

from .sinks import Sink, VideoSink
from .sources import Frame

_STOP = object()


class SinkWriter:
    """Feeds a sink from a background thread, at most ``maxsize`` frames behind the caller.

    An error in the thread is re-raised by every later `put` and by `close`; after an error the
    thread keeps draining the queue, so `put` never blocks forever.
    """

    def __init__(self, sink: Sink, maxsize: int = 4) -> None:
        self.sink = sink
        self.write_ms = 0.0
        self.written = 0
        self._error: Optional[BaseException] = None
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._run, name="tr2m-writer", daemon=True)
        self._thread.start()

    def put(self, frame: Frame, depth_m: np.ndarray, extras: dict) -> None:
        """Queue one frame (depth_m float32 [H, W] metres) for the sink."""
        if self._error is not None:
            raise self._error
        self._queue.put((frame, depth_m, extras))

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # drain: the caller learns about the error on its next put
            started = time.perf_counter()
            try:
                self.sink.write(*item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e
                continue
            self.write_ms += (time.perf_counter() - started) * 1e3
            self.written += 1

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def close(self) -> None:
        """Write what is queued, then finalize the sink; raises the first error (after abort)."""
        self._stop_thread()
        if self._error is not None:
            self.sink.abort()
            raise self._error
        self.sink.close()

    def abort(self) -> None:
        """Write what is queued (the frames already done), then finalize without raising."""
        self._stop_thread()
        self.sink.abort()


class WriterThreads:
    """One `SinkWriter` thread per output, so the video encoder, the PNG encoder and the others
    work in parallel; each frame goes to all of them. (`sinks.SinkGroup` is the synchronous
    counterpart: several sinks as one, written in the caller's thread.)"""

    def __init__(self, sinks: Dict[str, Sink], maxsize: int = 4) -> None:
        self.sinks = sinks
        self.writers = {name: SinkWriter(sink, maxsize) for name, sink in sinks.items()}

    @property
    def written(self) -> int:
        """Frames that every output has written."""
        return min((w.written for w in self.writers.values()), default=0)

    def ms_per_frame(self) -> Dict[str, float]:
        return {f"write_{name}": w.write_ms / max(w.written, 1) for name, w in self.writers.items()}

    def put(self, frame: Frame, depth_m: np.ndarray, extras: dict) -> None:
        for writer in self.writers.values():
            writer.put(frame, depth_m, extras)

    def close(self) -> None:
        """Finalize every output; raises the first error after finalizing all."""
        errors = []
        for writer in self.writers.values():
            try:
                writer.close()
            except BaseException as e:  # noqa: BLE001 - raised below, after the others closed
                errors.append(e)
        if errors:
            raise errors[0]

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def video_range(self) -> Optional[Tuple[float, float]]:
        video = self.sinks.get("video")
        return (video.colorizer.min_m, video.colorizer.max_m) if isinstance(video, VideoSink) else None
