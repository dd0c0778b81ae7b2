"""Evaluation: one harness for our models and the established tools, tables, figures, report."""
