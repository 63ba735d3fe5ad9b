rule summary:
    input:
        test=expand("results/test/{model}.parquet", model=list(INSTANCES) + BASELINES),
        best=expand("results/models/{model}/best.json", model=INSTANCES)
        + expand("results/baselines/{baseline}/best.json", baseline=BASELINES),
    output:
        report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
    log:
        "logs/tables/summary.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        models=list(INSTANCES) + BASELINES,
    script:
        "../scripts/summary.py"
