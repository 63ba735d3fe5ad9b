rule baseline_lr_search:
    input:
        functions="results/data/validation.parquet",
    output:
        search="results/baselines/{baseline}/lr_search.parquet",
        best="results/baselines/{baseline}/best.json",
    log:
        "logs/baselines/{baseline}/lr_search.log",
    benchmark:
        "benchmarks/baselines/{baseline}/lr_search.tsv"
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=eval_runtime,
    params:
        baseline="{baseline}",
    script:
        "../scripts/baseline_lr_search.py"


rule baseline_test:
    input:
        best="results/baselines/{baseline}/best.json",
        functions="results/data/test.parquet",
    output:
        "results/test/{baseline}.parquet",
    log:
        "logs/test/{baseline}.log",
    benchmark:
        "benchmarks/test/{baseline}.tsv"
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=eval_runtime,
    params:
        baseline="{baseline}",
    script:
        "../scripts/baseline_test.py"
