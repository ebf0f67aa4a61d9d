# Per-case inference, one job per (method, test case): label map NIfTI, 1 liver and 2 tumour.


rule infer:
    input:
        weights=model_weights,
        slices=pattern(L.slice_dir, "case"),
        liver=pattern(L.liver_mask, "case"),
    output:
        prediction=pattern(L.prediction, "method", "case"),
        info=pattern(L.prediction_info, "method", "case"),
    params:
        cfg=cfg_json("device", "slices", "diffusion", "model", "train", "ttt", "tent"),
    log:
        pattern(lambda m, c: L.log("infer", f"{m}/{c}"), "method", "case"),
    benchmark:
        pattern(lambda m, c: L.benchmark("infer", f"{m}/{c}"), "method", "case")
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m srttt infer --method {wildcards.method} --case {wildcards.case} "
        "--config-json {params.cfg:q} 2> {log}"
