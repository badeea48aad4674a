"""The browser demo: its actions directly (genlab.demo), through Gradio's API (gradio_client) against a server
started here on 127.0.0.1, and in a real headless Chromium that clicks Generate."""

import shutil
import socket
import time

import numpy as np
import pytest

from genlab.demo import Demo, to_rgb_grid
from genlab.errors import ConfigError, RunError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo(run_dir):
    return Demo([run_dir])


def test_generate_counts_network_evaluations(demo, run_dir):
    grid, info = demo.generate(str(run_dir), "ddim", 5, seed=3, n=4)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    assert "4 samples, ddim, 5 steps: 5 network evaluations each" in info
    again, _ = demo.generate(str(run_dir), "ddim", 5, seed=3, n=4)
    assert np.array_equal(grid, again)  # the seed fixes the images


def test_denoising_path_ends_at_the_sample(demo, run_dir):
    from genlab import RunDir

    grid, info = demo.denoising_path(str(run_dir), "ddim", 6, seed=1, every=1, n=2)
    cfg, family, _, _ = RunDir(run_dir).load()
    x = family.sample(2, seed=1, sampler="ddim", steps=6)
    s, pad, size = 8, 2, 8  # 8x8 digits are shown 8x, 2 pixels apart
    cols = (grid.shape[1] // s - pad) // (size + pad)
    assert cols == 6 and grid.shape[0] // s == pad + 4 * (size + pad)  # 6 steps; x_t and x_0 rows for 2 samples
    one = to_rgb_grid(x[:1], cfg.data.levels)[pad * s:(pad + size) * s, pad * s:(pad + size) * s]
    x0 = (pad + (cols - 1) * (size + pad)) * s
    assert np.array_equal(grid[pad * s:(pad + size) * s, x0:x0 + size * s], one)  # the last x_t is the sample
    assert "t = " in info and info.endswith(", 0")


def test_compare_at_equal_nfe_from_the_same_noise(demo, run_dir):
    shown = demo.compare(str(run_dir), ["ddim", "heun", "ancestral"], nfe=6, seed=0, n=2)
    nfes = [int(caption.split(" NFE")[0].split()[-1]) for _, caption in shown]
    assert all(v <= 6 for v in nfes) and nfes[0] == 6 and nfes[1] == 5  # heun: 2 per step but the last


def test_inpaint_keeps_the_known_pixels(demo, run_dir):
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True  # generate the right half
    grid, info = demo.inpaint(str(run_dir), None, mask, index=2, seed=0, steps=5, n=1, resample=1)
    assert "5 network evaluations per completion" in info
    assert grid.shape[1] > grid.shape[0]  # input, mask, masked input, completion in one row


def test_mistakes_are_one_sentence(demo, run_dir, tmp_path):
    label = str(run_dir)
    for call, said in [
        (lambda: demo.generate(label, prompt="a thick 3"), "not text-conditioned"),
        (lambda: demo.generate(label, class_="3"), "not class-conditional"),
        (lambda: demo.generate(label, guidance=2.0), "unconditional"),
        (lambda: demo.generate(label, n=1000), "ask for 1 to 64 images"),
        (lambda: demo.generate(label, "nonsense"), "unknown sampler"),
        (lambda: demo.translate(label), "does not translate"),
        (lambda: demo.upscale(label), "not a super-resolution run"),
        (lambda: demo.inpaint(label, None, np.zeros((8, 8), bool)), "the mask is empty"),
        (lambda: demo.test_image(label, 10**6), "does not exist"),
    ]:
        with pytest.raises(ConfigError, match=said) as e:
            call()
        assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")
    with pytest.raises(RunError, match="not a directory"):
        demo.load(str(tmp_path / "nothing"))
    with pytest.raises(RunError, match="no config.json"):
        Demo([tmp_path])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir):
    pytest.importorskip("gradio", reason="genlab serve needs genlab[demo]")
    from genlab.demo.app import serve

    port = _free_port()
    app = serve([run_dir], port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_api_generates_and_reports_mistakes_in_the_page(server, run_dir):
    from gradio_client import Client
    from PIL import Image

    client = Client(server, verbose=False)
    image, info = client.predict(str(run_dir), "ddim", 4, 0, 3, 0.0, "all", "", api_name="/generate")
    assert Image.open(image).size[0] > 8 and "3 samples, ddim, 4 steps: 4 network evaluations each" in info
    with pytest.raises(Exception, match="not text-conditioned, so it takes no prompt"):
        client.predict(str(run_dir), "ddim", 4, 0, 3, 0.0, "all", "a 3", api_name="/generate")
    with pytest.raises(Exception, match="is not a directory"):
        client.predict("/no/such/run", "ddim", 4, 0, 3, 0.0, "all", "", api_name="/generate")


def _chromium():
    for browser in ("chromium", "chromium-browser"):
        if shutil.which(browser) and shutil.which("chromedriver"):
            return shutil.which(browser), shutil.which("chromedriver")
    return None


def test_browser_clicks_generate_and_sees_the_image(server):
    pytest.importorskip("selenium", reason="the browser test drives Chromium with selenium (genlab[demo-test])")
    found = _chromium()
    if found is None:
        pytest.skip("no chromium and chromedriver here (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 60)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
        img = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#samples img")))
        deadline = time.time() + 60
        while time.time() < deadline and not driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
            time.sleep(0.5)
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 8
        wait.until(lambda d: "network evaluations each" in d.find_element(By.CSS_SELECTOR, "#generate-info").text)
    finally:
        driver.quit()


def test_serve_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, monkeypatch):
    import importlib.util

    from genlab.cli import main

    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a genlab run (no config.json)" in err and err.count("\n") == 1
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["serve", str(tmp_path)]) == 2
    assert "pip install 'genlab[demo]'" in capsys.readouterr().err
