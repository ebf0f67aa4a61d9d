"""LiTS-protocol evaluation of predicted label maps."""
