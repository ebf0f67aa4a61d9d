# Data: a real dataset fetched and imported, or the generated demo data, in the MSD Task08 layout.

if REAL_DATASET:

    rule fetch_source:
        output:
            str(L.source_json),
        params:
            cfg=cfg_json("data", seed=False),
        log:
            str(L.log("data", "fetch")),
        benchmark:
            str(L.benchmark("data", "fetch"))
        threads: 1
        resources:
            mem_mb=2000,
        conda:
            "../envs/core.yaml"
        shell:
            "python -m srttt fetch --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


# The case sheet decides which per-case jobs exist, so it is a checkpoint.
checkpoint case_sheet:
    input:
        [str(L.source_json)] if REAL_DATASET else [],
    output:
        str(L.case_sheet),
    params:
        cfg=cfg_json("data"),
    log:
        str(L.log("data", "cases")),
    benchmark:
        str(L.benchmark("data", "cases"))
    threads: 1
    resources:
        mem_mb=500,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt cases --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule make_case:
    input:
        [str(L.source_json)] if REAL_DATASET else [],
    output:
        image=pattern(L.image, "case"),
        label=pattern(L.label, "case"),
        **({"liver": pattern(L.reference_liver, "case")} if WITH_LIVER_LABELS else {}),
    params:
        # The demo phantoms derive from the seed; an imported case does not.
        cfg=cfg_json("data", seed=not REAL_DATASET),
    log:
        pattern(lambda c: L.log("data", c), "case"),
    benchmark:
        pattern(lambda c: L.benchmark("data", c), "case")
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/core.yaml"
    shell:
        "python -m srttt make-case --case {wildcards.case} --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule dataset_index:
    input:
        sheet=str(L.case_sheet),
        images=per_case(L.image),
    output:
        dataset_json=str(L.dataset_json),
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
        "python -m srttt dataset-index --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
