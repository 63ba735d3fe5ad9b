"""Rule function_set: write the fixed validation or test set."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.make_function_set, snakemake.output[0], snakemake.params.split, snakemake.config
)
