"""Rule train: meta-train one model, writing a checkpoint at every evaluation epoch."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.train_model,
    snakemake.config,
    snakemake.params.model,
    list(snakemake.output.checkpoints),
    snakemake.output.train_log,
    snakemake.params.resume,
)
