"""File formats: NIfTI volumes, HU-encoded PNG slices and atomic writes."""
