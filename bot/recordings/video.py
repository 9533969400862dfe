"""Video writing shared by episodes and overlay videos: H.264 in fragmented MP4, encoded on a worker thread.

Fragmented MP4 (empty moov + one fragment per keyframe, flushed per packet) stays decodable while it grows,
so a killed process loses at most the last keyframe interval (1 s by default), and the caller never waits
for x264 unless the queue is full (then it blocks: frames are never dropped silently).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from bot.errors import PilotError


class VideoWriter:
    """`put(rgb_frame)` per frame, `close()` at the end. Frames are RGB uint8 (H, W, 3), W and H even."""

    def __init__(
        self, path: Path | str, width: int, height: int, fps: float, crf: int = 20, queue_size: int = 64
    ) -> None:
        import av  # PyAV is only needed by code that writes video

        self.path = Path(path)
        self.container = av.open(
            str(self.path),
            "w",
            format="mp4",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"},
        )
        self.stream = self.container.add_stream("libx264", rate=round(fps))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.gop_size = max(
            1, round(fps)
        )  # one keyframe, hence one fragment, per second
        # zerolatency: no lookahead / B-frames, so packets leave the encoder (and reach the disk) at once.
        self.stream.options = {"preset": "ultrafast", "crf": str(crf), "tune": "zerolatency"}
        self.frames: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"video-{self.path.name}", daemon=True)
        self.thread.start()

    def put(self, frame: np.ndarray) -> None:
        if self.error is not None:
            raise PilotError(f"{self.path}: video encoder failed: {self.error}")
        self.frames.put(frame)

    def _run(self) -> None:
        import av

        try:
            while (frame := self.frames.get()) is not None:
                for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    self.container.mux(packet)
            for packet in self.stream.encode():
                self.container.mux(packet)
        except BaseException as exc:  # noqa: BLE001 - handed to the producer's thread
            self.error = exc
            while self.frames.get() is not None:  # keep the producer from blocking forever
                pass
        finally:
            self.container.close()

    def close(self) -> None:
        self.frames.put(None)
        self.thread.join()
        if self.error is not None:
            raise PilotError(f"{self.path}: video encoder failed: {self.error}")
