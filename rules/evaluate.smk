# LiTS-protocol evaluation per method: per-case and summary CSV, logged to MLflow.


rule evaluate:
    input:
        predictions=lambda w: [str(L.prediction(w.method, c)) for c in cases("test")],
        labels=per_case(L.label, "test"),
        reference_livers=per_case(L.reference_liver, "test") if WITH_LIVER_LABELS else [],
    output:
        per_case=pattern(L.per_case_metrics, "method"),
        summary=pattern(L.summary_metrics, "method"),
    params:
        cfg=cfg_json("data", "model", "ttt", "tent", "mlflow"),
    log:
        pattern(lambda m: L.log("evaluate", m), "method"),
    benchmark:
        pattern(lambda m: L.benchmark("evaluate", m), "method")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/report.yaml"
    shell:
        "python -m srttt evaluate --method {wildcards.method} --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
