# SR-TTT benchmark pipeline: data -> liver masks -> PNG slices -> training ->
# per-case inference (with and without test-time training) -> evaluation -> tables and figures.
#
#   snakemake --cores 8 [--use-conda] [--configfile config/paper.yaml] [--config dataset=...]

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "params.yaml")


validate(config, schema=os.path.join(workflow.basedir, "schemas", "params.schema.yaml"))


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/liver.smk"
include: "rules/slices.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
