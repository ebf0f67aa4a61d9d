"""Fetch a real dataset's source: download or take the local archive, extract it, list its cases.

The result is ``data/<dataset>/source.json``: the dataset kind, the folder
with the dataset layout, where it came from, and the labelled cases with their
image and label files relative to that folder. Later stages read it instead
of searching the folder again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from srttt.data.archive import safe_extract
from srttt.data.cases import source_config
from srttt.data.download import ChecksumError, download, file_digest
from srttt.data.sources import SourceCase, discover_cases, find_dataset_root
from srttt.io.atomic import write_text
from srttt.layout import Layout

logger = logging.getLogger(__name__)


def fetch_source(layout: Layout, config: dict) -> dict:
    """Make the configured dataset's source available and write ``source.json``; return its content."""
    source = source_config(config)
    if source is None:
        raise ValueError(f"dataset '{config['dataset']}' is not a real dataset; it has no entry under data.sources")
    name = f"data.sources.{config['dataset']}"
    kind = source["kind"]

    archive = None
    if source.get("path"):
        local = Path(os.path.expanduser(source["path"]))
        if local.is_dir():
            extracted = local
        elif local.is_file():
            archive = local
            _check_local_archive(local, source.get("md5"), name)
        else:
            raise FileNotFoundError(f"{name}.path: {local} is neither a folder nor an archive; fix the path in params.yaml")
    elif source.get("url"):
        filename = Path(urlparse(source["url"]).path).name or f"{config['dataset']}.tar"
        archive = download(source["url"], layout.download_cache / filename, md5=source.get("md5"))
    else:
        raise ValueError(f"{name}: set url (to download) or path (a local archive or folder) in params.yaml")

    if archive is not None:
        extracted = safe_extract(archive, layout.source_dir)
    root = find_dataset_root(extracted, kind)
    cases = discover_cases(root, kind)
    found = [c.case for c in cases]
    excluded = set(source.get("exclude") or [])
    unknown = sorted(excluded - {c.case for c in cases})
    if unknown:
        raise ValueError(f"{name}.exclude lists {unknown}, which {root} does not have; fix the case ids")
    if excluded:
        cases = [c for c in cases if c.case not in excluded]
        logger.info("leaving out %d excluded cases: %s", len(excluded), ", ".join(sorted(excluded)))
    if source.get("max_cases"):
        cases = cases[: int(source["max_cases"])]
        logger.info("keeping the first %d cases (%s.max_cases)", len(cases), name)

    record = {
        "dataset": config["dataset"],
        "kind": kind,
        "root": str(root.resolve()),
        "archive": str(archive) if archive is not None else None,
        "md5": source.get("md5") if archive is not None else None,
        # Every labelled case found, before exclude and max_cases, so that a user split CSV may list them all.
        "found": found,
        "cases": [
            {"case": c.case, "image": str(c.image.relative_to(root)), "label": str(c.label.relative_to(root))}
            for c in cases
        ],
    }
    write_text(layout.source_json, json.dumps(record, indent=2) + "\n")
    logger.info("%s: %d labelled %s cases in %s", config["dataset"], len(cases), kind, root)
    return record


def _check_local_archive(path: Path, md5: str | None, name: str) -> None:
    if not md5:
        logger.warning("%s: no md5 set, so %s is used unverified", name, path)
        return
    actual = file_digest(path, "md5")
    if actual != md5.lower():
        raise ChecksumError(
            f"{path}: md5 {actual} differs from {name}.md5 {md5}; the file is corrupt or a different release. "
            f"Download it again, or set {name}.md5 to the digest of the archive you trust (null skips the check)"
        )


def found_case_ids(layout: Layout) -> list[str]:
    """Return every labelled case id the fetch stage found, including excluded ones."""
    record = json.loads(layout.source_json.read_text(encoding="utf-8"))
    return list(record.get("found") or [c["case"] for c in record["cases"]])


def read_source(layout: Layout) -> tuple[str, list[SourceCase]]:
    """Return the kind and the cases recorded in ``source.json`` by :func:`fetch_source`."""
    path = layout.source_json
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run the fetch stage first (`python -m srttt fetch`)")
    record = json.loads(path.read_text(encoding="utf-8"))
    root = Path(record["root"])
    cases = [SourceCase(c["case"], root / c["image"], root / c["label"]) for c in record["cases"]]
    return record["kind"], cases
