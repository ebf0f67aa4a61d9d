"""Command-line entry points, one subcommand per pipeline stage.

Every subcommand reads its parameters either from ``--params`` files (DVC and
manual runs) or from ``--config-json`` (Snakemake passes the validated config
sections a rule depends on), and takes its paths from ``srttt.layout``
relative to ``--root``. Without ``--case`` a per-case stage runs every case.
``evaluate-folder`` is the exception: it evaluates any folder of predictions
against a folder of references and reads no parameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from srttt.config import ConfigError, load_params
from srttt.layout import METHOD_MODEL, MODELS, Layout

logger = logging.getLogger("srttt")


def _config(args) -> dict:
    if args.config_json:
        try:
            return json.loads(args.config_json)
        except json.JSONDecodeError as error:
            raise ConfigError(f"--config-json is not valid JSON: {error}") from error
    return load_params(*args.params)


def _cases(config: dict, layout: Layout, args, split: str | None = None) -> list[str]:
    from srttt.data.cases import case_table

    if getattr(args, "case", None):
        return [args.case]
    return [c.case for c in case_table(config, layout.case_sheet) if split is None or c.split == split]


def cmd_fetch(args, config, layout):
    from srttt.data.cases import source_config
    from srttt.data.fetch import fetch_source
    from srttt.io.atomic import write_text

    if source_config(config) is None:
        # The demo data needs no download; the record keeps `dvc repro` stages uniform.
        write_text(layout.source_json, json.dumps({"dataset": config["dataset"], "kind": "demo"}, indent=2) + "\n")
        return
    fetch_source(layout, config)


def cmd_cases(args, config, layout):
    from srttt.data.build import write_case_sheet

    write_case_sheet(layout, config)


def cmd_make_case(args, config, layout):
    from srttt.data.build import write_case
    from srttt.data.cases import has_liver_labels

    # DVC tracks liversTr/ as an output, so it exists even where the dataset has no liver label.
    layout.reference_liver("x").parent.mkdir(parents=True, exist_ok=True)
    if not has_liver_labels(config):
        logger.info("dataset %s has no liver labels; liversTr/ stays empty", layout.dataset)
    failed = {}
    for case in _cases(config, layout, args):
        try:
            write_case(layout, case, config)
        except (OSError, ValueError) as error:
            if not args.keep_going:
                raise
            logger.error("case %s failed: %s", case, error)
            failed[case] = str(error)
    if failed:
        raise RuntimeError(
            f"{len(failed)} cases failed ({', '.join(failed)}); fix their files or list them in "
            f"data.sources.{config['dataset']}.exclude, then rerun"
        )


def cmd_dataset_index(args, config, layout):
    from srttt.data.build import write_dataset_index

    write_dataset_index(layout, config)


def _needs_liver_model(config: dict) -> bool:
    from srttt.liver.choice import liver_backend

    return liver_backend(config) == "nnunet" and not (config["liver"].get("nnunet") or {}).get("model_dir")


def _liver_training_cases(config, layout) -> list[str]:
    from srttt.data.cases import case_table

    # Training cases only, so no test case's liver mask comes from a model that saw its label.
    return [
        c.case
        for c in case_table(config, layout.case_sheet)
        if c.split == "train" and layout.reference_liver(c.case).is_file()
    ]


def cmd_train_liver_model(args, config, layout):
    from srttt.io.atomic import write_text
    from srttt.liver.nnunet import train_liver_model

    cases = _liver_training_cases(config, layout)
    model_dir = train_liver_model(layout, cases, config)
    record = {"model_dir": str(model_dir), "cases": cases, "nnunet": config["liver"].get("nnunet") or {}}
    write_text(layout.liver_model_flag, json.dumps(record, indent=2) + "\n")


def _liver_model_is_current(config, layout) -> bool:
    """Return whether the liver model was trained on the current training cases with the current settings."""
    if not layout.liver_model_flag.is_file():
        return False
    record = json.loads(layout.liver_model_flag.read_text(encoding="utf-8"))
    current = {"cases": _liver_training_cases(config, layout), "nnunet": config["liver"].get("nnunet") or {}}
    stale = [key for key, value in current.items() if record.get(key) != value]
    if stale:
        logger.info("retraining the liver model: its %s changed since %s", " and ".join(stale), layout.liver_model_flag)
    return not stale


def cmd_liver(args, config, layout):
    from srttt.liver.backends import write_liver_mask

    if _needs_liver_model(config) and not _liver_model_is_current(config, layout):
        cmd_train_liver_model(args, config, layout)
    for case in _cases(config, layout, args):
        write_liver_mask(layout, case, config)
    if not getattr(args, "case", None):
        cmd_liver_qc(args, config, layout)


def cmd_liver_qc(args, config, layout):
    import pandas as pd

    from srttt.data.cases import case_table
    from srttt.io.atomic import write_text

    rows = [
        json.loads(layout.liver_qc_row(c.case).read_text(encoding="utf-8"))
        for c in case_table(config, layout.case_sheet)
    ]
    write_text(layout.liver_qc_table, pd.DataFrame(rows).to_csv(index=False, float_format="%.6g"))
    warned = [row["case"] for row in rows if row.get("warnings")]
    logger.info("liver QC of %d cases written to %s; warnings for: %s", len(rows), layout.liver_qc_table, warned or "none")


def cmd_slices(args, config, layout):
    from srttt.data.cases import find_case
    from srttt.data.dataset_summary import write_case_summary
    from srttt.slices.convert import convert_case, load_case_volumes

    for case in _cases(config, layout, args):
        volumes = load_case_volumes(layout, case)
        convert_case(layout, case, find_case(config, case, layout.case_sheet).split, volumes)
        write_case_summary(layout, case, volumes)


def cmd_manifest(args, config, layout):
    from srttt.data.cases import case_table
    from srttt.data.dataset_summary import write_dataset_summary, write_split_manifests
    from srttt.liver.choice import liver_backend
    from srttt.slices.convert import merge_manifests

    cases = case_table(config, layout.case_sheet)
    manifest = merge_manifests(layout, [c.case for c in cases])
    write_split_manifests(layout, cases, manifest, liver_source=liver_backend(config))
    write_dataset_summary(layout, [c.case for c in cases])


def cmd_train(args, config, layout):
    from srttt.tracking import log_run
    from srttt.training.train import train_model

    if args.model:
        models = [args.model]
    else:
        models = sorted({METHOD_MODEL[method] for method in config["methods"]})
    for model in models:
        history = train_model(layout, model, config)
        steps = [
            (name, float(value), int(row["epoch"]))
            for row in history.to_dict("records")
            for name, value in row.items()
            if name != "epoch"
        ]
        log_run(
            root=args.root,
            experiment=config["mlflow"]["experiment"],
            run_name=f"{layout.dataset}/train/{model}",
            tags={"stage": "train", "dataset": layout.dataset, "model": model},
            params={k: config[k] for k in ("seed", "slices", "synthesis", "diffusion", "model", "train")},
            step_metrics=steps,
            artifacts=[layout.history(model)],
        )


def cmd_infer(args, config, layout):
    from srttt.data.cases import cases_in_split
    from srttt.inference.predict_case import predict_case

    test_cases = cases_in_split(config, "test", layout.case_sheet)
    for method in [args.method] if args.method else config["methods"]:
        for case in _cases(config, layout, args, split="test"):
            if case not in test_cases:
                raise KeyError(f"case '{case}' is not a test case of {layout.case_sheet}")
            # The 'carry' TTT policy continues from the test case before this one.
            position = test_cases.index(case)
            previous = test_cases[position - 1] if position > 0 else None
            predict_case(layout, method, case, config, previous_case=previous)


def cmd_evaluate(args, config, layout):
    from srttt.evaluation.stage import evaluate_method
    from srttt.tracking import log_run

    for method in [args.method] if args.method else config["methods"]:
        per_case, summary = evaluate_method(layout, method, config)
        metrics = {f"summary.{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        for row in per_case.to_dict("records"):
            for name, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[f"{row['case']}.{name}"] = float(value)
        log_run(
            root=args.root,
            experiment=config["mlflow"]["experiment"],
            run_name=f"{layout.dataset}/evaluate/{method}",
            tags={"stage": "evaluate", "dataset": layout.dataset, "method": method, "model": METHOD_MODEL[method]},
            params={"method": method, "ttt": config["ttt"], "model": config["model"], "seed": config["seed"]},
            metrics=metrics,
            artifacts=[layout.per_case_metrics(method), layout.summary_metrics(method)],
        )


def cmd_report(args, config, layout):
    import pandas as pd

    from srttt.data.cases import cases_in_split
    from srttt.reporting.figures import plot_dice_per_case, plot_overlay
    from srttt.reporting.tables import write_tables
    from srttt.tracking import log_run

    methods = list(config["methods"])
    per_case = {m: pd.read_csv(layout.per_case_metrics(m)) for m in methods}
    summaries = {m: pd.read_csv(layout.summary_metrics(m)).iloc[0].to_dict() for m in methods}
    ttt = config["ttt"]
    caption = (
        f"Tumour segmentation on '{layout.dataset}': mean ± std over test cases; Global Dice, "
        "detection and burden columns are dataset-level. "
        f"TTT: {ttt['iterations']} iterations, lr {ttt['lr']}, Adam state 'reset' (fresh per slice) or 'carry' "
        f"(kept across the test set, cases in case-sheet order) as named; TENT: {config['tent']['iterations']} iterations, "
        f"lr {config['tent']['lr']}; "
        f"U-Net width {config['model']['width']}, {config['train']['epochs']} "
        f"epoch{'' if int(config['train']['epochs']) == 1 else 's'}."
    )
    paths = write_tables(per_case, summaries, layout.tables_dir, caption=caption)
    figures = [plot_dice_per_case(per_case, layout.figures_dir / "dice_per_case.png")]
    for case in cases_in_split(config, "test", layout.case_sheet):
        figures.append(plot_overlay(layout, case, methods, layout.overlays_dir / f"{case}.png"))
    log_run(
        root=args.root,
        experiment=config["mlflow"]["experiment"],
        run_name=f"{layout.dataset}/report",
        tags={"stage": "report", "dataset": layout.dataset},
        params={"methods": methods, "ttt": ttt},
        artifacts=[*paths, *figures],
    )


def cmd_evaluate_folder(args) -> None:
    from srttt.evaluation.folder import evaluate_folder, write_results

    results = evaluate_folder(
        args.predictions,
        args.references,
        livers=args.livers,
        reference_liver_label=args.reference_liver_label,
        surface=args.surface,
    )
    write_results(results, args.out, args.summary)


def _add_evaluate_folder(subparsers) -> None:
    sub = subparsers.add_parser(
        "evaluate-folder", help="evaluate a folder of predicted label maps against a folder of references"
    )
    sub.add_argument("--predictions", type=Path, required=True, help="folder of <case>.nii.gz, 1 liver / 2 tumour")
    sub.add_argument("--references", type=Path, required=True, help="folder of <case>.nii.gz, 2 tumour")
    sub.add_argument("--livers", type=Path, help="folder of <case>.nii.gz reference liver masks (0/1)")
    sub.add_argument(
        "--reference-liver-label",
        type=int,
        help="take the reference liver from this label of the references (1 for LiTS), plus the tumour",
    )
    sub.add_argument("--out", type=Path, required=True, help="per-case CSV to write")
    sub.add_argument("--summary", type=Path, help="summary CSV to write (one row)")
    sub.add_argument(
        "--surface", choices=("voxel", "surfel"), default="voxel", help="surface definition (default: voxel, MedPy)"
    )
    sub.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def cmd_make_mirror(args) -> None:
    from srttt.data.mirror import build_lits_challenge_folder, build_msd_archive

    if args.task == "lits-challenge":
        folder = build_lits_challenge_folder(args.out, n_cases=args.cases, seed=args.seed)
        logger.info("LiTS challenge layout written to %s; set data.sources.lits.path to it", folder)
        return
    tar_path, md5 = build_msd_archive(args.out, args.task, n_cases=args.cases, seed=args.seed)
    dataset = "msd08" if args.task == "Task08_HepaticVessel" else "lits"
    logger.info("%s written (md5 %s); set data.sources.%s.path to it and .md5 to the digest", tar_path, md5, dataset)
    if dataset == "msd08":
        logger.info("liver masks for liver.precomputed_dir: %s", Path(args.out) / "Task08_livers")


def _add_make_mirror(subparsers) -> None:
    sub = subparsers.add_parser(
        "make-mirror",
        help="write a small phantom dataset in the real MSD or LiTS layout, to try the real-data path offline",
    )
    sub.add_argument("--out", type=Path, required=True, help="new folder to write into")
    sub.add_argument(
        "--task", choices=("Task08_HepaticVessel", "Task03_Liver", "lits-challenge"), required=True,
        help="which layout to imitate",
    )
    sub.add_argument("--cases", type=int, default=6, help="labelled cases (at least 3)")
    sub.add_argument("--seed", type=int, default=0, help="phantom seed")
    sub.add_argument("-v", "--verbose", action="store_true", help="log debug messages")


def cmd_synth_preview(args, config, layout):
    from srttt.reporting.preview import write_synthesis_preview

    write_synthesis_preview(layout, config, layout.figures_dir / "synthesis_preview.png", samples=args.samples)


COMMANDS = {
    "fetch": (cmd_fetch, "download or locate a real dataset's source and list its cases (source.json)"),
    "cases": (cmd_cases, "write the case sheet data/<dataset>/cases.csv with each case's split"),
    "make-case": (cmd_make_case, "generate, fetch or import cases into data/<dataset>/ (MSD layout)"),
    "dataset-index": (cmd_dataset_index, "write dataset.json"),
    "train-liver-model": (cmd_train_liver_model, "train the nnU-Net liver model on cases with reference livers"),
    "liver": (cmd_liver, "write liver masks with the configured backend"),
    "liver-qc": (cmd_liver_qc, "merge the per-case liver QC records into one table"),
    "slices": (cmd_slices, "convert cases to PNG slices with manifest and geometry sidecar"),
    "manifest": (cmd_manifest, "merge per-case slice manifests into the dataset manifest"),
    "train": (cmd_train, "train the baseline and SR-TTT models"),
    "infer": (cmd_infer, "segment test cases (with or without test-time training)"),
    "evaluate": (cmd_evaluate, "compute LiTS-protocol metrics per case and method"),
    "report": (cmd_report, "write the main table and figures"),
    "synth-preview": (cmd_synth_preview, "write a PNG grid of synthetic training samples"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srttt", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
        )
        sub.add_argument("--params", nargs="+", default=["params.yaml"], help="parameter files, later ones override")
        sub.add_argument("--config-json", help="parameters as JSON (used by Snakemake instead of --params)")
        sub.add_argument("--root", type=Path, default=Path("."), help="project root holding data/ and results/")
        sub.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
        if name in ("make-case", "liver", "slices", "infer"):
            sub.add_argument("--case", help="one case id (default: every case of the stage)")
        if name == "make-case":
            sub.add_argument(
                "--keep-going", action="store_true",
                help="import the other cases when one fails, then exit with an error listing the failures",
            )
        if name == "train":
            sub.add_argument("--model", choices=MODELS, help="one model (default: those the methods need)")
        if name == "synth-preview":
            sub.add_argument("--samples", type=int, default=8, help="number of synthetic draws shown")
        if name in ("infer", "evaluate"):
            sub.add_argument("--method", choices=list(METHOD_MODEL), help="one method (default: params.yaml methods)")
    _add_evaluate_folder(subparsers)
    _add_make_mirror(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "evaluate-folder":
            cmd_evaluate_folder(args)
            return 0
        if args.command == "make-mirror":
            cmd_make_mirror(args)
            return 0
        config = _config(args)
        layout = Layout(dataset=config["dataset"], root=args.root)
        COMMANDS[args.command][0](args, config, layout)
    except (ConfigError, OSError, KeyError, ValueError, RuntimeError) as error:
        logger.error("%s failed: %s", args.command, error)
        return 1
    return 0
