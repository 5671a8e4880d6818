"""A synthetic toy dataset whose targets depend on the audio, and a tiny checkpoint whose LM was trained on its texts.

Both are for tests, benchmarks and first runs: the toy "songs" are NOT music (plucked tones or noise bursts at a
slow or fast rate, named by the targets), and the tiny checkpoint's audio encoder is random. Names and cards say so.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from transformers import LlamaForCausalLM

from m2mv.checkpoints.cards import CardFacts, base_card
from m2mv.checkpoints.convert import assemble_model, build_processor, save_checkpoint
from m2mv.checkpoints.tiny import TINY_LM, make_tiny_tokenizer, tiny_audio_config, tiny_text_config
from m2mv.data.loading import load_split
from m2mv.data.schema import CAPTIONING, COLUMNS, TARGET_COLUMN, description_fields
from m2mv.data.taxonomy import load_mv_types
from m2mv.data.writing import write_parquet_shard
from m2mv.errors import DatasetError, TrainingError
from m2mv.training.collator import M2MVDataCollator
from mv_format_m2mv import frame_boundaries

TOY_TEXTURE = ("tonal", "noisy")  # a plucked harmonic tone / bursts of noise: what the captions name
TOY_TEMPO = {"slow": (1.0, 1.6), "fast": (4.0, 6.0)}  # note onsets per second
TOY_GENRES = ["rock", "pop", "jazz", "ambient", "folk"]
TOY_LYRICS = ["A song about a long night drive.", "The singer remembers a summer by the sea."]


def toy_song(rng: np.random.Generator, texture: str, tempo: str, seconds: float = 6.0,
             rate: int = 16000) -> np.ndarray:
    """Notes at a slow or fast rate, each a plucked harmonic tone or a burst of noise."""
    t = np.arange(int(seconds * rate)) / rate
    if texture == "tonal":
        f0 = rng.uniform(180.0, 1000.0)
        source = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3))
    else:
        source = rng.normal(size=t.size)
    onsets = rng.uniform(*TOY_TEMPO[tempo])
    envelope = np.exp(-((t * onsets + rng.uniform()) % 1.0) * 6.0)
    y = 0.3 * source * envelope + 0.003 * rng.normal(size=t.size)
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def toy_rows(count: int, seed: int, seconds: float = 6.0) -> list[dict]:
    """Song records: id, artist, FLAC bytes, texture, tempo, conditioning; balanced over texture x tempo."""
    rng = np.random.default_rng(seed)
    mv_types = load_mv_types()
    rows = []
    for i in range(count):
        texture = TOY_TEXTURE[i % 2]
        tempo = ("slow", "fast")[(i // 2) % 2]
        y = toy_song(rng, texture, tempo, seconds)
        buffer = io.BytesIO()
        sf.write(buffer, y, 16000, format="FLAC", subtype="PCM_16")
        song_id = f"toy-{seed}-{i:04d}"
        rows.append({"song_id": song_id, "artist": f"toy-artist-{i % 5}",
                     "audio": {"bytes": buffer.getvalue(), "path": f"{song_id}.flac"},
                     "texture": texture, "tempo": tempo,
                     "genre_tags": [str(g) for g in rng.choice(TOY_GENRES, size=2, replace=False)],
                     "mv_type": str(rng.choice(mv_types[:4])),
                     "lyrics_understanding": TOY_LYRICS[i % 3] if i % 3 < 2 else None})
    return rows


def toy_caption(row: dict) -> str:
    return f"A {row['tempo']} tune of {row['texture']} sounds."


def toy_description(row: dict, seconds: float = 6.0) -> dict:
    """The ``description`` and ``frames`` of a toy row (2-s frames)."""
    light = {"tonal": "soft blue", "noisy": "flickering strobe"}[row["texture"]]
    motion = {"slow": "A slow pan across the stage", "fast": "Quick cuts between the dancers"}[row["tempo"]]
    overview = f"A {row['mv_type'].lower()} video in {light} light, cut to a {row['tempo']} beat."
    frames = [(start, end, f"{motion} in {light} light.") for start, end in frame_boundaries(seconds)]
    return description_fields(overview, frames)


def write_toy_dataset(out_dir: str | Path, n_train: int = 32, n_eval: int = 16, seconds: float = 6.0,
                      seed: int = 0) -> Path:
    """Both configs, splits ``train``/``validation``, in the dataset builder's layout (``<config>/<split>-*.parquet``).

    NOT music: synthetic notes whose texture (tonal/noisy) and rate (slow/fast) decide the caption and parts of
    the MV description, so a model that uses the audio reaches a lower held-out loss than one that cannot.
    """
    out = Path(out_dir)
    for split, count, split_seed in (("train", n_train, seed), ("validation", n_eval, seed + 1000)):
        rows = toy_rows(count, split_seed, seconds)
        for config in COLUMNS:
            records = []
            for row in rows:
                record = {"song_id": row["song_id"], "artist": row["artist"], "audio": row["audio"]}
                if config == CAPTIONING:
                    record.update(caption=toy_caption(row), caption_source="rendered_from_tags")
                else:
                    record.update(genre_tags=row["genre_tags"], mv_type=row["mv_type"],
                                  lyrics_understanding=row["lyrics_understanding"], **toy_description(row, seconds))
                records.append(record)
            folder = out / config
            folder.mkdir(parents=True, exist_ok=True)
            write_parquet_shard(records, config, folder / f"{split}-00000-of-00001.parquet")
    (out / "README.md").write_text(
        "# m2mv toy dataset\n\nSynthetic tones (NOT music, NOT Music4All) written by "
        "`m2mv.training.toy.write_toy_dataset` for tests and smoke runs: the texture and note rate of each clip decide "
        "its caption and parts of its MV description.\n", encoding="utf-8")
    return out


def dataset_texts(dataset_path: str | Path, split: str = "train") -> list[tuple[str, str]]:
    """``(prompt with all conditioning, answer)`` pairs of every config present in a dataset."""
    processor = build_processor(make_tiny_tokenizer(), 1)
    texts = []
    for config in COLUMNS:
        try:
            ds = load_split(dataset_path, config, split)
        except DatasetError:  # the dataset may hold only one of the configs
            continue
        collator = M2MVDataCollator(processor, config)
        for row in ds.select_columns([c for c in ds.column_names if c != "audio"]):
            texts.append((collator.prompt(row), processor.build_answer(row[TARGET_COLUMN[config]])))
    if not texts:
        raise TrainingError(f"{dataset_path}: no {split!r} rows in any config")
    return texts


def _pretrain_language_model(model, tokenizer, texts, steps: int, batch_size: int, lr: float, seed: int) -> float:
    """Train ``model``'s language model (text only) on ``texts``: the audio slot holds the mean embedding of the
    answer's tokens, written through the model's own placeholder path (``get_placeholder_mask`` ->
    ``masked_scatter``), so that the LM learns to read that slot. Returns the last loss."""
    parameters = [p for name, p in model.named_parameters() if not name.startswith(("model.audio_tower.",
                                                                                    "model.multi_modal_projector."))]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    generator = np.random.default_rng(seed)
    embed = model.get_input_embeddings()
    model.train()
    for _ in range(steps):
        batch = [texts[i] for i in generator.choice(len(texts), size=min(batch_size, len(texts)), replace=False)]
        enc = tokenizer([p + a for p, a in batch], return_tensors="pt", padding=True)
        answers = tokenizer([a for _, a in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        mask = answers["attention_mask"].unsqueeze(-1).float()
        summary = ((embed(answers["input_ids"]) * mask).sum(1) / mask.sum(1))[:, None, :]
        inputs = embed(enc["input_ids"])
        slot = model.model.get_placeholder_mask(enc["input_ids"], inputs, summary)
        inputs = inputs.masked_scatter(slot, summary)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100).masked_fill(slot[..., 0], -100)
        loss = model(inputs_embeds=inputs, attention_mask=enc["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss.detach())


def build_text_pretrained_tiny_checkpoint(out_dir: str | Path, dataset_path: str | Path, steps: int = 120,
                                          seed: int = 0, batch_size: int = 8, lr: float = 3e-3,
                                          encoder_init_std: float = 0.1) -> Path:
    """A tiny m2mv checkpoint whose toy Llama was first trained (text only, ``steps`` AdamW steps) on the target
    texts of a dataset's train split; random tiny audio encoder; zero adaptor.

    ``encoder_init_std`` (default 0.1) is the std of the tiny encoder's random weights: at ImageBind's 0.02 a tiny
    random encoder maps all inputs to nearly one embedding (a tone and a noise burst at cosine 0.9, and every input
    shares one dominant direction), which a linear adaptor needs thousands of steps to see past; at 0.1 different
    sounds get clearly different embeddings (tone vs noise at cosine ~0.1), as a trained encoder gives them.

    The tiny analogue of the real setup, where a pretrained LM (Vicuna) meets a fresh adaptor: the LM knows the
    answers' language but not which answer fits which audio, so what stage 1 and stage 2 learn from the audio shows
    in the held-out loss. (A tiny LM with random weights barely reacts to its input: the adaptor alone cannot move
    its loss.)
    """
    texts = dataset_texts(dataset_path)
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    language_model = LlamaForCausalLM(tiny_text_config(len(tokenizer)))
    model = assemble_model(language_model, tokenizer, tiny_audio_config(initializer_range=encoder_init_std), None,
                           1, seed, zero_adaptor=True)
    loss = _pretrain_language_model(model, tokenizer, texts, steps, batch_size, lr, seed)
    name = Path(out_dir).name
    model.config.name_or_path = name
    facts = CardFacts(random_parts=["audio encoder", "adaptor"], tiny=True,
                      language_model=f"{TINY_LM}, trained here for {steps} steps (final loss {loss:.3f}) on the prompts "
                                     f"and answers of `{Path(dataset_path).name}`",
                      audio_encoder=f"tiny random ImageBind audio architecture (2 layers, width 32, weights drawn "
                                    f"with std {encoder_init_std})", num_audio_tokens=1,
                      audio_scale=model.config.audio_config.logit_scale)
    notes = ("The language model was trained with the audio slot holding the mean embedding of the answer's tokens, "
             "so that it learns to read that slot. Tiny and not pretrained on real data: tests and demos only.")
    card = base_card(name, facts, "The adaptor is at zero.", notes=notes)
    return save_checkpoint(model, build_processor(tokenizer, 1), out_dir, card)
