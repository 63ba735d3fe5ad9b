"""Rule test_model: run the selected checkpoint on the test set."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.test_model,
    snakemake.config,
    snakemake.params.model,
    snakemake.input.best,
    list(snakemake.input.checkpoints),
    snakemake.input.functions,
    snakemake.output[0],
)
