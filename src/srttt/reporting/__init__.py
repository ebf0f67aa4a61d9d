"""Paper-style tables and figures from the evaluation outputs."""
