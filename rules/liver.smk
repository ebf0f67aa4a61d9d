# Liver masks: one NIfTI per case in the CT's geometry from the configured backend, with QC.


rule train_liver_model:
    input:
        sheet=str(L.case_sheet),
        images=per_case(L.image),
        livers=per_case(L.reference_liver),
    output:
        str(L.liver_model_flag),
    params:
        cfg=cfg_json("data", "liver"),
    log:
        str(L.log("liver", "train_liver_model")),
    benchmark:
        str(L.benchmark("liver", "train_liver_model"))
    threads: config["liver"].get("nnunet", {}).get("threads", 1)
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt train-liver-model --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule liver_mask:
    input:
        unpack(liver_mask_inputs),
    output:
        mask=pattern(L.liver_mask, "case"),
        qc=pattern(L.liver_qc_row, "case"),
        overlay=pattern(L.liver_qc_overlay, "case"),
    params:
        cfg=cfg_json("data", "liver"),
    log:
        pattern(lambda c: L.log("liver", c), "case"),
    benchmark:
        pattern(lambda c: L.benchmark("liver", c), "case")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt liver --case {wildcards.case} --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule liver_qc:
    input:
        sheet=str(L.case_sheet),
        rows=per_case(L.liver_qc_row),
    output:
        str(L.liver_qc_table),
    params:
        cfg=cfg_json("data", "liver"),
    log:
        str(L.log("liver", "liver_qc")),
    benchmark:
        str(L.benchmark("liver", "liver_qc"))
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt liver-qc --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
