"""Rule summary: one row per model with the mean test NLL at selected steps."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.write_summary,
    snakemake.config,
    list(snakemake.params.models),
    list(snakemake.input.test),
    list(snakemake.input.best),
    snakemake.output[0],
)
