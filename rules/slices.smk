# NIfTI to PNG slices (value - 32768 = HU), liver and tumour mask PNGs, manifests and geometry sidecars.


rule slices:
    input:
        image=pattern(L.image, "case"),
        label=pattern(L.label, "case"),
        liver=pattern(L.liver_mask, "case"),
        sheet=str(L.case_sheet),
    output:
        slices=directory(pattern(L.slice_dir, "case")),
        summary=pattern(L.case_summary, "case"),
    params:
        cfg=cfg_json("data"),
    log:
        pattern(lambda c: L.log("slices", c), "case"),
    benchmark:
        pattern(lambda c: L.benchmark("slices", c), "case")
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt slices --case {wildcards.case} --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule manifest:
    input:
        sheet=str(L.case_sheet),
        slices=per_case(L.slice_dir),
        summaries=per_case(L.case_summary),
    output:
        manifest=str(L.manifest),
        splits=directory(str(L.splits_dir)),
        summary=str(L.dataset_summary),
        summary_markdown=str(L.dataset_summary_markdown),
    params:
        cfg=cfg_json("data", "liver"),
    log:
        str(L.log("slices", "manifest")),
    benchmark:
        str(L.benchmark("slices", "manifest"))
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt manifest --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
