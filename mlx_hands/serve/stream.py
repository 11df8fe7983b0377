"""One stream connection's per-frame step and its messages. numpy only.

`StreamProcessor.process(frame_rgb, t) -> hands` is a connection's whole per-frame step: pipeline.stream's
HandStream (the detector every few frames or when a hand is lost, boxes from the keypoints in between, the
handedness lock, track ids, One Euro smoothing), over a WorkerPipe, so that its detector and WiLoR calls run
in the inference worker, the WiLoR ones batched with the other clients' frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..export import to_json_dict
from ..pipeline.stream import HandStream
from ..types import Hand
from .settings import RequestError, StreamSettings


class StreamProcessor:
    """HandStream over `pipe` (a WorkerPipe carrying the connection's pipeline options)."""

    def __init__(self, pipe, settings: StreamSettings):
        self.pipe = pipe
        try:
            self.stream = HandStream(pipe, **settings.stream)
        except ValueError as e:  # its own checks of the combination (say, force_handedness without tracking)
            raise RequestError(400, str(e)) from None

    def settings(self) -> dict:
        """The options in force, for the settings acknowledgement."""
        return self.stream.settings()

    def process(self, frame_rgb: np.ndarray, t: float) -> list[Hand]:
        """One frame (H, W, 3) RGB uint8 at time t (seconds, increasing) -> its hands with track ids."""
        return self.stream(frame_rgb, t)


def frame_message(index: int, t: float, hands: Sequence[Hand], dropped: Sequence[int], *,
                  include_vertices: bool) -> dict:
    """The message sent for a processed frame: {"frame", "time", "hands", "dropped"} (hands as to_json_dict)."""
    return {
        "frame": int(index),
        "time": round(float(t), 6),
        "hands": [to_json_dict(h, include_vertices=include_vertices) for h in hands],
        "dropped": [int(i) for i in dropped],
    }
