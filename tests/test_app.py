"""The web app: the timeline picture, the handler (the CLI's own describe path, streamed; clear errors), the API
through the real ``gradio_client``, and the page in a real browser (Debian's headless Chromium, driven by Selenium).

Every server here binds to 127.0.0.1 on a free port and is stopped by the test that started it. The model is the
tiny random checkpoint (its text is noise: the page says so); answers are held to the frames (``constrained``) so
that the frame table and the timeline have a known shape.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

gr = pytest.importorskip("gradio", reason="the app extra (pip install 'm2mv[app]'), which the test extra includes")

from m2mv.app.blocks import M2MVApp  # noqa: E402
from m2mv.app.timeline import frame_label, timeline_figure, timeline_marks  # noqa: E402

CLIP = {"overview": "A band on a rooftop.",
        "frames": [{"start": 0.0, "end": 2.0, "text": "Wide shot of the city at dusk"},
                   {"start": 2.0, "end": 4.0, "text": "The singer"}], "problems": []}
SONG = {"overview": None, "frames": [{"start": 0.0, "end": 2.0, "text": "a", "section": 0},
                                     {"start": 30.0, "end": 32.0, "text": "b", "section": 1}],
        "sections": [{"start": 0.0, "end": 30.0, "frames": []}, {"start": 30.0, "end": 60.0, "frames": []}]}
HANDLER_DEFAULTS = dict(mv_type="Live Performance", genres="rock, indie", lyrics_text="", lyrics_file=None,
                        align="fixed", span="whole", greedy=True, max_new_tokens=256, constrained=True)


def test_frame_labels_and_marks():
    assert frame_label("Wide shot of the city at dusk") == "Wide shot of …"
    assert frame_label("The singer") == "The singer"
    marks = timeline_marks(CLIP)
    assert marks["frames"] == [(0.0, 2.0, "Wide shot of …"), (2.0, 4.0, "The singer")]
    assert marks["frame_edges"] == [0.0, 2.0, 4.0] and marks["section_edges"] == []
    song = timeline_marks(SONG)
    assert song["section_edges"] == [0.0, 30.0, 60.0]  # section edges are drawn once, as sections
    assert song["frame_edges"] == [2.0, 32.0]


def test_timeline_figure_draws_beats_frame_and_section_edges():
    rate = 16000
    wave = np.sin(np.linspace(0, 600, 60 * rate)).astype(np.float32)
    figure = timeline_figure(wave, rate, SONG, beat_times=[0.5, 1.0, 1.5])
    axes = figure.axes[0]
    assert len(axes.lines) == 3 + 2 + 3  # beats, frame edges, section edges
    assert [t.get_text() for t in axes.texts] == ["a", "b"]
    assert axes.get_xlim() == (0.0, 60.0)


def test_plain_and_lrc_lyrics():
    from m2mv.data.lrc import plain_or_lrc

    assert plain_or_lrc("  la la\n", "box") == ("la la", None)
    plain, lines = plain_or_lrc("[00:01.00] hello\n[00:03.50] world\n", "box")
    assert plain is None and [(line.time, line.text) for line in lines] == [(1.0, "hello"), (3.5, "world")]


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    served = M2MVApp(tiny_checkpoint)
    yield served
    served.close()


@pytest.fixture
def clip(tmp_path):
    rate = 16000
    t = np.arange(10 * rate) / rate
    path = tmp_path / "clip.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32), rate)
    return str(path)


def run_handler(app, audio, **overrides):
    return list(app.describe(audio, **{**HANDLER_DEFAULTS, **overrides}))


def test_handler_streams_then_gives_the_cli_result_and_downloads(app, tiny_checkpoint, clip):
    from m2mv.inference import describe_files

    updates = run_handler(app, clip)
    text, overview, figure, rows, record, downloads = updates[-1]
    assert len(updates) >= 2 and updates[0][0] and text.startswith(updates[-2][0])  # streamed, growing, then done
    expected = describe_files([clip], tiny_checkpoint, ["rock", "indie"], "Live Performance", greedy=True,
                              max_new_tokens=256, constrained=True, progress=False)[0]
    assert text == expected["text"] and record["parsed"] == expected["parsed"]  # the CLI's own path and answer
    assert [row[:2] for row in rows] == [[float(s), float(s + 2)] for s in range(0, 10, 2)]
    assert figure.axes[0].texts and overview == expected["parsed"]["overview"]
    assert sorted(Path(p).suffix for p in downloads) == [".json", ".srt", ".vtt"]
    assert json.loads(Path(downloads[0]).read_text())["parsed"] == expected["parsed"]
    assert Path(downloads[2]).read_text().startswith("WEBVTT")


def test_a_silent_song_is_described_with_a_warning_in_the_page(app, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4 * 16000, np.float32), 16000)
    with pytest.warns(UserWarning, match=f"{silent}: silent"):  # gr.Warning: a toast in a page, a warning here
        record = run_handler(app, str(silent))[-1][4]
    assert record["warnings"] == [f"{silent}: silent (peak below 0.0001); described anyway"]
    assert len(record["parsed"]["frames"]) == 2


@pytest.mark.parametrize("case, expected", [
    ("missing", "no song"), ("broken", "broken.wav"), ("short", "short.wav"),
    ("mv_type", "unknown MV type 'Polka Video'"), ("span", "span"), ("lrc", "lyrics.lrc")])
def test_handler_errors_name_the_problem(app, tmp_path, case, expected):
    audio = str(tmp_path / f"{case}.wav")
    overrides = {}
    if case == "broken":
        Path(audio).write_bytes(b"this is not audio")
    else:
        sf.write(audio, np.full(100 if case == "short" else 32000, 0.1, np.float32), 16000)
    if case == "missing":
        audio = None
    elif case == "mv_type":
        overrides["mv_type"] = "Polka Video"
    elif case == "span":
        overrides["span"] = "20-10"
    elif case == "lrc":
        (tmp_path / "lyrics.lrc").write_text("[00:01.00] hello\n[00:75.00] past a minute\n")
        overrides["lyrics_file"] = str(tmp_path / "lyrics.lrc")
    with pytest.raises(gr.Error) as raised:
        run_handler(app, audio, **overrides)
    assert expected in str(raised.value.message)


# ---------------------------------------------------------------------------------------------------------------
# The server: the real client, then a real browser
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(app, tmp_path_factory):
    """The page served on 127.0.0.1 (Gradio's uploads and cache in a temporary folder); stopped afterwards."""
    import os

    from m2mv.app import ServeOptions, serve

    cache = tmp_path_factory.mktemp("gradio")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    page = serve(app, ServeOptions(concurrency_limit=1, max_queue=8), block=False)
    yield page.local_url
    page.close()
    if old is None:
        os.environ.pop("GRADIO_TEMP_DIR")
    else:
        os.environ["GRADIO_TEMP_DIR"] = old
    shutil.rmtree(cache, ignore_errors=True)


def api_args(audio):
    from gradio_client import handle_file

    return (handle_file(audio), "Live Performance", "rock", "", None, "fixed", "whole", True, 256, True)


def test_the_client_gets_the_json_result_and_two_concurrent_calls_finish(server, clip, tmp_path):
    from gradio_client import Client

    client = Client(server, verbose=False, download_files=str(tmp_path / "downloads"))
    result = client.predict(*api_args(clip), api_name="/describe")[4]
    assert result["parsed"]["frames"][0]["start"] == 0.0 and len(result["parsed"]["frames"]) == 5
    assert result["model"] == "m2mv-tiny-random"
    jobs = [client.submit(*api_args(clip), api_name="/describe") for _ in range(2)]
    finished = [job.result(timeout=300) for job in jobs]  # queued one after the other (concurrency limit 1)
    assert [len(out[4]["parsed"]["frames"]) for out in finished] == [5, 5]


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium, headless, driven by Selenium through Debian's chromedriver (no download)."""
    from browser import headless_chromium

    session = headless_chromium(tmp_path / "profile")
    yield session
    session.quit()


def demo_corpus_clip(tmp_path) -> Path:
    """A real clip of the demo corpus (real game music from Debian; cached under ~/.cache/m2mv)."""
    from dataset_scripts.demo_corpus import build_demo_corpus

    manifest = build_demo_corpus(tmp_path / "corpus", subset="small", progress=False)
    record = json.loads(manifest.read_text().splitlines()[0])
    return manifest.parent / record["audio"]


def page_text(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def test_a_person_describes_a_song_in_the_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 240)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"this is not audio")

    def open_with(audio: Path) -> None:
        browser.get(server)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#m2mv-audio input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "#m2mv-audio input[type=file]").send_keys(str(audio))
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, "#m2mv-audio input[type=file]"))  # uploaded

    open_with(broken)  # a bad file: its error in the page, and the app goes on serving
    browser.find_element(By.ID, "m2mv-describe").click()
    wait.until(lambda b: "broken.wav" in page_text(b))
    assert "tiny random" in page_text(browser)  # the page says which model it runs

    song = demo_corpus_clip(tmp_path)
    open_with(song)
    box = browser.find_element(By.CSS_SELECTOR, "#m2mv-mv-type input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("Live Performance")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li"))
    browser.find_element(By.XPATH, "//ul[@role='listbox']/li[contains(., 'Live Performance')]").click()
    browser.find_element(By.CSS_SELECTOR, "#m2mv-genres textarea").send_keys("electronic")
    browser.find_element(By.CSS_SELECTOR, "#m2mv-advanced button").click()  # open the decoding fold
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#m2mv-constrained input").is_displayed())
    browser.find_element(By.CSS_SELECTOR, "#m2mv-constrained input").click()
    browser.find_element(By.CSS_SELECTOR, "#m2mv-greedy input").click()
    browser.find_element(By.ID, "m2mv-describe").click()

    grid = "#m2mv-frames [role=grid]"  # a virtual table: it renders the rows in view, and counts them all
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, grid)
               and b.find_element(By.CSS_SELECTOR, grid).get_attribute("aria-rowcount") == "16")  # header + 15
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#m2mv-timeline img"))
    cells = [browser.find_element(By.CSS_SELECTOR, f"#m2mv-frames [data-testid='cell-0-{col}']") for col in (0, 1)]
    assert [c.text for c in cells] == ["0", "2"]  # the first frame, 0-2 s
    assert browser.find_element(By.CSS_SELECTOR, "#m2mv-timeline img").get_attribute("src").startswith("data:image")
    assert browser.find_element(By.CSS_SELECTOR, "#m2mv-text textarea").get_attribute("value").startswith("Overview:")
    assert "Live Performance" in browser.find_element(By.ID, "m2mv-result").text  # the prompt's MV type
    assert browser.save_screenshot(str(tmp_path / "app.png"))


def test_the_command_refuses_bad_options_and_a_missing_model_in_one_line(tmp_path, capsys):
    from m2mv.cli import main

    assert main(["app", "--concurrency-limit", "0"]) == 2
    assert "concurrency limit and queue must be at least 1, got 0 and 16" in capsys.readouterr().err
    assert main(["app", "--port", "70000"]) == 2
    assert "port must be 1-65535, got 70000" in capsys.readouterr().err
    assert main(["app", "--model", str(tmp_path / "nowhere")]) == 2  # before any server starts
    assert f"model folder {tmp_path / 'nowhere'} does not exist" in capsys.readouterr().err


def test_the_spaces_entry_point_serves_a_local_folder(tiny_checkpoint, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("spaces_app", Path(__file__).resolve().parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines model_folder; serves only under __main__
    monkeypatch.setenv("M2MV_MODEL", str(tiny_checkpoint))
    assert module.model_folder() == str(tiny_checkpoint)
    monkeypatch.delenv("M2MV_MODEL")
    assert module.model_folder() is None  # the demo checkpoint
