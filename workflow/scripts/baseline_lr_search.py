"""Rule baseline_lr_search: tune one hand-designed optimizer's learning rate on the validation set."""

from learned_halting import pipeline

pipeline.setup(snakemake.log[0], snakemake.threads)
pipeline.run_step(
    pipeline.search_baseline_lr,
    snakemake.config,
    snakemake.params.baseline,
    snakemake.input.functions,
    snakemake.output.search,
    snakemake.output.best,
)
