rule comparison_figure:
    input:
        comparison_inputs,
    output:
        report(
            "results/figures/{comparison}.png",
            caption="../report/comparison.rst",
            category="Figures",
            subcategory="Test curves",
            labels={"figure": "{comparison}"},
        ),
    log:
        "logs/figures/{comparison}.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        name="{comparison}",
    script:
        "../scripts/figure_comparison.py"


rule learning_curves_figure:
    input:
        learning_curve_inputs,
    output:
        report(
            "results/figures/learning_curves_meta.png",
            caption="../report/learning_curves.rst",
            category="Figures",
            subcategory="Learning curves",
            labels={"figure": "learning_curves_meta"},
        ),
    log:
        "logs/figures/learning_curves_meta.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure_learning_curves.py"


rule qt_distributions_figure:
    input:
        qt_inputs,
    output:
        report(
            "results/figures/qt_distributions.png",
            caption="../report/qt_distributions.rst",
            category="Figures",
            subcategory="Halting",
            labels={"figure": "qt_distributions"},
        ),
    log:
        "logs/figures/qt_distributions.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure_qt_distributions.py"


rule trajectory_gradient_figure:
    input:
        trajectory_gradient_inputs,
    output:
        report(
            "results/figures/trajectory_gradient.png",
            caption="../report/trajectory_gradient.rst",
            category="Figures",
            subcategory="Gradient path",
            labels={"figure": "trajectory_gradient"},
        ),
    log:
        "logs/figures/trajectory_gradient.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure_trajectory_gradient.py"


rule halting_figure:
    input:
        test="results/test/{act_model}.parquet",
        best="results/models/{act_model}/best.json",
        train_log="results/models/{act_model}/train_log.parquet",
        validation=expand(
            "results/validation/{{act_model}}/epoch_{epoch}.parquet", epoch=EVAL_EPOCHS
        ),
    output:
        report(
            "results/figures/halting_{act_model}.png",
            caption="../report/halting.rst",
            category="Figures",
            subcategory="Halting",
            labels={"figure": "halting", "model": "{act_model}"},
        ),
    log:
        "logs/figures/halting_{act_model}.log",
    conda:
        "../../envs/study.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        model="{act_model}",
    script:
        "../scripts/figure_halting.py"
