"""Write a dataset's case sheet, its cases in the internal layout, and its ``dataset.json``.

The internal layout (``data/<dataset>/``) follows MSD Task08: ``imagesTr/``
(CT in HU), ``labelsTr/`` (0 background, 1 vessel, 2 tumour) and
``liversTr/`` (reference liver 0/1, empty for MSD Task08, which has none).
""" 

from __future__ import annotations

import json
import logging

from pathlib import Path

from srttt.data.cases import (
    Case,
    case_sheet_csv,
    case_table,
    demo_case_table,
    find_case,
    has_lesions,
    has_liver_labels,
    source_config,
)
from srttt.io.atomic import write_text
from srttt.layout import Layout
from srttt.seeding import derive_seed

logger = logging.getLogger(__name__)


def write_case_sheet(layout: Layout, config: dict) -> list[Case]:
    """Write ``data/<dataset>/cases.csv``: the demo cases from params.yaml, or a real dataset's split.

    A real dataset's cases come from ``source.json`` (the fetch stage). Its
    split is ``split_csv`` when set, otherwise seeded from ``seed``.
    """
    source = source_config(config)
    if source is None:
        cases = demo_case_table(config)
    else:
        from srttt.data.fetch import found_case_ids, read_source
        from srttt.data.split import make_split, read_split_csv

        kind, source_cases = read_source(layout)
        ids = [c.case for c in source_cases]
        if source.get("split_csv"):
            # The CSV may list cases that exclude or max_cases left out; they are dropped here.
            split = read_split_csv(Path(source["split_csv"]).expanduser(), found_case_ids(layout))
            left_out = sorted(set(split) - set(ids))
            if left_out:
                logger.info("split CSV: ignoring %d cases left out of this run: %s", len(left_out), ", ".join(left_out))
        else:
            split = make_split(ids, test_fraction=float(source["test_fraction"]), seed=derive_seed(int(config["seed"]), "split"))
        cases = [Case(case, kind, split[case], index) for index, case in enumerate(ids)]
        empty = [name for name in ("train", "test") if not any(c.split == name for c in cases)]
        if empty:
            raise ValueError(
                f"the {config['dataset']} split has no {' or '.join(empty)} case after exclude and max_cases; "
                "change the split CSV, exclude or max_cases"
            )
    write_text(layout.case_sheet, case_sheet_csv(cases))
    logger.info(
        "case sheet %s: %d training and %d test cases",
        layout.case_sheet,
        sum(c.split == "train" for c in cases),
        sum(c.split == "test" for c in cases),
    )
    return cases


def write_case(layout: Layout, case: str, config: dict) -> dict:
    """Generate, fetch or import ``case`` into the internal layout (imagesTr, labelsTr, liversTr)."""
    if source_config(config) is not None:
        return _import_real_case(layout, case, config)
    entry: Case = find_case(config, case)
    if entry.source == "phantom":
        from srttt.data.phantom import make_phantom, write_phantom_case

        phantom_cfg = config["data"]["phantom"]
        phantom = make_phantom(
            derive_seed(int(config["seed"]), "phantom", entry.index),
            shape=tuple(phantom_cfg["shape"]),
            spacing_mm=tuple(phantom_cfg["spacing_mm"]),
            lesions=has_lesions(entry, config),
        )
        write_phantom_case(
            phantom, image_path=layout.image(case), label_path=layout.label(case), liver_path=layout.reference_liver(case)
        )
        summary = {"case": case, "source": "phantom", "lesions": phantom.n_lesions}
    elif entry.source == "lits_sample":
        from srttt.data.lits_sample import fetch_lits_sample

        lits = config["data"]["lits_sample"]
        summary = fetch_lits_sample(
            image_path=layout.image(case),
            label_path=layout.label(case),
            liver_path=layout.reference_liver(case),
            cache_dir=layout.download_cache,
            package=lits["package"],
            version=lits["version"],
            sha256=lits["sha256"],
            spacing_mm=tuple(lits["spacing_mm"]),
            index_url=lits.get("index_url"),
        )
    else:
        raise ValueError(f"case {case}: unknown source '{entry.source}'")
    logger.info("case %s written: %s", case, summary)
    return summary


def _import_real_case(layout: Layout, case: str, config: dict) -> dict:
    from srttt.data.fetch import read_source
    from srttt.data.sources import import_case

    kind, source_cases = read_source(layout)
    by_id = {c.case: c for c in source_cases}
    if case not in by_id:
        raise KeyError(f"case '{case}' is not in {layout.source_json}; rerun the fetch and cases stages")
    layout.reference_liver(case).parent.mkdir(parents=True, exist_ok=True)
    return import_case(
        by_id[case],
        kind,
        image_path=layout.image(case),
        label_path=layout.label(case),
        liver_path=layout.reference_liver(case) if has_liver_labels(config) else None,
    )


DESCRIPTIONS = {
    None: "SR-TTT benchmark data: generated abdominal CT phantoms and the LiTS volume 117 crop",
    "msd08": "MSD Task08 Hepatic Vessel (labelled imagesTr), imported with HU scaling applied",
    "lits": "LiTS training volumes (MSD Task03 or the challenge layout), tumour label kept as 2, liver in liversTr",
}


def write_dataset_index(layout: Layout, config: dict) -> None:
    """Write ``dataset.json`` (MSD Task08 style) for the cases of the case sheet."""
    cases = case_table(config, layout.case_sheet)
    missing = [c.case for c in cases if not layout.image(c.case).is_file()]
    if missing:
        raise FileNotFoundError(f"cases missing from {layout.data_dir / 'imagesTr'}: {', '.join(missing)}")
    source = source_config(config)
    with_liver = has_liver_labels(config)
    index = {
        "name": layout.dataset,
        "description": DESCRIPTIONS[source["kind"] if source else None],
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "liver_labels": (
            "liversTr/ holds a reference liver label per case (0 background, 1 liver)"
            if with_liver
            else "none: this dataset has no liver label; liver masks come from the liver stage"
        ),
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {
                "image": f"./imagesTr/{c.case}.nii.gz",
                "label": f"./labelsTr/{c.case}.nii.gz",
                **({"liver": f"./liversTr/{c.case}.nii.gz"} if with_liver else {}),
                "split": c.split,
                "source": c.source,
            }
            for c in cases
        ],
        "test": [],
    }
    write_text(layout.dataset_json, json.dumps(index, indent=2) + "\n")
