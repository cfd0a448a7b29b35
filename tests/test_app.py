"""app.py: served on 127.0.0.1, in a real browser (headless Chromium driven by Playwright) an uploaded image gets its
captions back on the page, equal to `generate`'s, and a validation scene the checker's verdict."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from clipcap import synthetic
from clipcap.captioning_app import DECODINGS, element_id
from processing_clipcap import ClipCapProcessor
from tests.conftest import ROOT, tiny_dataset
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS, expected_captions, free_port


@pytest.mark.slow
def test_the_app_in_a_real_browser(app_dirs, teacher_checkpoint, tmp_path):
    """app.py serves on 127.0.0.1; headless Chromium uploads an image and reads the three captions back, then picks
    a validation scene and reads the checker's verdict. Set CLIPCAP_APP_MODEL to serve another model directory (its
    own teacher and scenes), and CLIPCAP_APP_SCREENSHOT to keep the screenshot (docs/app.png, shown in docs/app.md)."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian/Ubuntu: apt-get install chromium): the browser test needs it")
    from playwright.sync_api import sync_playwright

    model_dir = os.environ.get("CLIPCAP_APP_MODEL")
    port = free_port()
    if model_dir:  # a run_train.py output: its run_args.json names data and teacher relative to the repository
        argv, cwd, scene_data = [model_dir], ROOT, None
    else:
        model_dir = str(app_dirs / "model")
        argv = [model_dir, "--dataset_dir", str(app_dirs / "data"), "--clip_model", "ClipCap-Test-Teacher"]
        argv += ["--clip_pretrained", str(teacher_checkpoint)]
        scene_data, cwd = tiny_dataset()["validation"], tmp_path
    environment = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "app.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), *argv, "--server_port", str(port)],
        cwd=cwd,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while f"Running on local URL:  {url[:-1]}" not in (tmp_path / "app.log").read_text():
            assert server.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "app.py did not start in 240 s"
            time.sleep(0.5)

        from modeling_clipcap import ClipCapForCaptioning

        model = ClipCapForCaptioning.from_pretrained(Path(cwd, model_dir)).eval()
        processor = ClipCapProcessor.from_pretrained(Path(cwd, model_dir))
        upload = tmp_path / "upload.png"
        if scene_data is not None:
            scene, _ = synthetic.make_example(0, "validation", 5)
            synthetic.render_scene(scene, size=64).save(upload)
        else:
            synthetic.render_scene(synthetic.make_example(0, "validation", 5)[0], size=128).save(upload)
        expected = expected_captions(model, processor, Image.open(upload))

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url, wait_until="domcontentloaded")
            page.set_input_files("#image input[type=file]", str(upload))
            shown = {}
            for decoding in DECODINGS:
                box = f"#{element_id(decoding)} textarea"
                page.wait_for_function(f"document.querySelector('{box}')?.value.length > 0", timeout=120_000)
                shown[decoding] = page.input_value(box)
            assert shown == expected

            # A validation scene: its true description, its captions, and the checker's verdict on each.
            page.click("#scene-picker input")
            page.get_by_role("option").nth(1).click()
            details = f"#{element_id('greedy')}-details"
            done = "(e => e && e.innerText.includes('checker:') && !e.innerText.includes('processing'))"
            for _ in range(2):  # and still so a second later: no other run of the app is under way
                page.wait_for_function(f"{done}(document.querySelector('{details}'))", timeout=120_000)
                page.wait_for_timeout(1000)
            assert "True description:" in page.inner_text("#truth")
            verdict = page.inner_text(details).strip()
            picked_shown = {decoding: page.input_value(f"#{element_id(decoding)} textarea") for decoding in DECODINGS}
            screenshot = tmp_path / "app.png"
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        if scene_data is not None:
            scene = synthetic.Scene.from_json(scene_data[1]["scene"])
            picked = expected_captions(model, processor, scene_data[1]["image"])
            assert picked_shown == picked
            errors = synthetic.caption_errors(picked["greedy"], scene)
            assert verdict.endswith("checker: correct" if not errors else f"checker: wrong ({', '.join(errors)})")
        assert verdict.startswith("CLIP-S ")
        assert screenshot.stat().st_size > 10_000 and Image.open(screenshot).size[0] == 1280
        if os.environ.get("CLIPCAP_APP_SCREENSHOT"):
            Path(os.environ["CLIPCAP_APP_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(screenshot, os.environ["CLIPCAP_APP_SCREENSHOT"])
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
