"""NIfTI volumes to axial PNG slices and back."""
