"""web/: the static page captions images in headless Chromium with onnxruntime-web (WebAssembly), and its captions are
the Python ONNX runtime's (`clipcap.onnx_runtime`, greedy) for the same batch; without WebAssembly SIMD, or when the
model does not load, the page says so."""

import functools
import os
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clipcap.onnx_runtime import ClipCapONNXCaptioner
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_dataset
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS, free_port

pytestmark = pytest.mark.slow

WEB = ROOT / "web"
ORT_WEB = WEB / "node_modules" / "onnxruntime-web" / "dist"
STATUS_SETTLED = "(s => s.textContent === 'ready' || s.classList.contains('error'))(document.getElementById('status'))"


class QuietHandler(SimpleHTTPRequestHandler):
    def guess_type(self, path):
        # module scripts need a JavaScript type whatever the system's MIME table says; WebAssembly's streaming
        # compilation needs application/wasm
        types = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}
        return types.get(os.path.splitext(path)[1]) or super().guess_type(path)

    def log_message(self, format, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the browser closing a connection early is no failure of the page


@contextmanager
def serve(root):
    """`root` over HTTP on 127.0.0.1 in a thread: its URL."""
    server = QuietServer(("127.0.0.1", free_port()), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(onnx_export_dir, tmp_path_factory):
    """A served folder: `web/` (the page and its node_modules), `model/` (the tiny export), `saved/` (the model it was
    exported from) and `broken/` (the export without its int8 decoder graph)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian/Ubuntu: apt-get install chromium): the browser test needs it")
    if not ORT_WEB.is_dir():
        pytest.skip("onnxruntime-web is not installed in web/node_modules: run npm ci --prefix web")
    root = tmp_path_factory.mktemp("site")
    export = onnx_export_dir / "export"
    (root / "web").symlink_to(WEB, target_is_directory=True)
    (root / "model").symlink_to(export, target_is_directory=True)
    (root / "saved").symlink_to(onnx_export_dir / "model", target_is_directory=True)
    for path in export.rglob("*"):
        if path.is_file() and path.name != "decoder_model_merged_int8.onnx":
            (root / "broken" / path.relative_to(export)).parent.mkdir(parents=True, exist_ok=True)
            (root / "broken" / path.relative_to(export)).symlink_to(path)
    with serve(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def open_page(browser, url, init_script=None):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if init_script:
        page.add_init_script(init_script)
    page.goto(url)
    page.wait_for_function(STATUS_SETTLED, timeout=120_000)
    return page, errors


def test_the_page_captions_as_the_python_runtime(site, browser, onnx_export_dir, tmp_path):
    """Four validation scenes uploaded at once get, in order, the captions `ClipCapONNXCaptioner.generate` gives the
    same batch with the same int8 graphs. The scenes are rendered at the processor's shortest edge, so neither side
    resamples them (the canvas's resampling is not the processor's) and the pixel values are identical."""
    export = onnx_export_dir / "export"
    processor = ClipCapProcessor.from_pretrained(export)
    edge = processor.image_processor.size["shortest_edge"]
    images = [image.convert("RGB") for image in tiny_dataset(size=edge)["validation"]["image"][:4]]
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"scene-{index}.png")
        image.save(paths[-1])
    captioner = ClipCapONNXCaptioner.from_pretrained(export, "int8")
    expected = processor.batch_decode(captioner.generate(processor(images=images)["pixel_values"], num_beams=1))
    # The tiny random model's captions differ between these scenes, so a page that mixed them up would fail.
    assert all(expected) and len(set(expected)) == len(expected), expected

    page, errors = open_page(browser, f"{site}/web/index.html?model=/model/&dtype=int8")
    assert page.inner_text("#status") == "ready", page.inner_text("#status")
    page.set_input_files("#files", [str(path) for path in paths])
    page.wait_for_function(
        f"document.querySelectorAll('#captions .caption').length === 4 && {STATUS_SETTLED}", timeout=120_000
    )
    assert page.inner_text("#status") == "ready", page.inner_text("#status")
    assert page.locator("#captions .name").all_text_contents() == [path.name for path in paths]
    assert page.locator("#captions .caption").all_text_contents() == expected
    assert not errors


def test_without_webassembly_simd_the_page_says_so(site, browser):
    page, errors = open_page(browser, f"{site}/web/index.html?model=/model/", "WebAssembly.validate = () => false;")
    assert "no WebAssembly SIMD, which onnxruntime-web needs" in page.inner_text("#status")
    assert page.is_disabled("#files")
    assert not errors


@pytest.mark.parametrize(
    "query, message",
    [
        ("model=/nowhere/", "nowhere/config.json: HTTP 404"),
        ("model=/model/&dtype=fp16", "has no fp16 graphs (it has fp32,int8)"),
        ("model=/saved/", "is a model, not an export: run export_onnx.py on it"),
        ("model=/broken/&dtype=int8", "decoder_model_merged_int8.onnx: HTTP 404"),
    ],
)
def test_a_model_that_does_not_load_is_reported(site, browser, query, message):
    page, errors = open_page(browser, f"{site}/web/index.html?{query}")
    status = page.inner_text("#status")
    assert status.startswith("Could not load the model") and message in status, status
    assert page.is_disabled("#files")
    assert not errors
