"""Liver-mask backends: each writes one liver mask NIfTI per case in the CT's geometry."""
