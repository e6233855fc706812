"""Results analysis for sashimi-study: load studies, build tables and plots, and write reports.

It reads what training wrote (results.parquet, run.json, WAV examples) and never modifies a run.
"""
