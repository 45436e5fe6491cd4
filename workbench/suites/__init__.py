"""Experiment suites: a paper's table (models x seeds, trained and evaluated) from one command."""
