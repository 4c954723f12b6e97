"""The live viewer in a real browser: `ns-viewer` on a trained run, headless Chromium driven over the DevTools protocol.

The test picks `instance` in the real "Output type" dropdown, checks the screenshot shows several instance colours,
picks an instance with the "Pick instance" button and a click in the scene, exports it (a folder typed outside the run
directory is refused, one inside is written), then isolates, hides and shows it again; last it chooses an instance in
the "Instances" list, merges another into it by a click and undoes the merge.
WebGL runs in headless Chromium with SwiftShader, so the screenshot is what a user sees.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from unic_lift_ns.instance_codes import embedding_to_label, label_palette

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,800",
]  # fmt: skip
TOLERANCE = 3
"""Largest per-channel difference (0-255) between a screenshot pixel and a palette colour it counts as (PNG frames
arrive within 1 of the palette)."""
MIN_AREA = 0.005
"""A colour is visible when it covers at least this fraction of the scene canvas."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium (`make setup` installs it)"),
]


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """Terminate a child process, killing it if it has not exited after 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Browser:
    """Headless Chromium and one page, driven with Chrome DevTools Protocol commands over a websocket."""

    def __init__(self, profile: Path) -> None:
        self.process = subprocess.Popen(
            [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        port_file = profile / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 60, "Chromium's DevTools port")
        port = port_file.read_text().split()[0]
        pages = wait_for(lambda: self._pages(port), 30, "a Chromium page")
        self._stack = contextlib.ExitStack()
        url = pages[0]["webSocketDebuggerUrl"]
        self.socket: ClientConnection = self._stack.enter_context(connect(url, max_size=None))
        self._ids = itertools.count(1)

    @staticmethod
    def _pages(port: str) -> List[Dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                return [page for page in json.load(response) if page["type"] == "page"]
        except OSError:
            return []

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        command_id = next(self._ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == command_id:
                assert "error" not in message, message
                return message["result"]

    def js(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON) value."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (pointer down and up)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> np.ndarray:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def close(self) -> None:
        self._stack.close()
        stop(self.process)


# Centre of the first visible element whose own text is `text`, scrolled into view; null when there is none.
FIND_TEXT = """(() => {{
  const hit = Array.from(document.querySelectorAll('{selector}')).find(
    e => e.textContent.trim() === {text} && e.getBoundingClientRect().width > 0);
  if (!hit) return null;
  hit.scrollIntoView({{block: 'center'}});
  const r = hit.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
}})()"""
# Value and centre of the input next to the GUI label `label` (viser lays out label and input in one row).
INPUT_BY_LABEL = """(() => {{
  let row = Array.from(document.querySelectorAll('*')).find(
    e => e.childElementCount === 0 && e.textContent.trim() === {label});
  while (row && !row.querySelector('input')) row = row.parentElement;
  if (!row) return null;
  const input = row.querySelector('input');
  input.scrollIntoView({{block: 'center'}});
  const r = input.getBoundingClientRect();
  return {{value: input.value, x: r.x + r.width / 2, y: r.y + r.height / 2}};
}})()"""
# Centre of the first dropdown option whose text starts with `start`, scrolled into view; null when there is none.
OPTION_STARTING = """(() => {{
  const hit = Array.from(document.querySelectorAll('[role=option]')).find(
    e => e.textContent.trim().startsWith({start}) && e.getBoundingClientRect().width > 0);
  if (!hit) return null;
  hit.scrollIntoView({{block: 'center'}});
  const r = hit.getBoundingClientRect();
  return [r.x + r.width / 2, r.y + r.height / 2];
}})()"""
CANVAS_BOX = """(() => {
  const r = document.querySelector('canvas').getBoundingClientRect();
  return [r.x, r.y, r.width, r.height];
})()"""


def find_text(browser: Browser, text: str, selector: str = "*") -> Optional[Tuple[float, float]]:
    return browser.js(FIND_TEXT.format(selector=selector, text=json.dumps(text)))


def gui_input(browser: Browser, label: str) -> Optional[Dict[str, Any]]:
    return browser.js(INPUT_BY_LABEL.format(label=json.dumps(label)))


def type_into(browser: Browser, label: str, text: str) -> None:
    """Replace the text of the GUI input labelled ``label``: a real click on it, select all, then typed ``text``."""
    field = gui_input(browser, label)
    assert field is not None, label
    browser.click(field["x"], field["y"])
    browser.js("document.activeElement.select()")
    browser.call("Input.insertText", text=text)
    wait_for(lambda: gui_input(browser, label)["value"] == text, 30, f"{label!r} to show {text!r}")


def palette_regions(image: np.ndarray, palette: Dict[int, np.ndarray]) -> Dict[int, np.ndarray]:
    """Label -> boolean mask of the pixels whose nearest palette colour is that label's (within ``TOLERANCE``),
    for the labels covering at least ``MIN_AREA`` of the image. Nearest, because some labels' colours are close."""
    colours, inverse = np.unique(image.reshape(-1, 3), axis=0, return_inverse=True)
    labels = np.array(list(palette))
    distance = np.abs(colours[:, None].astype(np.int16) - np.stack(list(palette.values()))[None]).max(axis=-1)
    nearest = np.where(distance.min(axis=1) <= TOLERANCE, labels[distance.argmin(axis=1)], -1)[inverse.reshape(-1)]
    regions = {}
    for label in np.unique(nearest[nearest >= 0]).tolist():
        mask = (nearest == label).reshape(image.shape[:2])
        if mask.mean() >= MIN_AREA:
            regions[label] = mask
    return regions


def interior_point(mask: np.ndarray, margin: int = 6) -> Tuple[int, int]:
    """(row, col) of a pixel of ``mask`` whose whole (2 margin + 1)^2 neighbourhood is in ``mask``."""
    inner = torch.nn.functional.max_pool2d((~torch.from_numpy(mask)).float()[None, None], 2 * margin + 1, 1, margin)
    rows, cols = np.nonzero(inner[0, 0].numpy() == 0)
    assert len(rows), "no interior pixel"
    middle = len(rows) // 2
    return int(rows[middle]), int(cols[middle])


@pytest.fixture(scope="module")
def viewer_run(trained_run: Path, tmp_path_factory) -> Path:
    """A copy of the trained run: the viewer writes corrections and exports into it, which other tests must not
    see."""
    config = yaml.load((trained_run / "config.yml").read_text(), Loader=yaml.Loader)
    config.output_dir = tmp_path_factory.mktemp("viewer")
    run = Path(shutil.copytree(trained_run, config.get_base_dir()))
    (run / "config.yml").write_text(yaml.dump(config))  # ns-viewer's run directory is the config's base dir
    return run


@pytest.fixture(scope="module")
def viewer_url(viewer_run: Path) -> Iterator[str]:
    """`ns-viewer` on a copy of the trained run (PNG frames, so colours arrive exactly), stopped after the module."""
    port = free_port()
    log = (viewer_run / "ns_viewer_test.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(viewer_run / "config.yml"),
         "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
         "--viewer.image-format", "png"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: process.poll() is not None or http_ok(url), 300, "ns-viewer to serve the page")
        assert process.poll() is None, (viewer_run / "ns_viewer_test.log").read_text()[-3000:]
        yield url
    finally:
        stop(process)
        log.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # Chromium may still be writing
        chromium = Browser(Path(profile))
        try:
            yield chromium
        finally:
            chromium.close()


def gaussian_palette(run_dir: Path) -> Dict[int, np.ndarray]:
    """Label -> 0-255 palette colour for every label the trained Gaussians decode to, and for 0: empty background
    renders a zero embedding, which decodes to label 0."""
    checkpoint = next((run_dir / "nerfstudio_models").glob("*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    labels = embedding_to_label(state["_model.gauss_params.embeddings"])
    labels = torch.cat([torch.zeros(1, dtype=torch.long), labels]).unique()
    colours = (label_palette(labels) * 255).round().to(torch.int16).numpy()
    return dict(zip(labels.tolist(), colours))


def test_instances_in_the_live_viewer(viewer_run: Path, viewer_url: str, browser: Browser, tmp_path: Path):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=viewer_url)
    first_frame = "document.body.innerText.includes('Resolution:') && !document.body.innerText.includes('0x0px')"
    wait_for(lambda: browser.js(first_frame), 180, "the first rendered frame (it fills the output list)")
    dropdown = gui_input(browser, "Output type")
    canvas_x, canvas_y, canvas_w, canvas_h = browser.js(CANVAS_BOX)

    def scene() -> np.ndarray:
        """The scene part of a screenshot: the canvas left of the control panel, which floats over it."""
        panel_x = find_text(browser, "Output type")[0] - 100  # type: ignore[index]  # the panel's labels are inset
        return browser.screenshot()[int(canvas_y) : int(canvas_y + canvas_h), int(canvas_x) : int(panel_x)]

    # The real dropdown: open it, then click the `instance` option.
    browser.click(dropdown["x"], dropdown["y"])
    option = wait_for(lambda: find_text(browser, "instance", "[role=option]"), 30, "the instance option")
    browser.click(*option)
    wait_for(lambda: gui_input(browser, "Output type")["value"] == "instance", 30, "the dropdown to show instance")

    palette = gaussian_palette(viewer_run)

    def several_instances() -> Optional[Dict[int, np.ndarray]]:
        found = {label: mask for label, mask in palette_regions(scene(), palette).items() if label != 0}
        return found if len(found) >= 3 else None

    regions = wait_for(several_instances, 180, "three instance colours in the viewer")
    shot = tmp_path / "viewer_instance.png"
    image = scene()
    Image.fromarray(image).save(shot)
    print(f"{len(regions)} distinct instance colours visible: labels {sorted(regions)}; screenshot {shot}")

    # Pick: the button arms one click; clicking inside the largest instance region selects its label.
    largest = max(regions, key=lambda label: regions[label].sum())
    row, col = interior_point(regions[largest])
    browser.click(*find_text(browser, "Pick instance", "button"))  # type: ignore[misc]
    wait_for(lambda: "click on an instance" in gui_input(browser, "Selected")["value"], 30, "the pick to be armed")
    browser.click(canvas_x + col + 0.5, canvas_y + row + 0.5)
    wait_for(lambda: gui_input(browser, "Selected")["value"].startswith("label"), 120, "the picked label")
    selected = gui_input(browser, "Selected")["value"]
    label = int(selected.split()[1].rstrip(":"))
    print(f"picked {selected!r} where the screenshot shows label {largest}")
    assert label == largest
    assert gui_input(browser, "Instance decoding")["value"] == "gaussian-votes"  # the run's config

    # Export: the folder is typed by a client, so it is confined to the run directory.
    def exported() -> str:
        return gui_input(browser, "Exported to")["value"]

    type_into(browser, "Export folder", "../escape")
    browser.click(*find_text(browser, "Export selected", "button"))  # type: ignore[misc]
    wait_for(lambda: exported().startswith("refused:"), 60, "the export to be refused")
    assert "'..'" in exported() and not (viewer_run.parent / "escape").exists()
    type_into(browser, "Export folder", "viewer_exports")
    browser.click(*find_text(browser, "Export selected", "button"))  # type: ignore[misc]
    written = viewer_run.resolve() / "viewer_exports" / f"instance_{label}.ply"
    wait_for(lambda: exported() == str(written), 60, "the export inside the run directory")
    assert written.stat().st_size > 0

    # Isolate draws only the picked instance's Gaussians (and empty background, label 0), Hide everything but
    # them, Show all everything again.
    browser.click(*find_text(browser, "Isolate", "button"))  # type: ignore[misc]
    wait_for(lambda: set(palette_regions(scene(), palette)) - {0} == {label}, 180, "only the picked instance")
    browser.click(*find_text(browser, "Hide", "button"))  # type: ignore[misc]

    def area(regions_now: Dict[int, np.ndarray]) -> float:
        return float(regions_now[label].mean()) if label in regions_now else 0.0

    # Pixels decode the Gaussians' votes (the fixture's decoding): without its Gaussians the label all but vanishes.
    wait_for(lambda: area(palette_regions(scene(), palette)) < 0.2 * area(regions), 180, "the picked one hidden")
    browser.click(*find_text(browser, "Show all", "button"))  # type: ignore[misc]
    wait_for(several_instances, 180, "every instance again")
    assert gui_input(browser, "Selected")["value"] == "none"

    # Corrections: choose the largest instance in the real instance list, merge the second largest into it by a
    # click in the scene, then undo; the screenshot follows each step and the run directory keeps the file.
    regions = wait_for(several_instances, 180, "every instance again")
    first, second = sorted(regions, key=lambda label: -regions[label].sum())[:2]
    browser.click(*(lambda f: (f["x"], f["y"]))(gui_input(browser, "Instances")))  # type: ignore[misc]
    option = wait_for(lambda: browser.js(OPTION_STARTING.format(start=json.dumps(f"{first}: "))), 30, "the entry")
    browser.click(*option)
    wait_for(lambda: gui_input(browser, "Selected")["value"].startswith(f"label {first}:"), 60, "the chosen instance")
    browser.click(*find_text(browser, "Merge with a clicked one", "button"))  # type: ignore[misc]
    wait_for(lambda: gui_input(browser, "Corrections")["value"].startswith("click"), 30, "the merge to be armed")
    row, col = interior_point(regions[second])
    started = time.monotonic()
    browser.click(canvas_x + col + 0.5, canvas_y + row + 0.5)

    def merged() -> bool:
        now = palette_regions(scene(), palette)
        return second not in now and first in now and now[first].sum() > regions[first].sum()

    wait_for(merged, 180, "the second instance to take the first one's colour")
    print(f"merge visible {time.monotonic() - started:.2f} s after the click (screenshots polled every 0.5 s)")
    Image.fromarray(scene()).save(tmp_path / "viewer_merged.png")
    saved = json.loads((viewer_run / "instance_corrections.json").read_text())["operations"]
    assert saved == [{"op": "merge", "label": second, "into": first}]
    assert gui_input(browser, "Corrections")["value"] == f"1: merge {second} into {first}"
    browser.click(*find_text(browser, "Undo correction", "button"))  # type: ignore[misc]
    wait_for(lambda: second in palette_regions(scene(), palette), 180, "the second instance back after undo")
    assert json.loads((viewer_run / "instance_corrections.json").read_text())["operations"] == []
