"""One stream connection's per-frame step and its messages. numpy only.

`StreamProcessor.process(frame_rgb, t) -> hands` is the whole per-frame step of a connection: it is the one
object to swap for another tracking mode (say, one that runs the detector only every few frames and follows
the boxes in between through `pipe.predict_with_boxes`). It runs in a plain thread; `pipe` is a WorkerPipe,
so its calls are batched with the other clients' in the inference worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..export import to_json_dict
from ..pipeline.tracking import HandTracker
from ..types import Hand
from .settings import StreamSettings


class StreamProcessor:
    """Detect (through `pipe`), then track and smooth as the video mode does (HandTracker)."""

    def __init__(self, pipe, settings: StreamSettings):
        self.pipe = pipe
        self.settings = settings
        self.tracker = HandTracker(**settings.tracker)

    def process(self, frame_rgb: np.ndarray, t: float) -> list[Hand]:
        """One frame (H, W, 3) RGB uint8 at time t (seconds, increasing) -> its hands with track ids."""
        return self.tracker.update(self.pipe(frame_rgb, **self.settings.pipeline), t)


def frame_message(index: int, t: float, hands: Sequence[Hand], dropped: Sequence[int], *,
                  include_vertices: bool) -> dict:
    """The message sent for a processed frame: {"frame", "time", "hands", "dropped"} (hands as to_json_dict)."""
    return {
        "frame": int(index),
        "time": round(float(t), 6),
        "hands": [to_json_dict(h, include_vertices=include_vertices) for h in hands],
        "dropped": [int(i) for i in dropped],
    }
