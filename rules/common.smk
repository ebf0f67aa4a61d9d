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

from srttt.data.cases import case_table, has_liver_labels, read_case_sheet, source_config  # noqa: E402
from srttt.layout import METHOD_MODEL, MODELS, TTT_POLICY, Layout  # noqa: E402
from srttt.liver.choice import liver_backend  # noqa: E402

REAL_DATASET = source_config(config) is not None
WITH_LIVER_LABELS = has_liver_labels(config)
try:
    LIVER_BACKEND = liver_backend(config)
    if LIVER_BACKEND == "precomputed" and not os.path.isdir(os.path.expanduser(config["liver"]["precomputed_dir"] or "")):
        raise ValueError(
            f"liver.precomputed_dir {config['liver']['precomputed_dir']!r} is not a folder; "
            "set it to the folder of <case>.nii.gz liver masks"
        )
    if not REAL_DATASET:
        case_table(config)  # the demo case sheet follows from params.yaml: check it before any job runs
except ValueError as error:
    raise WorkflowError(str(error))

L = Layout(dataset=config["dataset"])
METHODS = list(config["methods"])

wildcard_constraints:
    case=r"[A-Za-z0-9_-]+",
    method="|".join(METHOD_MODEL),
    model="|".join(MODELS),


def cases(split=None):
    """Case ids from the case sheet, which the case_sheet checkpoint writes (a real dataset's cases are known only then)."""
    sheet = checkpoints.case_sheet.get().output[0]
    return [c.case for c in read_case_sheet(sheet) if split is None or c.split == split]


def per_case(path_of, split=None):
    """An input function giving ``path_of(case)`` for every case of ``split`` (all cases when None)."""
    return lambda wildcards: [str(path_of(c)) for c in cases(split)]


def cfg_json(*sections, seed=True):
    """The config sections a rule depends on, as JSON (a change reruns the rule).

    ``data`` is narrowed to the configured dataset's own part: its entry under
    ``data.sources``, or the demo's ``phantom`` and ``lits_sample``, so editing
    another dataset's source reruns nothing here.
    """
    chosen = {"dataset": config["dataset"]}
    if seed:
        chosen["seed"] = config["seed"]
    for name in sections:
        chosen[name] = config[name]
    if "data" in sections:
        data = config["data"]
        if REAL_DATASET:
            chosen["data"] = {"sources": {config["dataset"]: source_config(config)}}
        else:
            chosen["data"] = {key: data[key] for key in ("phantom", "lits_sample")}
    return json.dumps(chosen, sort_keys=True)


def pattern(path_of, *names):
    """Turn a Layout path function into a Snakemake pattern with {wildcards}."""
    return str(path_of(*(f"{{{name}}}" for name in names)))


def model_weights(wildcards):
    """The weights file of the model a method uses (SR-TTT with and without TTT share one)."""
    return str(L.weights(METHOD_MODEL[wildcards.method]))


def carry_inputs(wildcards):
    """Inputs of a 'carry' TTT job: those of any inference job plus the previous test case's Adam state."""
    inputs = {
        "weights": model_weights(wildcards),
        "slices": str(L.slice_dir(wildcards.case)),
        "liver": str(L.liver_mask(wildcards.case)),
        "sheet": str(L.case_sheet),
    }
    test_cases = cases("test")
    position = test_cases.index(wildcards.case)
    if position > 0:
        inputs["previous_state"] = str(L.ttt_state(wildcards.method, test_cases[position - 1]))
    return inputs


def liver_mask_inputs(wildcards):
    """The CT and reference liver of a case, plus the trained nnU-Net model when the pipeline trains one."""
    inputs = {"image": str(L.image(wildcards.case))}
    if LIVER_BACKEND == "reference":
        inputs["reference"] = str(L.reference_liver(wildcards.case))
    if LIVER_BACKEND == "nnunet" and not (config["liver"].get("nnunet") or {}).get("model_dir"):
        inputs["model"] = str(L.liver_model_flag)
    return inputs


def final_outputs():
    outputs = [L.tables_dir / f"main.{ext}" for ext in ("csv", "md", "tex")]
    outputs += [L.figures_dir / "dice_per_case.png", L.figures_dir / "synthesis_preview.png", L.overlays_dir]
    outputs += [L.per_case_metrics(m) for m in METHODS]
    outputs += [L.dataset_json, L.case_sheet, L.liver_qc_table, L.dataset_summary, L.splits_dir]
    return [str(p) for p in outputs]
