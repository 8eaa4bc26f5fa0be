"""runtime.writer_threads: a sink fed from a thread surfaces its error and never blocks the caller."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import OutputError
from runtime.writer_threads import SinkWriter
from tests.runtime.fixtures_io import BEDROOM, FailingSink, first_frames


def test_an_error_in_the_writer_thread_reaches_the_caller_without_blocking():
    writer = SinkWriter(FailingSink(fail_at=0), maxsize=1)
    frame = first_frames(BEDROOM, 1)[0]
    writer.put(frame, np.ones(frame.rgb.shape[:2], np.float32), {})
    with pytest.raises(OutputError, match="disk full"):
        for _ in range(5):  # the error surfaces on a later put (or close), never blocks
            writer.put(frame, np.ones(frame.rgb.shape[:2], np.float32), {})
        writer.close()
    writer.abort()
    assert writer.sink.finished == "abort" and writer.written == 0
