# Per-case inference, one job per (method, test case): label map NIfTI, 1 liver and 2 tumour.

INFER_CFG = cfg_json("device", "slices", "diffusion", "model", "train", "ttt", "tent")


rule infer:
    input:
        weights=model_weights,
        slices=pattern(L.slice_dir, "case"),
        liver=pattern(L.liver_mask, "case"),
        sheet=str(L.case_sheet),
    output:
        prediction=pattern(L.prediction, "method", "case"),
        info=pattern(L.prediction_info, "method", "case"),
    wildcard_constraints:
        method="|".join(m for m in METHOD_MODEL if TTT_POLICY.get(m) != "carry"),
    params:
        cfg=INFER_CFG,
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
        "--config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


# TTT policy 'carry' keeps one Adam across the test set: each case starts from the state the
# previous test case (case-sheet order) left, so these jobs run one after the other.
rule infer_carry:
    input:
        unpack(carry_inputs),
    output:
        prediction=pattern(L.prediction, "method", "case"),
        info=pattern(L.prediction_info, "method", "case"),
        state=pattern(L.ttt_state, "method", "case"),
    wildcard_constraints:
        method="|".join(m for m in METHOD_MODEL if TTT_POLICY.get(m) == "carry"),
    params:
        cfg=INFER_CFG,
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
        "--config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
