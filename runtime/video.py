"""Frame sources and sinks for the filter: a video file or camera through PyAV, or a folder of images.

Sources yield uint8 [H, W, 3] frames. Sinks take them and, on close (also after an interrupt or an
error), leave a valid file: a video is flushed and its container trailer written, so it plays up
to the last frame written; a folder gets one PNG per frame, each written atomically.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from latentforge.errors import InputError
from latentforge.files import check_output_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}
CAMERA = "camera:"


def import_av():
    try:
        import av
    except ImportError:
        raise InputError('video input and output need PyAV; pip install "latentforge[video]" '
                         "(or use a folder of images)") from None
    return av


class Source:
    """An iterable of frames with what the sink needs: frame rate, whether it is live, a count if known."""

    def __init__(self, frames, fps: float, live: bool, count: int | None, close=lambda: None) -> None:
        self.frames, self.fps, self.live, self.count, self.close = frames, fps, live, count, close

    def __iter__(self):
        return iter(self.frames)


def open_source(spec: str) -> Source:
    """`camera:N`, a folder of images, or a video file."""
    if spec.startswith(CAMERA):
        return _camera(spec)
    path = Path(spec)
    if path.is_dir():
        return _folder(path)
    if not path.is_file():
        raise InputError(f"input {spec!r} does not exist; give a video file, a folder of images or camera:N")
    return _video(path, spec)


def _folder(path: Path) -> Source:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"input folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def frames():
        from latentforge.images import read_rgb

        for f in files:
            yield np.asarray(read_rgb(f, formats=IMAGE_FORMATS))

    return Source(frames(), 30.0, False, len(files))


def _open_container(av, where: str, label: str, **options):
    try:
        container = av.open(where, **options)
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:  # metadata that is not UTF-8
        raise InputError(f"cannot read {label} ({e}); give a readable video file, folder or camera:N") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{label} has no video stream")
    return container


def _decode(av, container, label: str):
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise InputError(f"{label} broke off while decoding ({e}); the frames before it were processed") from None
    finally:
        container.close()


def _video(path: Path, spec: str) -> Source:
    av = import_av()
    container = _open_container(av, str(path), repr(spec))
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 30)
    return Source(_decode(av, container, repr(spec)), fps, False, stream.frames or None, container.close)


def _camera(spec: str) -> Source:
    index = spec[len(CAMERA):]
    if not index.isdigit():
        raise InputError(f"camera input is camera:N with N a device number, e.g. camera:0, got {spec!r}")
    av = import_av()
    if sys.platform == "darwin":
        where, options = index, {"format": "avfoundation"}
    elif sys.platform == "win32":
        where, options = f"video={index}", {"format": "dshow"}
    else:
        where, options = f"/dev/video{index}", {"format": "v4l2"}
    container = _open_container(av, where, f"camera {index} ({where})", **options)
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 30)
    return Source(_decode(av, container, f"camera {index}"), fps, True, None, container.close)


class VideoSink:
    """Frames to a video file, the stream opened on the first frame (its size is the video's)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.av = import_av()
        self.path = path
        self.codec = VIDEO_CODECS[path.suffix.lower()]
        self.fps = fps
        self.written = 0
        self._container = None
        self._stream = None

    def write(self, frame: np.ndarray) -> None:
        av = self.av
        if self._stream is None:
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                raise InputError(f"video output needs an even width and height (yuv420p), got {w}x{h}; "
                                 "write to a folder of images instead")
            try:
                self._container = av.open(str(self.path), "w")
            except (av.error.FFmpegError, OSError) as e:
                raise InputError(f"cannot write {str(self.path)!r} ({e}); choose another output") from None
            from fractions import Fraction

            self._stream = self._container.add_stream(self.codec, rate=Fraction(self.fps).limit_denominator(1001))
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, "yuv420p"
        if frame.shape[:2] != (self._stream.height, self._stream.width):
            raise InputError(f"frames change size mid-stream ({self._stream.width}x{self._stream.height}, then "
                             f"{frame.shape[1]}x{frame.shape[0]}); a video has one size: write to a folder instead")
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.written += 1

    def close(self) -> None:
        """Flush the encoder and write the trailer: the file plays up to the last frame written."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None


class FolderSink:
    """One PNG per frame, frame_000000.png onwards, each written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0

    def write(self, frame: np.ndarray) -> None:
        from latentforge.images import save_png

        if self.written == 0:
            self.path.mkdir(exist_ok=True)
        save_png(frame, self.path / f"frame_{self.written:06d}.png")
        self.written += 1

    def close(self) -> None:
        pass


def open_sink(spec: str, fps: float):
    """A video file (by suffix) or a folder (any path without a video suffix)."""
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in VIDEO_CODECS:
        return VideoSink(check_output_path(path), fps)
    if suffix in IMAGE_SUFFIXES or (suffix and not path.is_dir()):
        raise InputError(f"output {spec!r} must be a video ({', '.join(VIDEO_CODECS)}) or a folder for images")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"cannot write the output folder {spec!r}: its parent is missing or not writable")
    if path.exists() and not path.is_dir():
        raise InputError(f"output {spec!r} is a file; give a folder or a video path")
    return FolderSink(path)
