rule validate_checkpoint:
    input:
        checkpoint="results/models/{model}/epoch_{epoch}.pt",
        functions="results/data/validation.parquet",
    output:
        "results/validation/{model}/epoch_{epoch}.parquet",
    log:
        "logs/validation/{model}/epoch_{epoch}.log",
    benchmark:
        "benchmarks/validation/{model}/epoch_{epoch}.tsv"
    conda:
        "../../envs/study.yaml"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=eval_runtime,
        gpu=gpus,
    params:
        model="{model}",
    script:
        "../scripts/validate_checkpoint.py"


rule select_best:
    input:
        validation_of,
    output:
        "results/models/{model}/best.json",
    log:
        "logs/models/{model}/best.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        model="{model}",
    script:
        "../scripts/select_best.py"


rule test_model:
    input:
        best="results/models/{model}/best.json",
        checkpoints=checkpoints_of,
        functions="results/data/test.parquet",
    output:
        "results/test/{model}.parquet",
    log:
        "logs/test/{model}.log",
    benchmark:
        "benchmarks/test/{model}.tsv"
    conda:
        "../../envs/study.yaml"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=eval_runtime,
        gpu=gpus,
    params:
        model="{model}",
    script:
        "../scripts/test_model.py"
