"""``m2mv convert`` (also ``m2mv-convert``): build an m2mv checkpoint.

    m2mv convert --imagebind imagebind_huge.pth --lm ./vicuna-7b-v1.5 --out ./m2mv-vicuna-7b
    m2mv convert --lm ./vicuna-7b-v1.5 --out ./m2mv-random-encoder       (audio encoder at random: the card says so)
    m2mv convert --audio-encoder ./whisper-base --lm ./vicuna-7b-v1.5 --out ./m2mv-whisper   (any transformers
                                                                          audio encoder; 15 tokens, one per 2 s)
    m2mv convert --tiny --out ./m2mv-tiny-random                          (tiny random, for tests and demos)
    m2mv convert --nextgpt 7b_tiva_v0/pytorch_model.pt --lm ./vicuna-7b-v0 --imagebind imagebind_huge.pth \
        --out ./m2mv-nextgpt-7b-tiva-v0                                   (NExT-GPT's released checkpoint)

The ImageBind file is read with ``torch.load(weights_only=True)``; only its audio branch is kept.
"""

from __future__ import annotations

import argparse
import json

from m2mv.errors import UsageError

NAME = "convert"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="build a checkpoint from ImageBind + a Llama folder, or a tiny one",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output checkpoint folder (must not exist or be empty)")
    parser.add_argument("--tiny", action="store_true", help="write a tiny random checkpoint (tests, demos)")
    parser.add_argument("--lm", help="Llama/Vicuna checkpoint folder")
    parser.add_argument("--gguf-file", help="GGUF file name inside --lm (dequantised on load)")
    parser.add_argument("--imagebind", help="ImageBind-Huge .pth (imagebind_huge.pth); omit for random weights")
    parser.add_argument("--nextgpt", help="NExT-GPT's delta checkpoint (7b_tiva_v0's pytorch_model.pt or its folder); "
                                          "--lm is then the Vicuna-7B v0 folder it was trained on")
    parser.add_argument("--deepresonance", help="DeepResonance's delta checkpoint (alpha or beta pytorch_model.pt, or "
                                                "its folder); --lm is then the Vicuna-7B v0 folder")
    parser.add_argument("--audio-encoder", help="a transformers audio model folder (Whisper, ...) instead of "
                                                "ImageBind: its encoder, frozen, its states pooled over time")
    parser.add_argument("--num-audio-tokens", type=int,
                        help="ImageBind: 1 (default, the mean of the clips) or 3 (one token per 2-s clip); "
                             "--audio-encoder: tokens pooled over time (default 15: one per 2 s of a 30-s clip)")
    parser.add_argument("--audio-pooling", choices=("mean", "max"), default="mean",
                        help="how --audio-encoder's states are pooled into each token (default mean)")
    parser.add_argument("--audio-scale", choices=("nextgpt", "imagebind"), default="nextgpt",
                        help="the audio embedding's scale: nextgpt = L2-normalised only, as NExT-GPT (the paper's "
                             "framework) feeds its adaptor (default); imagebind = times 20, Meta's ImageBind output")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def check(args) -> None:
    """Refuse conflicting or missing options (before anything loads)."""
    if args.audio_encoder:
        given = [flag for flag, value in (("--imagebind", args.imagebind), ("--tiny", args.tiny),
                                          ("--nextgpt", args.nextgpt), ("--deepresonance", args.deepresonance),
                                          ("--audio-scale imagebind", args.audio_scale != "nextgpt")) if value]
        if given:
            raise UsageError(f"--audio-encoder replaces ImageBind and takes no {', '.join(given)}")
        if args.num_audio_tokens is not None and args.num_audio_tokens < 1:
            raise UsageError(f"--num-audio-tokens must be >= 1, got {args.num_audio_tokens}")
    elif args.num_audio_tokens not in (None, 1, 3):
        raise UsageError(f"ImageBind gives 1 or 3 audio tokens (--num-audio-tokens), got {args.num_audio_tokens}")
    if args.nextgpt and args.deepresonance:
        raise UsageError("give --nextgpt or --deepresonance, not both")
    framework = "--nextgpt" if args.nextgpt else "--deepresonance" if args.deepresonance else None
    if framework:
        given = [flag for flag, value in (("--tiny", args.tiny), ("--gguf-file", args.gguf_file),
                                          ("--num-audio-tokens", args.num_audio_tokens is not None),
                                          ("--audio-scale imagebind", args.audio_scale != "nextgpt")) if value]
        if given:
            raise UsageError(f"{framework} imports the checkpoint as it is (its audio tokens, its audio scale) and "
                             f"takes no {', '.join(given)}")
    if args.tiny:
        given = [flag for flag, value in (("--lm", args.lm), ("--imagebind", args.imagebind),
                                          ("--gguf-file", args.gguf_file), ("--dtype", args.dtype)) if value]
        if given:
            raise UsageError(f"--tiny writes a tiny random checkpoint and takes no {', '.join(given)}")
    elif not args.lm:
        raise UsageError("give --lm (and optionally --imagebind or --audio-encoder), or --tiny")
    if args.gguf_file and not args.lm:
        raise UsageError("--gguf-file names a file inside --lm")


def run(args, extra=()) -> int:
    import torch

    from m2mv.checkpoints.convert import build_audio_encoder_checkpoint, build_checkpoint
    from m2mv.checkpoints.nextgpt import DEEPRESONANCE, NEXTGPT, build_framework_checkpoint
    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    check(args)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    tokens = args.num_audio_tokens or 1
    if args.nextgpt or args.deepresonance:
        framework, delta = (NEXTGPT, args.nextgpt) if args.nextgpt else (DEEPRESONANCE, args.deepresonance)
        path = build_framework_checkpoint(framework, args.out, delta, args.lm, args.imagebind, dtype)
    elif args.audio_encoder:
        path = build_audio_encoder_checkpoint(args.out, args.lm, args.audio_encoder, args.num_audio_tokens or 15,
                                              args.audio_pooling, args.gguf_file, dtype, args.seed)
    elif args.tiny:
        path = build_tiny_checkpoint(args.out, tokens, args.seed, args.audio_scale)
    else:
        path = build_checkpoint(args.out, args.lm, args.imagebind, args.gguf_file, tokens, dtype, args.seed,
                                args.audio_scale)
    print(f"wrote {path}")
    print(json.dumps(sorted(p.name for p in path.iterdir())))
    return 0
