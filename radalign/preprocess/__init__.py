"""Preprocessing: choose the frontal view, decode the pixels once, and write the model input."""
