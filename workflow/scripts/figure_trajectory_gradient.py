"""Rule trajectory_gradient_figure: detached against full gradient path, pair by pair."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(pipeline.render_trajectory_gradient, snakemake.config, snakemake.output[0])
