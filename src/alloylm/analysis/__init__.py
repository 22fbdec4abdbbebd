"""Analysis of results: per-model scores, merge synergy, across-merge statistics, the study report.

synergy (per merge), scores (per model, curves), across (correlation, clusters) are pure
functions; study reads a run folder into numbers; plots and report draw and write them.
"""
