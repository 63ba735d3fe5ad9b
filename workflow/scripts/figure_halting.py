"""Rule halting_figure: mode and stopping steps of one act model against the NLL distance."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.render_halting, snakemake.config, snakemake.params.model, snakemake.output[0]
)
