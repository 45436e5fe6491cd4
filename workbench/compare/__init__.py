"""Several runs side by side: robust accuracy per attack x eps from their saved evaluations (torch-free)."""
