"""Write one case of a dataset, and the dataset's ``dataset.json`` and case sheet."""

from __future__ import annotations

import json
import logging

from srttt.data.cases import Case, case_sheet_csv, case_table, find_case, has_lesions
from srttt.io.atomic import write_text
from srttt.layout import Layout
from srttt.seeding import derive_seed

logger = logging.getLogger(__name__)


def write_case(layout: Layout, case: str, config: dict) -> dict:
    """Generate or fetch ``case`` into the MSD layout (imagesTr, labelsTr, liversTr)."""
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


def write_dataset_index(layout: Layout, config: dict) -> None:
    """Write ``dataset.json`` (MSD Task08 style) and ``cases.csv`` for the configured cases."""
    cases = case_table(config)
    missing = [c.case for c in cases if not layout.image(c.case).is_file()]
    if missing:
        raise FileNotFoundError(f"cases missing from {layout.data_dir / 'imagesTr'}: {', '.join(missing)}")
    index = {
        "name": layout.dataset,
        "description": "SR-TTT benchmark data: generated abdominal CT phantoms and the LiTS volume 117 crop",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "liver_labels": "liversTr/ holds a reference liver label per case (0 background, 1 liver)",
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {
                "image": f"./imagesTr/{c.case}.nii.gz",
                "label": f"./labelsTr/{c.case}.nii.gz",
                "liver": f"./liversTr/{c.case}.nii.gz",
                "split": c.split,
                "source": c.source,
            }
            for c in cases
        ],
        "test": [],
    }
    write_text(layout.dataset_json, json.dumps(index, indent=2) + "\n")
    write_text(layout.case_sheet, case_sheet_csv(config))
