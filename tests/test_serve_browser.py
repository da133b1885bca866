"""The page at / in a real browser: Debian's chromium, headless, driven by Playwright, its camera a clip this
test writes. Needs `playwright` (the test extra) and a `chromium` on PATH (.ci/run installs it)."""
import shutil

import numpy as np
import pytest


sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the test extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: apt-get install chromium")
WAIT_MS = 60_000  # any one wait in the browser, before the test fails instead of hanging


def write_y4m(path, frames: int = 30, w: int = 96, h: int = 64) -> None:
    """A raw 4:2:0 clip Chromium's fake camera plays in a loop: a bright square moving over grey."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            y = np.full((h, w), 90, np.uint8)
            y[16:48, 2 * i:2 * i + 32] = 230
            f.write(b"FRAME\n" + y.tobytes() + np.full(w * h // 2, 128, np.uint8).tobytes())


@pytest.fixture(scope="module")
def server_port(vae_checkpoint):
    from test_serve_process import start_server, wait_ready

    service, server, runner, port = start_server(vae_checkpoint)
    wait_ready(port)
    yield port
    server.should_exit = True
    runner.join(60)
    service.close()


PIXELS = """() => { const img = document.getElementById('sample'); const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  return Array.from(g.getImageData(0, 0, c.width, c.height).data); }"""


def test_page_explorer_and_webcam_filter_in_chromium(server_port, tmp_path):
    clip = tmp_path / "clip.y4m"
    write_y4m(clip)
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}"])
        page = browser.new_page()
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(f"http://127.0.0.1:{server_port}/")
        page.wait_for_function("document.getElementById('sample').naturalWidth > 0", timeout=WAIT_MS)
        before = page.evaluate(PIXELS)
        first_src = page.get_attribute("#sample", "src")
        page.eval_on_selector("#sliders input[name=smile]",
                              "s => { s.value = 3; s.dispatchEvent(new Event('input')); }")
        page.wait_for_function(f"document.getElementById('sample').src !== {first_src!r} && "
                               "document.getElementById('sample').complete", timeout=WAIT_MS)
        after = page.evaluate(PIXELS)
        assert len(before) == len(after) == 32 * 32 * 4 and before != after

        page.click("#start")
        page.wait_for_function("Number(document.getElementById('filtered').dataset.frames || 0) >= 3",
                               timeout=WAIT_MS)
        start = page.evaluate("[performance.now(), Number(document.getElementById('filtered').dataset.frames)]")
        page.wait_for_function(f"Number(document.getElementById('filtered').dataset.frames) >= {start[1] + 10}",
                               timeout=WAIT_MS)
        end = page.evaluate("[performance.now(), Number(document.getElementById('filtered').dataset.frames)]")
        rate = (end[1] - start[1]) / (end[0] - start[0]) * 1000
        print(f"webcam filter in chromium: {rate:.1f} filtered frames/s")
        camera = page.evaluate("""() => { const v = document.getElementById('camera'); const c = document.createElement('canvas');
          c.width = v.videoWidth; c.height = v.videoHeight; const g = c.getContext('2d'); g.drawImage(v, 0, 0);
          return Math.max(...g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0)); }""")
        assert camera >= 200  # the clip's bright square reaches the page: frames sent are not black
        size = page.evaluate("[document.getElementById('filtered').width, document.getElementById('filtered').height]")
        assert size == [96, 64]  # the camera's frame size comes back
        page.wait_for_function("document.getElementById('stats').textContent.startsWith('fps ')", timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert (tmp_path / "page.png").stat().st_size > 0
    assert problems == []
