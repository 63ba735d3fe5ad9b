"""Rule qt_distributions_figure: the mean q(t|x) of the act models as a grid of bar charts."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(pipeline.render_qt_distributions, snakemake.config, snakemake.output[0])
