"""Train m2mv in two stages with TRL's SFTTrainer: one YAML per stage, any option overridable on the command line.

    # stage 1: only the adaptor trains, on the `captioning` config
    accelerate launch --config_file configs/accelerate/single_process.yaml train_sft.py --config configs/stage1.yaml \
        --model_name_or_path ./m2mv-vicuna-7b --dataset_path ./m2mv-dataset --output_dir outputs/stage1
    # stage 2: adaptor + LoRA (r=32, alpha=32 on q/k/v/o), on `mv_description`, from stage 1's output
    accelerate launch --config_file configs/accelerate/single_process.yaml train_sft.py --config configs/stage2.yaml \
        --model_name_or_path outputs/stage1 --dataset_path ./m2mv-dataset --output_dir outputs/stage2

The output folder loads with ``AutoModel.from_pretrained(output_dir, trust_remote_code=True)`` (LoRA merged).
Resume a killed run with ``--resume_from_checkpoint last``. See docs/training.md.
"""

import sys

from transformers import set_seed

from m2mv import training


def main(script_args, training_args, model_args):
    # Checks that need nothing loaded: paths, stage 2's stage-1 input, the output folder
    training.check_args(script_args, training_args, model_args)
    training.prepare_training_args(training_args)
    set_seed(training_args.seed)  # before the LoRA weights are drawn: every process and every rerun draws the same

    # Model and processor, then what trains: stage 1 the adaptor, stage 2 the adaptor + LoRA
    model, processor = training.load_model_and_processor(model_args)
    model = training.set_trainable(model, script_args, model_args)

    # Data and collator (columns, prompts, max_length and precomputed embeddings are checked here)
    train_dataset, eval_dataset, config_name = training.load_datasets(script_args)
    collator = training.make_collator(model, processor, script_args, training_args, config_name,
                                      [train_dataset, eval_dataset])

    trainer = training.M2MVSFTTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        m2mv_args=script_args,
        model_args=model_args,
        source_dir=training.resolve_model_path(model_args.model_name_or_path),
    )
    trainer.accelerator.print(training.trainable_summary(trainer.model))

    trainer.train(resume_from_checkpoint=training.resolve_resume(training_args))
    if eval_dataset is not None:
        trainer.evaluate()

    # Hub-ready folder: merged weights, remote code, processor, model card with the losses
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.card_dataset)
    trainer.accelerator.print(f"saved {training_args.output_dir}")
    return trainer


def cli(argv=None) -> int:
    try:
        main(*training.parse_args(argv))
    except training.M2MVTrainingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
