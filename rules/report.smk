# Tables (CSV, Markdown, LaTeX) and figures (per-case Dice, overlays), logged to MLflow.


rule report:
    input:
        per_case=[L.per_case_metrics(m) for m in METHODS],
        predictions=[L.prediction(m, c) for m in METHODS for c in TEST_CASES],
        images=[L.image(c) for c in TEST_CASES],
        labels=[L.label(c) for c in TEST_CASES],
        livers=[L.liver_mask(c) for c in TEST_CASES],
    output:
        tables=[str(L.tables_dir / f"main.{ext}") for ext in ("csv", "md", "tex")],
        dice=str(L.figures_dir / "dice_per_case.png"),
        overlays=[str(L.figures_dir / f"overlay_{c}.png") for c in TEST_CASES],
    params:
        cfg=cfg_json("data", "methods", "model", "train", "ttt", "tent", "mlflow"),
    log:
        str(L.log("report", "report")),
    benchmark:
        str(L.benchmark("report", "report"))
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m srttt report --config-json {params.cfg:q} 2> {log}"
