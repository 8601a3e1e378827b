"""Evaluation of the segmentor: metrics, dataset readers, runs, the ablation and the figure.

Imports the method; the method never imports this package.
"""
