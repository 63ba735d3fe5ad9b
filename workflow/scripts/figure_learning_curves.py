"""Rule learning_curves_figure: training and validation loss per epoch of the meta models."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(pipeline.render_learning_curves, snakemake.config, snakemake.output[0])
