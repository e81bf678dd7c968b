"""Datasets for the experiments, generated from installed packages (nothing is downloaded)."""
