"""The demo corpus builder: analysis on signals with known answers, clip cutting, licences, manifest records.

Fast tests make their own audio and never download; the `slow` ones fetch real Debian packages (a handful of clips).
"""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from dataset_scripts import audio_analysis as aa
from dataset_scripts import corpus_clips as clips
from dataset_scripts import corpus_sources as sources
from dataset_scripts import demo_corpus as dc

SR = 22050


def click_track(bpm: float, seconds: float = 30.0, sr: int = SR) -> np.ndarray:
    y = np.zeros(int(seconds * sr), np.float32)
    n = int(0.01 * sr)
    click = (np.exp(-np.arange(n) / (0.002 * sr)) * np.random.default_rng(0).normal(size=n)).astype(np.float32)
    for t in np.arange(0.25, seconds, 60.0 / bpm):
        i = int(t * sr)
        seg = y[i : i + n]
        seg += 0.8 * click[: len(seg)]
    return y


def chord_progression(chords, seconds_per_chord: float = 2.0, repeats: int = 4, sr: int = SR) -> np.ndarray:
    """Triads (MIDI note numbers) of harmonic tones with a plucked envelope."""
    t = np.arange(int(seconds_per_chord * sr)) / sr
    env = np.minimum(1.0, t / 0.02) * np.exp(-0.5 * t)
    parts = []
    for _ in range(repeats):
        for chord in chords:
            s = np.zeros_like(t)
            for note in chord:
                f = 440.0 * 2 ** ((note - 69) / 12)
                for h in range(1, 5):
                    s += np.sin(2 * np.pi * f * h * t) / h
            parts.append(s * env)
    y = np.concatenate(parts)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


C_MAJOR_I_IV_V_I = [(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)]
A_MINOR_I_IV_V_I = [(57, 60, 64), (62, 65, 69), (64, 68, 71), (57, 60, 64)]


# ---------------------------------------------------------------------------------------------------------------------
# analysis


@pytest.mark.parametrize("bpm", [90, 120, 140])
def test_tempo_of_click_track(bpm):
    tempo, beats = aa.estimate_tempo(click_track(bpm), SR)
    assert tempo == pytest.approx(bpm, rel=0.02)
    assert np.median(np.diff(beats)) == pytest.approx(60.0 / bpm, rel=0.05)


def test_tempo_of_silence_is_zero():
    tempo, beats = aa.estimate_tempo(np.zeros(5 * SR, np.float32), SR)
    assert tempo == 0.0 and len(beats) == 0


def test_key_of_c_major_progression():
    key = aa.estimate_key(chord_progression(C_MAJOR_I_IV_V_I), SR)
    assert key["key"] == "C major" and key["tonic"] == "C" and key["mode"] == "major"
    assert key["confidence"] > 0.8 and key["margin"] > 0.05


def test_key_of_a_minor_progression():
    assert aa.estimate_key(chord_progression(A_MINOR_I_IV_V_I), SR)["key"] == "A minor"


def test_key_from_chroma_profiles():
    assert aa.key_from_chroma(np.roll(aa.KK_MAJOR, 7))["key"] == "G major"
    assert aa.key_from_chroma(np.roll(aa.KK_MINOR, 2))["key"] == "D minor"
    assert aa.key_from_chroma(np.zeros(12))["key"] is None


def test_loudness_curve_rises_with_a_louder_second_half():
    y = 0.05 * np.random.default_rng(1).normal(size=30 * SR).astype(np.float32)
    y[15 * SR :] *= 8  # +18 dB
    curve = aa.loudness_curve(y, SR)
    assert len(curve) == 15
    assert curve[:7] == pytest.approx(np.full(7, 20 * np.log10(0.05)), abs=0.3)
    assert curve[8:] == pytest.approx(np.full(7, 20 * np.log10(0.4)), abs=0.3)
    assert curve[8:].mean() - curve[:7].mean() == pytest.approx(18.06, abs=0.3)


def test_levels_of_full_scale_sine_and_silence():
    t = np.arange(2 * SR) / SR
    assert aa.rms_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(-3.01, abs=0.01)
    assert aa.peak_dbfs(np.sin(2 * np.pi * 440 * t)) == pytest.approx(0.0, abs=0.01)
    assert aa.rms_dbfs(np.zeros(100)) == aa.FLOOR_DB


def test_spectral_centroid_follows_pitch():
    t = np.arange(4 * SR) / SR
    low = aa.spectral_centroid_curve(0.5 * np.sin(2 * np.pi * 1000 * t), SR)
    high = aa.spectral_centroid_curve(0.5 * np.sin(2 * np.pi * 4000 * t), SR)
    assert len(low) == 2
    assert low == pytest.approx([1000, 1000], rel=0.03)
    assert high == pytest.approx([4000, 4000], rel=0.03)
    assert aa.spectral_centroid_curve(np.zeros(4 * SR), SR).tolist() == [0.0, 0.0]


def test_analyse_clip_record():
    y = chord_progression(C_MAJOR_I_IV_V_I)[: 30 * SR] + click_track(120, 30)
    y /= 2 * np.abs(y).max()
    stereo = np.stack([y, 0.5 * y], axis=1)
    a = aa.analyse_clip(stereo, SR)
    json.dumps(a)  # plain JSON types only
    assert len(a["loudness_dbfs"]) == len(a["centroid_hz"]) == 15
    assert a["tempo_bpm"] == pytest.approx(120, rel=0.03)
    assert a["key"] == "C major"
    assert len(a["chroma"]) == 12 and sum(a["chroma"]) == pytest.approx(1.0, abs=1e-3)
    assert -40 < a["rms_dbfs"] < -6 and a["peak_dbfs"] == pytest.approx(-6.02, abs=0.01)
    assert all(0 <= b <= 30 for b in a["beat_times_s"])


# ---------------------------------------------------------------------------------------------------------------------
# clip cutting


def test_clip_offsets():
    assert clips.clip_offsets(29.9) == []
    assert clips.clip_offsets(30.0) == [0.0]
    assert clips.clip_offsets(60.0) == [15.0]
    assert clips.clip_offsets(80.0, clips_per_track=2) == [25.0]  # too short for two
    a, b = clips.clip_offsets(120.0, clips_per_track=2)
    assert (a, b) == (25.0, 65.0) and b >= a + 30
    assert clips.clip_offsets(90.0, clips_per_track=4) == [15.0, 45.0]  # room for two only, back to back
    four = clips.clip_offsets(200.0, clips_per_track=4)
    assert four == [25.0, 65.0, 105.0, 145.0] and all(b - a >= 30 for a, b in zip(four, four[1:]))
    assert clips.clip_offsets(600.0, clips_per_track=4)[-1] + 30 <= 600.0


def test_cut_clip_length_and_offset():
    sr = 1000
    y = np.arange(100 * sr, dtype=np.float32)[:, None]
    offset = clips.clip_offsets(100.0)[0]
    clip = clips.cut_clip(y, sr, offset)
    assert clip.shape == (30 * sr, 1)
    assert clip[0, 0] == 35 * sr  # the middle: 35 s .. 65 s
    with pytest.raises(ValueError):
        clips.cut_clip(y, sr, 80.0)


def test_silence_rejection():
    assert "silent" in clips.silence_reason(np.zeros((1000, 2), np.float32))
    assert "silent" in clips.silence_reason(np.full(1000, 1e-3, np.float32))  # -60 dBFS
    assert clips.silence_reason(np.full(1000, 0.1, np.float32)) is None


def test_audible_span_trims_silent_intro_and_tail():
    sr = 1000
    y = np.zeros(10 * sr, np.float32)
    y[2 * sr : 7 * sr] = 0.5
    assert clips.audible_span(y, sr) == (2.0, 7.0)
    assert clips.audible_span(np.zeros(sr), sr) == (0.0, 0.0)


def test_clip_ids_are_stable():
    assert clips.make_clip_id("pingus-data", "pingus-3", 37.8499) == "pingus-data--pingus-3--0037850"
    assert clips.make_clip_id("x", "A Track_name", 0) == "x--a-track-name--0000000"


def test_genre_tags():
    assert sources.genre_tags("orchestral fantasy, Celtic/folk") == ["orchestral fantasy", "Celtic", "folk"]
    assert all(sources.SOURCES[n].genre for n in sources.SOURCES)


# ---------------------------------------------------------------------------------------------------------------------
# licences

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: Example

Files: *
Copyright: 2002-2014, The Team
License: GPL-2+

Files: debian/*
Copyright: 2020, Packager
License: GPL-2+

Files:
 base/music/David01.ogg
 base/music/van_*.ogg
Copyright:
 David Reeves
 Manuel Marino
License: CC-BY-3.0

Files: data/music/*
Copyright: Marek Moeckel
License: GPL-2+
 This program is free software.
"""


def test_dep5_per_file_licences():
    info = sources.CopyrightInfo.parse(DEP5, "fallback")
    assert info.lookup("music/David01.ogg") == ("CC-BY-3.0", "David Reeves; Manuel Marino")
    assert info.lookup("music/van_theme.ogg")[0] == "CC-BY-3.0"
    assert info.lookup("sound/other.ogg") == ("GPL-2+", "2002-2014, The Team")
    assert info.lookup("music/other.ogg") == ("GPL-2+", "Marek Moeckel")  # data/music/* by its trailing folder
    assert info.lookup("usr/share/games/x/music/forest/forest.ogg") == ("GPL-2+", "Marek Moeckel")


def test_non_dep5_copyright_uses_the_package_licence():
    info = sources.CopyrightInfo.parse("This package was debianized by someone.\nGPL 2 or later.\n", "GPL-2+")
    assert info.lookup("anything.ogg") == ("GPL-2+", None)


# ---------------------------------------------------------------------------------------------------------------------
# a whole build from a fake, local "package" (no downloads)


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An unpacked package with 70 s of music (stereo), 40 s of silence, 12 s of music (mono) and a broken file."""
    root = tmp_path / "unpacked"
    music = root / "usr/share/games/fake/music"
    music.mkdir(parents=True)
    doc = root / "usr/share/doc/fake-music"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(DEP5.replace("base/music/David01.ogg", "data/music/tune.flac"))  # a listed file
    sr = 32000
    y = chord_progression(C_MAJOR_I_IV_V_I, sr=sr, repeats=9)[: 70 * sr] + click_track(120, 70, sr)
    y /= 1.2 * np.abs(y).max()
    sf.write(music / "tune.flac", np.stack([y, y], axis=1), sr)
    sf.write(music / "quiet.flac", np.zeros((40 * sr, 2), np.float32), sr)
    sf.write(music / "short_jingle.flac", y[: 12 * sr], sr)
    (music / "broken.flac").write_bytes(b"fLaC not really")
    spec = sources.SourceSpec("fake-music", "ogg", ("usr/share/games/fake/music/*.flac",), "test pop, rock", "GPL-2+",
                              small_tracks=5)
    monkeypatch.setitem(sources.SOURCES, "fake-music", spec)
    monkeypatch.setattr(dc, "fetch_deb", lambda name, deb_dir: (tmp_path / f"{name}.deb", "1.0-1"))
    monkeypatch.setattr(dc, "unpack_deb", lambda deb, dest: root)
    return root


def test_build_from_a_local_package(fake_package, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    manifest = dc.build_demo_corpus(out, "small", cache, sources=["fake-music"], jobs=1, progress=False)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(records) == 1
    r = records[0]
    assert r["clip_id"] == "fake-music--tune--0020000"
    assert r["source_package"] == "fake-music" and r["source_version"] == "1.0-1"
    assert r["source_file"] == "usr/share/games/fake/music/tune.flac"
    assert r["track_title"] == "Tune"
    assert r["licence"] == "CC-BY-3.0" and r["copyright_holders"] == "David Reeves; Manuel Marino"
    assert r["genre"] == "test pop, rock" and r["genre_tags"] == ["test pop", "rock"]
    assert r["offset_s"] == 20.0 and r["duration_s"] == 30.0 and r["track_duration_s"] == 70.0
    assert r["sample_rate"] == 32000 and r["channels"] == 2 and r["render"] is None
    assert r["analysis"]["key"] == "C major"
    assert r["analysis"]["tempo_bpm"] == pytest.approx(120, rel=0.03)
    assert len(r["analysis"]["loudness_dbfs"]) == 15

    info = sf.info(str(out / r["audio"]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (32000, 2, 30 * 32000, "PCM_16")
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(x["kind"] for x in rejects) == ["error", "short", "silent"]
    assert "broken.flac" in next(x["reason"] for x in rejects if x["kind"] == "error")
    assert (out / "licenses/fake-music.copyright").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 1 and summary["per_source"]["fake-music"]["clips"] == 1
    assert "NOT Music4All" in (out / "README.md").read_text()

    # a rerun reuses the cached clip and rejects (no new work), and restores a deleted output clip
    cached = next((cache / "clips").rglob("*.flac"))
    mtime = cached.stat().st_mtime_ns
    (out / r["audio"]).unlink()
    dc.build_demo_corpus(out, "small", cache, sources=["fake-music"], jobs=1, progress=False)
    assert cached.stat().st_mtime_ns == mtime
    assert (out / r["audio"]).exists()
    assert manifest.read_text().splitlines() == [json.dumps(r, ensure_ascii=False)]


def test_unknown_subset_or_source(tmp_path):
    with pytest.raises(ValueError):
        dc.build_demo_corpus(tmp_path, "medium")
    with pytest.raises(ValueError):
        dc.build_demo_corpus(tmp_path, sources=["no-such-package"])
    with pytest.raises(ValueError, match="clips_per_track must be at least 1"):
        dc.build_demo_corpus(tmp_path, clips_per_track=0)


# ---------------------------------------------------------------------------------------------------------------------
# real packages (downloads; a handful of clips)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None, reason="needs apt and dpkg")
def test_build_small_subset_from_debian_packages(tmp_path):
    out = tmp_path / "demo"
    manifest = dc.build_demo_corpus(out, "small", max_tracks_per_source=2, progress=False)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    by_source = {}
    for r in records:
        by_source.setdefault(r["source_package"], []).append(r)
    assert sorted(by_source) == ["nexuiz-music", "openttd-openmsx", "pingus-data"]
    assert all(len(v) == 2 for v in by_source.values())
    for r in records:
        info = sf.info(str(out / r["audio"]))
        assert info.frames == int(round(30 * info.samplerate)) == int(round(r["duration_s"] * r["sample_rate"]))
        assert r["licence"] and r["source_version"] and r["track_title"]
        assert r["analysis"]["rms_dbfs"] > clips.SILENCE_DBFS
        assert r["analysis"]["tempo_bpm"] > 0 and r["analysis"]["key"]
        if r["source_package"] in ("openttd-openmsx", "pingus-data"):
            assert r["render"] and r["sample_rate"] == clips.RENDER_RATE
            assert r["analysis"]["peak_dbfs"] <= clips.RENDER_PEAK_DBFS + 0.01
        assert (out / r["licence_file"]).exists()
    assert (out / "licenses" / f"{dc.SOUNDFONT_PACKAGE}.copyright").exists()
    # a rerun is cached work only
    again = dc.build_demo_corpus(out, "small", max_tracks_per_source=2, progress=False)
    assert again.read_text() == manifest.read_text()
