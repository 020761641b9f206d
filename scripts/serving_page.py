"""docs/serving_page.png: the web page captioning a real photo, as a user sees it.

    python -m scripts.serving_page --model path/to/models \\
        --image path/to/flickr8k/Flicker8k_Dataset/1287073593_f3d2a62455.jpg \\
        --out docs/serving_page.png

docs/serving_page.png was made so, from the models/ of the flickr8k profile's run (`make flickr8k`).
It does what a user does: starts `captioning serve --model MODEL --port 8765` on 127.0.0.1 (a subprocess,
the real command), waits for GET /health, opens the page in Debian's headless Chromium through
selenium and chromium-driver (`make system-deps`; as tests/test_web_page.py drives it), uploads the
photo with the page's file input, waits for the caption, takes the screenshot, and stops the
server. It prints the caption, the model line and the latency the page shows (after one warm-up
request: a running server has compiled its decoder already).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")


def wait_for(condition, deadline_s: float, what: str):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.2)  # polling a server or page, bounded by the deadline
    raise TimeoutError(f"no {what} after {deadline_s:g} s")


def start_server(model: str, port: int, log) -> subprocess.Popen:
    """`captioning serve` on 127.0.0.1:port. A model directory is served from its parent by its own
    name (the page then says "models", not this machine's path); a models:/ URI as it is."""
    cwd = None
    if not model.startswith("models:/"):
        cwd, model = Path(model).resolve().parent, Path(model).name
    proc = subprocess.Popen([sys.executable, "-m", "captioning", "serve", "--model", model, "--host", "127.0.0.1",
                             "--port", str(port)], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

    def healthy():
        if proc.poll() is not None:
            raise RuntimeError(f"captioning serve exited with {proc.returncode}:\n{Path(log.name).read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 600, "answer from GET /health")  # start-up compiles every batch shape
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    return proc


def screenshot(url: str, image: Path, out: Path, profile: Path, size: tuple[int, int]) -> dict[str, str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
                 f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
        wait_for(lambda: "·" in text("model"), 60, "model information on the page")
        driver.find_element(By.ID, "file").send_keys(str(image.resolve()))
        wait_for(lambda: driver.find_element(By.ID, "caption").get_attribute("data-state") == "done" or text("error"),
                 120, "caption")
        if text("error"):
            raise RuntimeError(f"the page says: {text('error')}")
        time.sleep(0.5)  # the attention canvases are drawn right after the caption
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        # Down to the page's end (the window is taller than a short page), in device pixels.
        bottom = driver.execute_script("return Math.ceil((document.querySelector('footer').getBoundingClientRect()"
                                       ".bottom + 24) * devicePixelRatio)")
        with Image.open(out) as shot:
            if bottom < shot.height:
                shot.crop((0, 0, shot.width, bottom)).save(out)
        return {"caption": text("caption"), "about": text("about"), "model": text("model"), "meta": text("meta")}
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models")
    parser.add_argument("--image", type=Path, required=True, help="the photo to upload")
    parser.add_argument("--out", type=Path, default=Path("docs/serving_page.png"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--size", default="840x1180", help="browser window, WIDTHxHEIGHT (default 840x1180)")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists() or not shutil.which("chromedriver"):
        sys.exit("serving_page: needs Debian's chromium and chromium-driver (make system-deps, as root)")
    if not args.image.is_file():
        sys.exit(f"serving_page: {args.image}: no such file")
    width, height = (int(n) for n in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "serve.log", "w")
        server = start_server(args.model, args.port, log)
        try:
            # One request first, as a server that has been up a while has had: the first caption of a
            # batch size compiles the decoder, and the page would show that one-off wait as latency.
            request = urllib.request.Request(f"http://127.0.0.1:{args.port}/caption?attention=true",
                                             data=args.image.read_bytes(), headers={"Content-Type": "image/jpeg"})
            urllib.request.urlopen(request, timeout=300).read()
            shown = screenshot(f"http://127.0.0.1:{args.port}/", args.image, args.out, Path(tmp) / "profile",
                               (width, height))
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    for key, value in shown.items():
        print(f"{key}: {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
