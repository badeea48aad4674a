"""The README's screenshot of genlab serve: start the demo on RUN(s), click Generate in headless Chromium, save a PNG.

    python docs/figures/serve_screenshot.py runs/digits docs/figures/serve.png

Needs genlab[demo], selenium, and Debian's chromium and chromium-driver.
"""

import shutil
import socket
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from genlab.demo.app import serve


def main(runs: list[str], out: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(runs, port=port, block=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#generate"))).click()
        wait.until(lambda d: "network evaluations each" in d.find_element(By.CSS_SELECTOR, "#generate-info").text)
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()
        app.close()
    print(f"screenshot -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:-1], sys.argv[-1])
