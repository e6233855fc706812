"""The page in a real browser (Debian's headless Chromium driven by Playwright): upload a prompt, press Play,
audio frames reach the AudioWorklet, and Download saves a valid WAV; a screenshot is kept on failure."""

import shutil

import pytest
import soundfile

from conftest import RATE, audio_file
from study.serve.command import background_server

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_page_streams_into_the_worklet_and_downloads_a_wav(service, tmp_path):
    from playwright.sync_api import sync_playwright

    prompt = tmp_path / "prompt.flac"
    prompt.write_bytes(audio_file(0.5, 44100, 2, "FLAC"))
    with background_server(service) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.includes('Hz')")
            page.set_input_files("#file", str(prompt))
            page.fill("#prompt_seconds", "0.4")
            page.fill("#seconds", "1.5")
            page.click("#play")
            page.wait_for_function("window.studyServe.framesInWorklet > 0", timeout=20000)
            page.wait_for_function("window.studyServe.ended", timeout=30000)
            # every continuation sample reaches the worklet (its reports arrive after the end message)
            page.wait_for_function(f"window.studyServe.samplesInWorklet === {round(1.5 * RATE)}", timeout=10000)
            frames = page.evaluate("window.studyServe.framesInWorklet")
            assert frames >= 2
            assert int(page.get_attribute("#frames", "data-count")) == frames
            with page.expect_download() as download:
                page.click("#downloads a >> nth=0")
            saved = tmp_path / "downloaded.wav"
            download.value.save_as(saved)
            audio, rate = soundfile.read(str(saved), dtype="float32")
            assert rate == RATE and len(audio) == round(0.4 * RATE) + round(1.5 * RATE)
            assert not errors, errors
        except BaseException:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
