"""Metrics between a reference output and a candidate: numeric (any output), task (segmentation, saliency),
and the one table of them (`METRICS`) that gates, budgets and reports ask."""
