"""Inference: plain prediction, test-time training (TTT) and the entropy-minimisation baseline."""
