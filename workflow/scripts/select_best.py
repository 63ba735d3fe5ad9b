"""Rule select_best: pick the best evaluated checkpoint by the configured validation metric."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.choose_best,
    snakemake.config,
    snakemake.params.model,
    list(snakemake.input),
    snakemake.output[0],
)
