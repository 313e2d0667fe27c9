"""Data: the sources a data set is built from, and the prepared (split, standardized, saved) sets."""
