"""Rule comparison_figure: mean test NLL curves of the models of one figures.comparisons entry."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.render_comparison, snakemake.config, snakemake.params.name, snakemake.output[0]
)
