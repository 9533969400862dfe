"""Frames as they are sent to the VLM: encoded bytes, a base64 data URL, and the hash used in cache keys.

A frame is either a numpy image as OpenCV gives it (uint8, HxW gray, HxWx3 BGR or HxWx4 BGRA) or bytes of an
already encoded PNG/JPEG. Arrays are encoded here (JPEG by default, which keeps a 1280x720 frame near 100 kB
instead of ~1 MB as PNG) and optionally shrunk so their longer side is at most `max_side`; encoded bytes are
sent untouched. The cache key hashes the bytes actually sent, so changing the format, quality or size asks
the model again.

OpenCV and numpy are imported inside the functions so that `import vlm_labeling` stays light.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from vlm_labeling.errors import RequestError

ImageFormat = Literal["jpeg", "png"]
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True, repr=False)
class EncodedImage:
    """Encoded image bytes plus the factor its pixels were scaled by (1.0 when sent as given)."""

    data: bytes
    mime: str  # "image/jpeg" or "image/png"
    scale: float = 1.0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:  # the default repr would dump the whole image
        return f"EncodedImage({self.mime}, {len(self.data)} bytes, scale={self.scale:g})"


def is_image(image: Any) -> bool:
    """True for the two accepted frame types: encoded bytes or an object with a numpy-style `shape`."""
    return isinstance(image, bytes | bytearray | memoryview) or hasattr(image, "shape")


def encode_image(
    image: Any, fmt: ImageFormat = "jpeg", jpeg_quality: int = 85, max_side: int | None = None
) -> EncodedImage:
    """Encode one frame (see the module docstring for what a frame may be)."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        return EncodedImage(data=data, mime=sniff_mime(data))
    if not hasattr(image, "shape"):
        raise RequestError(f"a frame must be a numpy image or PNG/JPEG bytes, got {type(image).__name__}")
    return _encode_array(image, fmt, jpeg_quality, max_side)


def sniff_mime(data: bytes) -> str:
    """The MIME type of PNG or JPEG bytes, from their magic number."""
    if data.startswith(_PNG_MAGIC):
        return "image/png"
    if data.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    raise RequestError(f"frame bytes are neither PNG nor JPEG (first bytes {data[:8]!r})")


def _encode_array(image: Any, fmt: ImageFormat, jpeg_quality: int, max_side: int | None) -> EncodedImage:
    import cv2
    import numpy as np

    array = np.asarray(image)
    _check_array(array)
    scale = 1.0
    if max_side is not None and max(array.shape[:2]) > max_side:
        scale = max_side / max(array.shape[:2])
        size = (max(1, round(array.shape[1] * scale)), max(1, round(array.shape[0] * scale)))
        array = cv2.resize(
            array, size, interpolation=cv2.INTER_AREA
        )  # INTER_AREA: no aliasing when shrinking
    if fmt == "jpeg":
        if array.ndim == 3 and array.shape[2] == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)  # JPEG has no alpha
        ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        mime = "image/jpeg"
    else:
        ok, buf = cv2.imencode(".png", array)
        mime = "image/png"
    if not ok:
        raise RequestError(f"OpenCV could not encode a {array.shape} {array.dtype} frame as {fmt}")
    return EncodedImage(data=buf.tobytes(), mime=mime, scale=scale)


def _check_array(array: Any) -> None:
    if array.dtype.name != "uint8":
        raise RequestError(f"a frame array must be uint8, got {array.dtype}")
    channels_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not channels_ok or min(array.shape[:2]) < 1:
        raise RequestError(f"a frame array must be HxW, HxWx3 (BGR) or HxWx4 (BGRA), got shape {array.shape}")
