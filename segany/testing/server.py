"""The annotation app running in this process, and headless Chromium to drive its page (tests, benchmarks)."""

import socket
import threading
import time
from pathlib import Path

from ..server import build_services, create_app

CHROMIUM = "/usr/bin/chromium"  # Debian's package
# Flags for a machine without a network: no background connections, no GPU, no sandbox (root).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """uvicorn serving the app on a free local port in a background thread."""

    def __init__(self, services, port: int) -> None:
        import uvicorn

        self.services = services
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the annotation server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.services.embeddings.close()


def start_server(images: Path, db: str, cache: Path, model: str = "default", **settings) -> RunningServer:
    """The app over `images`; prefill thresholds default to 0 so that any model's masks pass."""
    options = dict(prefill_points_per_side=4, prefill_iou_thresh=0.0, prefill_stability_thresh=0.0)
    options.update(settings)
    return RunningServer(build_services(images, db, model, cache, **options), free_port())


# Driving the page (Playwright): what the browser tests and the wheel check share.

def wait_ready(page) -> None:
    """Until the page has loaded its model and the image."""
    page.wait_for_selector("body[data-status=ready]", timeout=120_000)


def to_screen(page, x: float, y: float):
    """Page coordinates of image pixel (x, y) at the current zoom."""
    return page.evaluate("""([x, y]) => {
        const rect = document.getElementById('view').getBoundingClientRect();
        const z = window.segany.zoom;
        return [rect.left + z.x + x * z.scale, rect.top + z.y + y * z.scale];
    }""", [x, y])


def click_image(page, x: float, y: float, button: str = "left") -> None:
    """A click on image pixel (x, y) (left: a foreground point); returns once it is decoded."""
    decodes = int(page.evaluate("document.body.dataset.decodes || 0"))
    page.mouse.click(*to_screen(page, x, y), button=button)
    page.wait_for_function(f"Number(document.body.dataset.decodes) > {decodes} && !window.segany.decoding",
                           timeout=30_000)


def draw_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """The box tool dragged from image pixel (x0, y0) to (x1, y1); returns once it is decoded."""
    page.keyboard.press("x")
    decodes = int(page.evaluate("document.body.dataset.decodes || 0"))
    page.mouse.move(*to_screen(page, x0, y0))
    page.mouse.down()
    page.mouse.move(*to_screen(page, x1, y1), steps=5)
    page.mouse.up()
    page.wait_for_function(f"Number(document.body.dataset.decodes) > {decodes} && !window.segany.decoding")
