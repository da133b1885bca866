"""Draws docs/serve_page.png: the page of `latentforge serve` in headless chromium, serving the shipped faces
VAE, the explorer's eyes_open slider moved, and the webcam filter running on a fake camera that
plays faces the model itself draws.

    python docs/make_serve_page.py [--out docs/serve_page.png]      # needs playwright and Debian's chromium
"""
from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from latentforge import load
from latentforge.demo import SHIPPED
from latentforge.runtime.server import Service, build_server


def write_y4m(path: Path, frames: np.ndarray, size: int = 192) -> None:
    """uint8 RGB frames -> a 4:2:0 full-range (C420jpeg) clip, each frame enlarged to size x size."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{size} H{size} F30:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            rgb = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR), np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            planes = [y, 128 - 0.168736 * r - 0.331264 * g + 0.5 * b, 128 + 0.5 * r - 0.418688 * g - 0.081312 * b]
            planes[1:] = [p.reshape(size // 2, 2, size // 2, 2).mean(axis=(1, 3)) for p in planes[1:]]
            f.write(b"FRAME\n" + b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes))


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="docs/serve_page.png")
    args = parser.parse_args()
    model = load(SHIPPED)
    service = Service({"faces_vae": model})
    service.warm_up()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = build_server(service, port=port, log_level="warning")
    runner = threading.Thread(target=server.run)
    runner.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            clip = Path(tmp) / "faces.y4m"
            write_y4m(clip, np.repeat(model.sample(4, seed=3, temperature=0.7), 60, axis=0))
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}"])
            page = browser.new_page(viewport={"width": 1120, "height": 740})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('sample').naturalWidth > 0")
            for selector, value in (("#sliders input[name=eyes_open]", 1.5),
                                    ("#filter_sliders input[name=eyes_open]", 2)):
                page.eval_on_selector(selector, f"s => {{ s.value = {value}; s.dispatchEvent(new Event('input')); }}")
            page.click("#start")
            page.wait_for_function("Number(document.getElementById('filtered').dataset.frames || 0) >= 30")
            page.wait_for_function("document.getElementById('stats').textContent.startsWith('fps ')")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.should_exit = True
        runner.join()
        service.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
