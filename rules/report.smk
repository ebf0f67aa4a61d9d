# Tables (CSV, Markdown, LaTeX) and figures (per-case Dice, overlays), logged to MLflow.


rule report:
    input:
        per_case=[L.per_case_metrics(m) for m in METHODS],
        predictions=lambda w: [str(L.prediction(m, c)) for m in METHODS for c in cases("test")],
        images=per_case(L.image, "test"),
        labels=per_case(L.label, "test"),
        livers=per_case(L.liver_mask, "test"),
    output:
        tables=[str(L.tables_dir / f"main.{ext}") for ext in ("csv", "md", "tex")],
        dice=str(L.figures_dir / "dice_per_case.png"),
        overlays=directory(str(L.overlays_dir)),
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
        "python -m srttt report --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
