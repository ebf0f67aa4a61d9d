# Liver masks: one NIfTI per case in the CT's geometry, from the configured backend.


rule liver_mask:
    input:
        image=pattern(L.image, "case"),
        liver=pattern(L.reference_liver, "case"),
    output:
        pattern(L.liver_mask, "case"),
    params:
        cfg=cfg_json("liver"),
    log:
        pattern(lambda c: L.log("liver", c), "case"),
    benchmark:
        pattern(lambda c: L.benchmark("liver", c), "case")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt liver --case {wildcards.case} --config-json {params.cfg:q} 2> {log}"
