"""Rule validate_checkpoint: the validation curve of one checkpoint."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.validate_checkpoint,
    snakemake.config,
    snakemake.params.model,
    snakemake.input.checkpoint,
    snakemake.input.functions,
    snakemake.output[0],
)
