"""The liver backend of a run: ``liver.backend``, with ``auto`` resolved for the dataset."""

from __future__ import annotations

from srttt.data.cases import has_liver_labels


def liver_backend(config: dict) -> str:
    """Return the liver backend for the configured dataset: ``reference``, ``nnunet`` or ``precomputed``.

    ``auto`` picks ``reference`` where the dataset has liver labels (the demo
    data, LiTS), otherwise ``precomputed`` when ``liver.precomputed_dir`` is
    set, otherwise ``nnunet`` with a trained ``liver.nnunet.model_dir``.
    Raises ValueError with the fix when the choice cannot work for the
    dataset (a reference or a freshly trained nnU-Net needs liver labels).
    """
    liver = config["liver"]
    backend = liver["backend"]
    dataset = config.get("dataset")
    with_labels = has_liver_labels(config)
    model_dir = (liver.get("nnunet") or {}).get("model_dir")
    if backend == "auto":
        if with_labels:
            return "reference"
        if liver.get("precomputed_dir"):
            return "precomputed"
        if model_dir:
            return "nnunet"
        raise ValueError(
            f"dataset '{dataset}' has no liver labels, so liver masks must come from elsewhere: set "
            "liver.precomputed_dir to a folder of <case>.nii.gz masks, or liver.nnunet.model_dir to a trained "
            "nnU-Net liver model (a run with dataset=lits and liver.backend=nnunet trains one under "
            "results/lits/liver_nnunet/)"
        )
    if not with_labels and (backend == "reference" or (backend == "nnunet" and not model_dir)):
        raise ValueError(
            f"liver.backend '{backend}' needs the dataset's liver labels, which '{dataset}' does not have; "
            "use liver.backend auto with liver.precomputed_dir or liver.nnunet.model_dir"
        )
    return backend
