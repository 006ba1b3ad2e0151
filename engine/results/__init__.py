"""Results a paper can use: seed statistics, comparisons, exports, figures and reports."""
