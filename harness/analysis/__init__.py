"""Analysis stage: per-step records -> per-cell statistics -> comparisons, tables and plots."""
