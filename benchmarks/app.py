"""The web app's waits, from one run: start-up, time to the first streamed token, total for one 30-s clip.

    python benchmarks/app.py                                  # the demo checkpoint, a real demo-corpus clip
    python benchmarks/app.py --model DIR --audio song.flac
    python benchmarks/app.py --screenshot docs/app.png        # also the page in headless Chromium, after a run

Start-up: loading the checkpoint, building the page and serving it on 127.0.0.1 until the page answers. Then one
request through the real ``gradio_client`` as a page makes it (greedy, the checkpoint's 512 new tokens, free
generation, the paper's setting otherwise): the first update whose generated text is not empty, and the finished
result (timeline, table, downloads included). ``--screenshot`` drives Debian's Chromium (Selenium) through the same
steps a person takes and saves the page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the browser the app's tests drive


def demo_clip(work: Path) -> tuple[Path, str]:
    """The first clip of the demo corpus (real game music; cached under ~/.cache/m2mv) and its genre tags."""
    from dataset_scripts.demo_corpus import build_demo_corpus

    manifest = build_demo_corpus(work / "corpus", subset="small", progress=False)
    record = json.loads(manifest.read_text().splitlines()[0])
    return manifest.parent / record["audio"], ", ".join(record.get("genre_tags") or [])


def time_request(url: str, audio: Path, mv_type: str, genres: str) -> dict:
    """One request as the page makes it: seconds to the first streamed text and to the finished result."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    start = time.perf_counter()
    job = client.submit(handle_file(str(audio)), mv_type, genres, "", None, "fixed", "whole", True, 512, False,
                        api_name="/describe")
    first = None
    for update in job:
        if first is None and update[0]:
            first = time.perf_counter() - start
    outputs = job.result()
    total = time.perf_counter() - start
    frames = len(outputs[4]["parsed"]["frames"])
    return {"first_token_s": round(first or total, 2), "total_s": round(total, 2), "frames": frames,
            "generated_chars": len(outputs[0])}


def screenshot(url: str, audio: Path, mv_type: str, genres: str, path: Path) -> None:
    """The page after a person's run: upload, pick the MV type, type the genres, greedy and held to the frames (so
    that the table and the timeline show every frame), press Describe, wait for the timeline."""
    from browser import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        browser = headless_chromium(Path(profile), window_size="1400,2600")
        try:
            wait, described = WebDriverWait(browser, 60), WebDriverWait(browser, 900)
            browser.get(url)
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#m2mv-audio input[type=file]"))
            browser.find_element(By.CSS_SELECTOR, "#m2mv-audio input[type=file]").send_keys(str(audio))
            wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#m2mv-audio input[type=file]"))
            box = browser.find_element(By.CSS_SELECTOR, "#m2mv-mv-type input")
            box.click()
            box.send_keys(Keys.CONTROL, "a")  # replace "(none)"
            box.send_keys(mv_type)
            wait.until(lambda b: b.find_elements(By.XPATH, f"//ul[@role='listbox']/li[contains(., '{mv_type}')]"))
            browser.find_element(By.XPATH, f"//ul[@role='listbox']/li[contains(., '{mv_type}')]").click()
            browser.find_element(By.CSS_SELECTOR, "#m2mv-genres textarea").send_keys(genres)
            browser.find_element(By.CSS_SELECTOR, "#m2mv-advanced button").click()
            wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#m2mv-greedy input").is_displayed())
            browser.find_element(By.CSS_SELECTOR, "#m2mv-greedy input").click()
            browser.find_element(By.CSS_SELECTOR, "#m2mv-constrained input").click()
            browser.find_element(By.ID, "m2mv-describe").click()
            described.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#m2mv-timeline img"))
            time.sleep(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(path))
        finally:
            browser.quit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the demo checkpoint)")
    parser.add_argument("--audio", type=Path, help="a song (default: the first demo-corpus clip)")
    parser.add_argument("--mv-type", default="Live Performance")
    parser.add_argument("--genres", help="comma-separated genre tags (default: the demo clip's, else none)")
    parser.add_argument("--screenshot", type=Path, help="also save the page after a run in Chromium")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        os.environ["GRADIO_TEMP_DIR"] = str(Path(work) / "gradio")
        audio, genres = (args.audio, "") if args.audio else demo_clip(Path(work))
        genres = genres if args.genres is None else args.genres
        start = time.perf_counter()  # from importing the app (Gradio, transformers) to the page answering
        from m2mv.app import launch

        app, page = launch(args.model, block=False)
        startup = time.perf_counter() - start
        url = page.local_url
        try:
            report = {"model": app.model_dir.name, "audio": audio.name, "startup_s": round(startup, 2),
                      "genres": genres, **time_request(url, audio, args.mv_type, genres)}
            print(json.dumps(report), flush=True)
            if args.screenshot:
                screenshot(url, audio, args.mv_type, genres, args.screenshot)
                print(f"saved the page to {args.screenshot}")
        finally:
            page.close()
            app.close()
    print(f"start-up {report['startup_s']:.1f} s; first streamed token {report['first_token_s']:.1f} s; "
          f"total {report['total_s']:.1f} s for one clip ({report['frames']} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
