"""Input normalisation, anisotropic diffusion and synthetic tumours painted into healthy liver slices."""
