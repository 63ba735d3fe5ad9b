rule function_set:
    output:
        "results/data/{split}.parquet",
    log:
        "logs/data/{split}.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        split="{split}",
    script:
        "../scripts/function_set.py"
