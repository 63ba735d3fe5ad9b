"""Rule baseline_test: run one tuned hand-designed optimizer on the test set."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.test_baseline,
    snakemake.config,
    snakemake.params.baseline,
    snakemake.input.best,
    snakemake.input.functions,
    snakemake.output[0],
)
