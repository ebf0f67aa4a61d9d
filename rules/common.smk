# Shared helpers: the case sheet, path layout, per-rule config sections and input functions.

import json
import os
import shlex
import sys

SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
# Jobs (also inside --use-conda environments) import the pipeline package from the source tree.
# The prefix is formatted like a shell command, so the braces of ${...} are doubled once more.
shell.prefix(f"export PYTHONPATH={shlex.quote(SRC)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")

from srttt.data.cases import case_table, cases_in_split  # noqa: E402
from srttt.layout import METHOD_MODEL, MODELS, Layout  # noqa: E402

try:
    CASES = case_table(config)
except ValueError as error:
    raise WorkflowError(str(error))

L = Layout(dataset=config["dataset"])
ALL_CASES = [c.case for c in CASES]
TEST_CASES = cases_in_split(config, "test")
METHODS = list(config["methods"])

wildcard_constraints:
    case="|".join(ALL_CASES),
    method="|".join(METHOD_MODEL),
    model="|".join(MODELS),


def cfg_json(*sections):
    """The config sections a rule depends on, as JSON (a change reruns the rule)."""
    chosen = {"dataset": config["dataset"], "seed": config["seed"]}
    chosen.update({name: config[name] for name in sections})
    return json.dumps(chosen, sort_keys=True)


def pattern(path_of, *names):
    """Turn a Layout path function into a Snakemake pattern with {wildcards}."""
    return str(path_of(*(f"{{{name}}}" for name in names)))


def model_weights(wildcards):
    """The weights file of the model a method uses (SR-TTT with and without TTT share one)."""
    return str(L.weights(METHOD_MODEL[wildcards.method]))


def liver_mask_inputs(wildcards):
    """The CT and reference liver of a case, plus the trained nnU-Net model when the pipeline trains one."""
    inputs = {"image": str(L.image(wildcards.case))}
    liver = config["liver"]
    if liver["backend"] == "reference":
        inputs["reference"] = str(L.reference_liver(wildcards.case))
    if liver["backend"] == "nnunet" and not (liver.get("nnunet") or {}).get("model_dir"):
        inputs["model"] = str(L.liver_model_flag)
    return inputs


def final_outputs():
    outputs = [L.tables_dir / f"main.{ext}" for ext in ("csv", "md", "tex")]
    outputs.append(L.figures_dir / "dice_per_case.png")
    outputs.append(L.figures_dir / "synthesis_preview.png")
    outputs += [L.figures_dir / f"overlay_{case}.png" for case in TEST_CASES]
    outputs += [L.per_case_metrics(m) for m in METHODS]
    outputs += [L.dataset_json, L.case_sheet, L.liver_qc_table]
    return [str(p) for p in outputs]
