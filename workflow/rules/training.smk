rule train:
    input:
        validation="results/data/validation.parquet",
    output:
        checkpoints=expand(
            "results/models/{{model}}/epoch_{epoch}.pt", epoch=EVAL_EPOCHS
        ),
        train_log="results/models/{model}/train_log.parquet",
    log:
        "logs/models/{model}/train.log",
    benchmark:
        "benchmarks/models/{model}/train.tsv"
    conda:
        "../../envs/study.yaml"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=train_runtime,
        gpu=gpus,
    params:
        model="{model}",
        resume="results/resume/{model}",
    script:
        "../scripts/train.py"
