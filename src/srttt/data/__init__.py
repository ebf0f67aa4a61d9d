"""Dataset sources: generated phantoms, the LiTS sample volume, and the case sheet."""
