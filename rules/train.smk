# Training on healthy slices with tumours synthesised on the fly: baseline (S only) and SR-TTT (S, G, R).


rule train:
    input:
        manifest=str(L.manifest),
        slices=per_case(L.slice_dir, "train"),
    output:
        weights=pattern(L.weights, "model"),
        history=pattern(L.history, "model"),
    params:
        cfg=cfg_json("device", "slices", "synthesis", "diffusion", "model", "train", "mlflow"),
    log:
        pattern(lambda m: L.log("train", m), "model"),
    benchmark:
        pattern(lambda m: L.benchmark("train", m), "model")
    threads: config["train"]["threads"]
    resources:
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m srttt train --model {wildcards.model} --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"


rule synthesis_preview:
    input:
        manifest=str(L.manifest),
    output:
        str(L.figures_dir / "synthesis_preview.png"),
    params:
        cfg=cfg_json("slices", "synthesis", "diffusion"),
    log:
        str(L.log("train", "synthesis_preview")),
    benchmark:
        str(L.benchmark("train", "synthesis_preview"))
    threads: 1
    resources:
        mem_mb=2000,
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m srttt synth-preview --config-json {params.cfg:q} 2> {log} || (tail -n 5 {log} >&2; exit 1)"
