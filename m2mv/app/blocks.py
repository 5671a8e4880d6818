"""The web app (Gradio Blocks): upload or record a song, see its music video as a timeline.

One checkpoint is loaded when the app starts and serves every request through the CLI's own
:func:`m2mv.inference.describe_files` (no second inference path); the generated text streams into the page as it is
written (transformers' ``TextIteratorStreamer``, for a clip: a song in windows is generated as one batch). Gradio's
queue runs ``concurrency_limit`` requests at once (default 1: two users never run two generations at once on one
device) and holds up to ``max_queue`` waiting, each shown its place and progress. A bad request (no file, an
unreadable one, a clip too short, an unknown MV type or span) is a ``gr.Error`` in the page naming the problem; the
app keeps serving.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from m2mv.app.options import ServeOptions
from m2mv.app.timeline import timeline_figure
from m2mv.checkpoints.cards import random_weights_warning, read_card
from m2mv.checkpoints.loading import demo_checkpoint, load_checkpoint, resolve_checkpoint
from m2mv.data.exports import write_exports
from m2mv.data.fileio import atomic_write_text
from m2mv.data.lrc import plain_or_lrc
from m2mv.data.timeline import parse_span
from m2mv.errors import M2MVError
from m2mv.inference import describe_files, lyrics_chat_model

ALIGN_CHOICES = ("fixed", "beats")
NO_MV_TYPE = "(none)"
EXPORTS = ("srt", "vtt")
STREAM_EVERY_S = 0.2  # how often the page gets the text written so far


def model_summary(model_dir: Path, demo: bool) -> str:
    """Markdown naming the checkpoint the app runs, from its card: its parts and which weights are random."""
    meta, facts = read_card(model_dir)
    lines = [f"**Model:** `{model_dir.name}`"]
    if facts is not None:
        lines.append(f"language model: {facts.language_model}; audio encoder: {facts.audio_encoder}")
    training = meta.get("m2mv_training")
    if isinstance(training, dict):
        results = training.get("results") or {}
        loss = results.get("final_eval_loss")
        lines.append(f"trained by m2mv: stage {training.get('stage')} from `{meta.get('base_model')}`"
                     + (f", held-out loss {loss:.3f}" if isinstance(loss, float) else ""))
    warning = random_weights_warning(facts, trained=isinstance(training, dict)) if meta else ""
    if warning:
        lines.append(warning.strip())
    if demo:
        lines.append("This is m2mv's **demo checkpoint**: real SmolLM2-135M-Instruct and OpenAI's real Whisper-base "
                     "encoder, with an **untrained adaptor**, so its text is English but does not depend on the music "
                     "yet. Train one with `m2mv demo` and serve it with `m2mv app --model DIR`.")
    return "\n\n".join(lines)


def _genres(text: str | None) -> list[str] | None:
    tags = [tag.strip() for tag in (text or "").split(",") if tag.strip()]
    return tags or None


def _frame_rows(parsed: dict) -> list[list]:
    return [[round(float(f["start"]), 2), round(float(f["end"]), 2), f["text"]] for f in parsed.get("frames") or []]


def _overview(parsed: dict) -> str:
    """The clip's overview, or each section's for a whole song (the song-level overview is never made up)."""
    if parsed.get("sections"):
        return "\n\n".join(f"[{s['start']:g}-{s['end']:g} s] {s.get('overview') or ''}" for s in parsed["sections"])
    return parsed.get("overview") or ""


def _beats(result: dict, path: str) -> list[float]:
    """The beat times for the picture: those the prompt used (``--align beats``), else librosa's beat tracker on the
    audio ``describe_files`` decoded (none when librosa is missing or finds none)."""
    from m2mv.beats import NoBeatsError, beat_frame_boundaries

    if result.get("beat_times") is not None:
        return list(result["beat_times"])
    sections = (result.get("parsed") or {}).get("sections") or []
    if sections and all(s.get("beat_times") is not None for s in sections):
        return [s["start"] + t for s in sections for t in s["beat_times"]]
    try:
        return beat_frame_boundaries(result["audio"]["array"], result["audio"]["sampling_rate"], name=path)[1]
    except (ImportError, NoBeatsError):
        return []


class M2MVApp:
    """The app's state: one loaded checkpoint, the lyrics LLM (loaded on first use) and a folder for downloads."""

    def __init__(self, model_dir: str | Path | None = None, lyrics_chat=None):
        self.demo = model_dir is None
        self.model_dir = resolve_checkpoint(model_dir if model_dir is not None else demo_checkpoint())
        self.model, self.processor = load_checkpoint(self.model_dir)
        self.summary = model_summary(self.model_dir, self.demo)
        self._lyrics_chat = lyrics_chat
        self._lyrics_lock = threading.Lock()
        self._downloads = tempfile.TemporaryDirectory(prefix="m2mv-app-")

    def close(self) -> None:
        """Remove the downloads folder."""
        self._downloads.cleanup()

    def lyrics_chat(self):
        with self._lyrics_lock:
            if self._lyrics_chat is None:
                self._lyrics_chat = lyrics_chat_model()
            return self._lyrics_chat

    @property
    def default_max_new_tokens(self) -> int:
        return int(self.model.generation_config.max_new_tokens or 512)

    def _lyrics(self, text: str | None, file: str | None) -> dict:
        """The describe_files arguments for the lyrics box or an uploaded lyrics file (plain text or LRC)."""
        if file:
            raw = Path(file).read_text(encoding="utf-8-sig")
            name = file
        elif text and text.strip():
            raw, name = text, "the lyrics box"
        else:
            return {}
        plain, lrc = plain_or_lrc(raw, name)
        if lrc is not None:
            return {"lrc": lrc, "lyrics_chat": self.lyrics_chat()}
        return {"lyrics": plain, "lyrics_chat": self.lyrics_chat()}

    def describe(self, audio: str | None, mv_type: str | None, genres: str | None, lyrics_text: str | None,
                 lyrics_file: str | None, align: str, span: str, greedy: bool, max_new_tokens: float,
                 constrained: bool) -> Iterator[tuple]:
        """The button's handler: yields ``(generated text, overview, timeline, frames, result, downloads)`` as the
        text streams in, then the finished result. Bad input raises ``gr.Error`` naming it."""
        import gradio as gr
        from transformers import TextIteratorStreamer

        if not audio:
            raise gr.Error("no song: upload or record one first")
        try:
            kwargs = {"span": parse_span(span or "whole"), **self._lyrics(lyrics_text, lyrics_file)}
            mv_type = None if mv_type in (None, "", NO_MV_TYPE) else self.processor.canonical_mv_type(mv_type)
            if align not in ALIGN_CHOICES:
                raise ValueError(f"frames must be one of {', '.join(ALIGN_CHOICES)}, got {align!r}")
        except (M2MVError, ValueError, OSError) as err:
            raise gr.Error(str(err)) from err
        settings = {"mv_type": mv_type, "genre_tags": _genres(genres), "align": align, "span": span or "whole",
                    "greedy": bool(greedy), "max_new_tokens": int(max_new_tokens) if max_new_tokens else None,
                    "constrained": bool(constrained)}
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["result"] = describe_files(
                    [audio], self.model_dir, settings["genre_tags"], mv_type, greedy=settings["greedy"],
                    max_new_tokens=settings["max_new_tokens"], align=align, progress=False,
                    constrained=settings["constrained"], checkpoint=(self.model, self.processor), streamer=streamer,
                    return_audio=True, **kwargs)[0]
            except Exception as err:  # shown in the page by the request's thread
                outcome["error"] = err
            finally:
                streamer.end()  # a song in windows is not streamed: this ends the page's wait

        worker = threading.Thread(target=work, name="m2mv-describe", daemon=True)
        worker.start()
        written, shown = "", 0.0
        for piece in streamer:
            written += piece
            if time.monotonic() - shown > STREAM_EVERY_S:
                shown = time.monotonic()
                yield written, "", None, [], None, []
        worker.join()
        if "error" in outcome:
            raise gr.Error(str(outcome["error"])) from outcome["error"]
        result = outcome["result"]
        if "error" in result:
            raise gr.Error(result["error"])
        for warning in result.get("warnings", []):  # silent, or shorter than its header says: described anyway
            gr.Warning(warning)
        yield self._finished(result, audio, settings)

    def _finished(self, result: dict, audio: str, settings: dict) -> tuple:
        """The page's outputs for a described song, with its JSON and SRT/VTT written for download."""
        parsed = result["parsed"]
        beats = _beats(result, audio)
        decoded = result.pop("audio")  # the waveform, drawn; not part of the JSON
        title = f"{Path(audio).name}: {len(parsed.get('frames') or [])} frames, {len(beats)} beats"
        figure = timeline_figure(decoded["array"], decoded["sampling_rate"], parsed, beats, title=title)
        folder = Path(tempfile.mkdtemp(dir=self._downloads.name))
        stem = folder / Path(audio).stem
        record = {**result, "model": self.model_dir.name, "settings": settings}
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        downloads = [stem.with_suffix(".json"), *write_exports(parsed, stem, EXPORTS, audio)[0]]
        return result["text"], _overview(parsed), figure, _frame_rows(parsed), record, [str(p) for p in downloads]

    def blocks(self, concurrency_limit: int = 1, max_queue: int = 16):
        """The Gradio Blocks of the page, queued."""
        import gradio as gr

        with gr.Blocks(title="m2mv: music in, a music video out", delete_cache=(3600, 3600),
                       analytics_enabled=False) as page:  # no usage reports to Gradio's servers
            gr.Markdown("# m2mv: music in, a music video out\nUpload or record a song; m2mv writes the video's "
                        "overview and a frame-by-frame breakdown.")
            gr.Markdown(self.summary, elem_id="m2mv-model")
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="song",
                                     elem_id="m2mv-audio")
                    mv_type = gr.Dropdown([NO_MV_TYPE, *self.processor.mv_types], value=NO_MV_TYPE, label="MV type",
                                          elem_id="m2mv-mv-type")
                    genres = gr.Textbox(label="genre tags (comma-separated)", placeholder="rock, indie",
                                        elem_id="m2mv-genres")
                    lyrics_text = gr.Textbox(label="lyrics (plain text or LRC)", lines=4, elem_id="m2mv-lyrics")
                    lyrics_file = gr.File(label="or a lyrics file (.txt, .lrc)", file_types=[".txt", ".lrc"],
                                          type="filepath")
                    align = gr.Radio(list(ALIGN_CHOICES), value="fixed", label="frames: fixed 2-s steps or on beats",
                                     elem_id="m2mv-align")
                    span = gr.Textbox(value="whole", label="span: whole, or START-END in seconds or mm:ss",
                                      elem_id="m2mv-span")
                    with gr.Accordion("advanced: decoding", open=False, elem_id="m2mv-advanced"):
                        greedy = gr.Checkbox(False, label="greedy (default: the paper's sampling)",
                                             elem_id="m2mv-greedy")
                        max_new_tokens = gr.Slider(16, 2048, value=self.default_max_new_tokens, step=1,
                                                   label="max new tokens", elem_id="m2mv-max-new-tokens")
                        constrained = gr.Checkbox(False, label="hold the answer to the frames (constrained)",
                                                  elem_id="m2mv-constrained")
                    button = gr.Button("Describe", variant="primary", elem_id="m2mv-describe")
                with gr.Column():
                    text = gr.Textbox(label="generated text", lines=10, elem_id="m2mv-text")
                    overview = gr.Textbox(label="overview", lines=3, elem_id="m2mv-overview")
            timeline = gr.Plot(label="timeline", elem_id="m2mv-timeline")
            frames = gr.Dataframe(headers=["start", "end", "text"], datatype=["number", "number", "str"],
                                  label="frames", interactive=False, wrap=True, elem_id="m2mv-frames")
            with gr.Row():
                result = gr.JSON(label="result", elem_id="m2mv-result")
                downloads = gr.File(label="downloads (JSON, SRT, VTT)", file_count="multiple", elem_id="m2mv-files")
            button.click(self.describe, [audio, mv_type, genres, lyrics_text, lyrics_file, align, span, greedy,
                                         max_new_tokens, constrained],
                         [text, overview, timeline, frames, result, downloads], api_name="describe",
                         show_progress="full")
        return page.queue(default_concurrency_limit=concurrency_limit, max_size=max_queue)


def serve(app: M2MVApp, options: ServeOptions = ServeOptions(), block: bool = True):
    """Serve ``app``'s page at ``http://host:port`` as ``options`` say; returns the running Blocks when not ``block``
    (its ``local_url`` is the address; stop it with ``close()``)."""
    page = app.blocks(options.concurrency_limit, options.max_queue)
    page.launch(server_name=options.host, server_port=options.port, prevent_thread_lock=not block, ssr_mode=False,
                show_error=True, quiet=not block)
    return page


def launch(model_dir: str | Path | None = None, options: ServeOptions = ServeOptions(), block: bool = True):
    """Load the checkpoint and serve the page (:func:`serve`); returns ``(app, blocks)`` when not ``block`` (the
    caller stops it with ``blocks.close()`` and ``app.close()``)."""
    app = M2MVApp(model_dir)
    try:
        page = serve(app, options, block)
    except BaseException:
        app.close()
        raise
    if block:
        app.close()
    return app, page
