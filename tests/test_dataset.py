"""Dataset building: deterministic disjoint splits, Parquet + card that `datasets` reads, resume after a kill,
precomputed embeddings with a stale check, and push_to_hub as far as it goes offline."""

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from m2mv.data.loading import load_split
from m2mv.data.writing import assign_split, push_to_hub, split_rows
from m2mv.errors import DatasetError
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION, missing_columns
from m2mv.data.taxonomy import load_mv_types
from mv_format_m2mv import parse_mv_description


def _fake_corpus(folder: Path, n: int = 12, seconds: float = 10.0, clips_per_track: int = 1) -> Path:
    """A corpus in demo_corpus.py's manifest format, from synthetic clips with fixed measurements (``clips_per_track``
    consecutive clips cut from one track)."""
    (folder / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    genres = ["techno, industrial", "jazz, blues", "tracker / chiptune", "orchestral fantasy"]
    with open(folder / "manifest.jsonl", "w") as manifest:
        for i in range(n):
            track = i // clips_per_track
            clip_id = f"pkg{track % 4}--track-{track}--{30000 * (i % clips_per_track):07d}"
            sf.write(folder / "clips" / f"{clip_id}.flac", rng.normal(scale=0.1, size=int(seconds * 8000)), 8000)
            windows = int(np.ceil(seconds / 2))
            record = {
                "clip_id": clip_id, "audio": f"clips/{clip_id}.flac", "source_package": f"pkg{i % 4}",
                "source_version": "1.0", "licence": "GPL-2+", "artist": f"Artist {i % 5}",
                "genre": genres[i % 4], "genre_tags": [g.strip() for g in genres[i % 4].split(",")],
                "duration_s": seconds,
                "analysis": {"tempo_bpm": 80.0 + 10 * i, "beat_times_s": list(np.arange(0.25, seconds, 0.5)),
                             "loudness_dbfs": list(rng.uniform(-30, -10, windows)),
                             "centroid_hz": list(rng.uniform(800, 4000, windows)), "key": "C major",
                             "centroid_mean_hz": 2000.0},
            }
            manifest.write(json.dumps(record) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from dataset_scripts.demo_dataset import build_demo_dataset

    root = tmp_path_factory.mktemp("ds")
    corpus = _fake_corpus(root / "corpus")
    report = build_demo_dataset(corpus, root / "out", progress=False)
    return root / "out", report, corpus


def test_splits_are_deterministic_and_disjoint():
    rows = [{"song_id": f"s{i}", "artist": f"a{i % 37}"} for i in range(3000)]
    by_song = split_rows(rows, "song")
    assert by_song == split_rows(list(reversed(rows)), "song") or all(
        sorted(r["song_id"] for r in by_song[s]) == sorted(r["song_id"] for r in split_rows(rows, "song")[s])
        for s in by_song)
    sizes = {s: len(v) for s, v in by_song.items()}
    assert abs(sizes["train"] / 3000 - 0.8) < 0.03 and abs(sizes["test"] / 3000 - 0.1) < 0.03
    by_artist = split_rows(rows, "artist")
    artists = {s: {r["artist"] for r in v} for s, v in by_artist.items()}
    assert not (artists["train"] & artists["test"]) and not (artists["train"] & artists["validation"])
    assert assign_split("s1") == assign_split("s1") and assign_split("s1", seed=1) in ("train", "validation", "test")
    with pytest.raises(ValueError, match="ratios"):
        assign_split("x", ratios=(0.5, 0.5, 0.5))


def test_the_clips_of_one_track_share_a_split(tmp_path):
    from dataset_scripts.corpus_clips import make_clip_id, track_of
    from dataset_scripts.demo_dataset import DEMO_SPLIT, build_demo_dataset, split_key_of

    assert track_of("nexuiz-music--chaos-fog--0120524") == "nexuiz-music--chaos-fog"
    assert track_of(make_clip_id("nexuiz-music", "Chaos Fog", 120.5)) == "nexuiz-music--chaos-fog"
    key = split_key_of(["p--a--0060000", "p--b--0000000", "p--a--0010000"])
    assert key("p--a--0060000") == key("p--a--0010000") == "p--a--0010000" and key("p--b--0000000") == "p--b--0000000"

    def splits(out: Path) -> dict[str, list[str]]:
        return {s: sorted(load_split(out, MV_DESCRIPTION, s)["song_id"]) for s in ("train", "validation", "test")}

    build_demo_dataset(_fake_corpus(tmp_path / "c3", n=60, seconds=4.0, clips_per_track=3), tmp_path / "out3",
                       ratios=DEMO_SPLIT, progress=False)
    split_of: dict[str, set[str]] = {}
    for split, song_ids in splits(tmp_path / "out3").items():
        for song_id in song_ids:
            split_of.setdefault(track_of(song_id), set()).add(split)
    assert len(split_of) == 20 and all(len(names) == 1 for names in split_of.values())
    assert {s for names in split_of.values() for s in names} == {"train", "validation", "test"}
    # one clip per track: the split is the one the clip ids give (the demo's figures were measured on it)
    build_demo_dataset(_fake_corpus(tmp_path / "c1", n=30, seconds=4.0), tmp_path / "out1", ratios=DEMO_SPLIT,
                       progress=False)
    by_clip = split_rows([{"song_id": i} for ids in splits(tmp_path / "out1").values() for i in ids], ratios=DEMO_SPLIT)
    assert {s: sorted(r["song_id"] for r in rows) for s, rows in by_clip.items()} == splits(tmp_path / "out1")


def test_load_dataset_reads_both_configs(built):
    from datasets import load_dataset

    out, report, _ = built
    for config in (CAPTIONING, MV_DESCRIPTION):
        by_folder = load_dataset(str(out), config)
        by_parquet = load_dataset("parquet", data_dir=str(out / config))
        for split, count in report.counts[config].items():
            if count:
                assert by_folder[split].num_rows == by_parquet[split].num_rows == count
        assert missing_columns(config, by_folder["train"].column_names) == []
    ids = {s: set(load_dataset(str(out), MV_DESCRIPTION)[s]["song_id"]) for s in ("train", "validation", "test")
           if report.counts[MV_DESCRIPTION][s]}
    assert sum(len(v) for v in ids.values()) == 12 and len(set.union(*ids.values())) == 12  # no song crosses


def test_rows_are_valid_targets(built):
    from datasets import load_dataset

    out, _, _ = built
    rows = load_dataset(str(out), MV_DESCRIPTION)["train"]
    for row in rows:
        parsed = parse_mv_description(row["description"], expected_duration=10.0)
        assert parsed.is_valid, parsed.problems
        assert len(parsed.frames) == 5 and row["mv_type"] in load_mv_types()
        assert sf.info(__import__("io").BytesIO(row["audio"]["bytes"])).duration == pytest.approx(10.0)


def test_card_has_real_counts_and_labels_synthetic_columns(built):
    out, report, _ = built
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in meta["configs"]} == {CAPTIONING, MV_DESCRIPTION}
    for info in meta["dataset_info"]:
        for split in info["splits"]:
            assert split["num_examples"] == report.counts[info["config_name"]][split["name"]]
            assert split["num_bytes"] > 0
    assert "NOT Music4All" in card and "| mv_description | description |" in card
    assert "SYNTHETIC" in card.split("| mv_description | description |")[1].splitlines()[0]
    assert "seed 12" in card


# -- beat-aligned frames in about half of the demo descriptions -------------------------------------------------


def _record(clip_id: str, seconds: float = 10.0, beats=None, loudness=None, centroid=None) -> dict:
    """A synthetic demo-corpus record (no audio file): what render_description reads."""
    windows = int(np.ceil(seconds / 2))
    return {"clip_id": clip_id, "duration_s": seconds, "genre_tags": ["jazz"],
            "analysis": {"tempo_bpm": 100.0, "key": "C major", "centroid_mean_hz": 2000.0,
                         "beat_times_s": list(np.arange(0.3, seconds, 0.6)) if beats is None else beats,
                         "loudness_dbfs": loudness or [-20.0] * windows, "centroid_hz": centroid or [2000.0] * windows}}


def _beat_chosen(clip_id: str) -> bool:
    import hashlib

    return hashlib.sha256(clip_id.encode()).digest()[0] % 2 == 1


def test_about_half_of_the_clips_get_beat_frames_deterministically():
    from dataset_scripts.demo_dataset import uses_beat_frames

    records = [_record(f"pkg--track-{i}--{i * 7919:07d}") for i in range(200)]
    chosen = [uses_beat_frames(r) for r in records]
    assert chosen == [_beat_chosen(r["clip_id"]) for r in records]  # sha256 parity of the clip id, nothing else
    assert chosen == [uses_beat_frames(r) for r in reversed(records)][::-1]  # independent of order
    assert 80 <= sum(chosen) <= 120
    picked = next(r for r, c in zip(records, chosen) if c)
    assert not uses_beat_frames({**picked, "analysis": {**picked["analysis"], "beat_times_s": [4.0]}})  # < 2 beats
    assert not uses_beat_frames({**picked, "analysis": {**picked["analysis"], "beat_times_s": [0.0, 10.0, 12.0]}})


@pytest.mark.parametrize("seconds, period", [(10.0, 0.6), (30.0, 0.5), (9.0, 0.7)])
def test_beat_aligned_descriptions_parse_on_the_grouped_beats(seconds, period):
    from dataset_scripts.demo_dataset import render_description
    from m2mv.beats import group_beats
    from mv_format_m2mv import frame_boundaries

    beats = [round(t, 3) for t in np.arange(period / 2, seconds, period)]
    records = [_record(f"clip-{i}", seconds, beats) for i in range(12)]
    aligned = [r for r in records if _beat_chosen(r["clip_id"])]
    assert aligned and len(aligned) < len(records)
    for record in records:
        parsed = parse_mv_description(render_description(record, "Live Performance"), expected_duration=seconds)
        assert parsed.is_valid, parsed.problems
        spans = [(f.start, f.end) for f in parsed.frames]
        expected = group_beats(beats, seconds) if record in aligned else frame_boundaries(seconds)
        assert np.allclose(spans, expected, atol=1e-6), (spans, expected)
        assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(seconds)
        if record in aligned:
            grid = frame_boundaries(seconds)
            assert len(spans) != len(grid) or not np.allclose(spans, grid, atol=0.011), "beat frames = 2-s grid"
            assert all(any(abs(cut - b) <= 0.005 for b in beats) for cut, _ in spans[1:])  # every cut on a beat


def test_frame_text_comes_from_the_window_holding_its_midpoint():
    from dataset_scripts.demo_dataset import LIGHT_BY_BRIGHTNESS, render_description

    centroid = [800.0, 4000.0] * 5  # dark, glassy, dark, ... per 2-s window
    light = [LIGHT_BY_BRIGHTNESS["dark"], LIGHT_BY_BRIGHTNESS["glassy"]] * 5
    clip = next(f"clip-{i}" for i in range(50) if _beat_chosen(f"clip-{i}"))
    record = _record(clip, 20.0, [round(t, 3) for t in np.arange(0.3, 20.0, 0.6)], centroid=centroid)
    frames = parse_mv_description(render_description(record, "Live Performance")).frames
    windows = [int((f.start + f.end) / 2 // 2) for f in frames]  # 1.8-s frames drift past the 2-s windows
    assert len(frames) == 11 and windows != list(range(len(frames)))[: len(windows)]
    assert [f.text.split("; ")[1].rstrip(".") for f in frames] == [light[w] for w in windows]
    fixed = _record("clip-fixed", 4.0, [], centroid=[800.0, 4000.0])  # no beats: the 2-s frames, text as before
    assert render_description(fixed, "Live Performance").splitlines()[2:] == [
        "[00:00-00:02] The camera glides slowly; deep shadows.",
        "[00:02-00:04] The camera glides slowly; sharp white highlights."]


def test_card_counts_the_beat_aligned_descriptions(built):
    from datasets import load_dataset

    out, _, corpus = built
    records = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    aligned = {r["clip_id"] for r in records if _beat_chosen(r["clip_id"])}
    assert 0 < len(aligned) < len(records)
    card = (out / "README.md").read_text()
    assert f"{len(aligned)} of {len(records)} on beat-aligned frames" in card and "About half" in card
    rows = load_dataset(str(out), MV_DESCRIPTION)
    for split in rows:
        for row in rows[split]:
            cuts = [f.start for f in parse_mv_description(row["description"]).frames[1:]]
            on_grid = all(abs(c - round(c / 2) * 2) < 1e-6 for c in cuts)
            assert on_grid == (row["song_id"] not in aligned), row["song_id"]


def test_build_resumes_after_a_kill_with_identical_output(tmp_path):
    corpus = _fake_corpus(tmp_path / "corpus", n=12, seconds=4.0)
    script = (  # one row per shard, and a pause after each shard so that the kill lands mid-build
        "import sys, time; from dataset_scripts import demo_dataset as d; from m2mv.data import writing as h\n"
        "write_config, write_shard = h.write_config, h.write_parquet_shard\n"
        "h.write_parquet_shard = lambda *a: (write_shard(*a), time.sleep(float(sys.argv[3])))\n"
        "h.write_config = lambda *a, **k: write_config(*a, **{**k, 'shard_rows': 1})\n"
        "d.build_demo_dataset(sys.argv[1], sys.argv[2], progress=False)\n"
    )
    root = Path(__file__).resolve().parents[1]
    killed = subprocess.Popen([sys.executable, "-c", script, str(corpus), str(tmp_path / "killed"), "0.3"], cwd=root)
    shards = tmp_path / "killed" / CAPTIONING
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*.parquet"))) < 2:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "README.md").exists()  # killed before the card: no half-built dataset
    for shard in (tmp_path / "killed").rglob("*.parquet"):
        pq.read_table(shard)  # every visible shard is complete
    for out in ("killed", "clean"):
        done = subprocess.run([sys.executable, "-c", script, str(corpus), str(tmp_path / out), "0"], cwd=root)
        assert done.returncode == 0
    resumed, clean = tmp_path / "killed", tmp_path / "clean"
    assert sorted(p.relative_to(resumed).as_posix() for p in resumed.rglob("*.parquet")) == sorted(
        p.relative_to(clean).as_posix() for p in clean.rglob("*.parquet"))
    for shard in clean.rglob("*.parquet"):
        assert pq.read_table(shard).equals(pq.read_table(resumed / shard.relative_to(clean)))
    assert (resumed / "README.md").read_text() == (clean / "README.md").read_text()


def test_bad_corpus_input_names_the_file(tmp_path):
    from dataset_scripts.demo_dataset import build_demo_dataset

    with pytest.raises(DatasetError, match="manifest.jsonl: no demo corpus manifest"):
        build_demo_dataset(tmp_path, tmp_path / "out", progress=False)
    corpus = _fake_corpus(tmp_path / "c", n=2)
    (corpus / "clips" / "pkg1--track-1--0000000.flac").unlink()
    with pytest.raises(DatasetError, match="pkg1--track-1--0000000.flac: audio file of clip"):
        build_demo_dataset(corpus, tmp_path / "out2", progress=False)
    with open(corpus / "manifest.jsonl", "a") as manifest:
        manifest.write("{not json\n")
    with pytest.raises(DatasetError, match="row 3: not JSON"):
        build_demo_dataset(corpus, tmp_path / "out3", progress=False)


def test_precomputed_embeddings_match_the_encoder_and_stale_ones_are_refused(built, tiny_checkpoint, tmp_path):
    import shutil

    import torch
    from transformers import AutoModel, AutoProcessor

    from m2mv.data.embeddings import compute_embeddings, load_embeddings
    from m2mv.errors import StaleEmbeddingsError

    out = tmp_path / "ds"
    shutil.copytree(built[0], out)
    model = AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    assert load_embeddings(out, model) is None  # none computed yet
    compute_embeddings(model, processor, out, batch_size=4, progress=False)
    embeds = load_embeddings(out, model)
    assert len(embeds) == 12
    song = sorted(embeds)[0]
    audio = str(built[2] / "clips" / f"{song}.flac")
    with torch.no_grad():
        direct = model.audio_tower(processor.feature_extractor(audio, return_tensors="pt")["input_features"])
    np.testing.assert_allclose(embeds[song], direct.pooler_output[0].numpy(), atol=1e-5)
    with pytest.raises(StaleEmbeddingsError, match="no embeddings for 1 songs"):
        load_embeddings(out, model, song_ids=[song, "unknown-song"])
    with torch.no_grad():
        model.audio_tower.head.projection.weight.add_(0.01)  # another encoder
    with pytest.raises(StaleEmbeddingsError, match="none for this model's audio encoder"):
        load_embeddings(out, model)


class _Recorder(BaseHTTPRequestHandler):
    calls: list = []

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).calls.append((self.command, self.path, self.headers.get("authorization"), body[:2000]))
        if self.path.startswith("/api/repos/create"):
            self.send_response(200)
            payload = json.dumps({"url": "http://localhost/datasets/me/m2mv-demo", "name": "me/m2mv-demo"}).encode()
        else:
            self.send_response(500)
            payload = b'{"error": "recorder: not implemented"}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = _handle

    def log_message(self, *args):
        pass


def test_push_to_hub_creates_a_private_dataset_repo_with_the_env_token(built, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(DatasetError, match="needs a token"):
            push_to_hub(built[0], "me/m2mv-demo")
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        import importlib

        import huggingface_hub.constants

        importlib.reload(huggingface_hub.constants)
        with pytest.raises(Exception):  # the recorder stops at the upload: that part is not exercised offline
            push_to_hub(built[0], "me/m2mv-demo")
    finally:
        server.shutdown()
        monkeypatch.undo()
        import importlib

        import huggingface_hub.constants

        importlib.reload(huggingface_hub.constants)
    create = [c for c in _Recorder.calls if c[1].startswith("/api/repos/create")]
    assert create, _Recorder.calls
    body = json.loads(create[0][3])
    assert body["type"] == "dataset" and body["visibility"] == "private" and body["name"] == "m2mv-demo"
    assert create[0][2] == "Bearer hf_test_token"


def test_load_split_joins_splits_written_with_a_plus(built, tmp_path):
    from dataset_scripts.demo_dataset import build_demo_dataset
    from m2mv.errors import DatasetError

    out = tmp_path / "ds"
    build_demo_dataset(built[2], out, ratios=(0.2, 0.4, 0.4), progress=False)
    validation, test = (load_split(out, "mv_description", s) for s in ("validation", "test"))
    joined = load_split(out, "mv_description", "validation+test")
    assert len(validation) and len(test) and list(joined["song_id"]) == [*validation["song_id"], *test["song_id"]]
    for bad in ("validation+", "test+test"):
        with pytest.raises(DatasetError, match="join distinct split names"):
            load_split(out, "mv_description", bad)
    with pytest.raises(DatasetError, match="no split|no Parquet files"):
        load_split(out, "mv_description", "validation+dev")
