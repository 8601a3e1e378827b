"""Whole-project pre-annotation: segment every task of a Label Studio project and push predictions."""
