# Data: generated phantoms and the real LiTS sample, written in the MSD Task08 layout.


rule make_case:
    output:
        image=pattern(L.image, "case"),
        label=pattern(L.label, "case"),
        liver=pattern(L.reference_liver, "case"),
    params:
        cfg=cfg_json("data"),
    log:
        pattern(lambda c: L.log("data", c), "case"),
    benchmark:
        pattern(lambda c: L.benchmark("data", c), "case")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt make-case --case {wildcards.case} --config-json {params.cfg:q} 2> {log}"


rule dataset_index:
    input:
        images=[L.image(c) for c in ALL_CASES],
    output:
        dataset_json=str(L.dataset_json),
        case_sheet=str(L.case_sheet),
    params:
        cfg=cfg_json("data"),
    log:
        str(L.log("data", "dataset_index")),
    benchmark:
        str(L.benchmark("data", "dataset_index"))
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt dataset-index --config-json {params.cfg:q} 2> {log}"
