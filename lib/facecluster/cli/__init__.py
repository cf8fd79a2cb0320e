"""The `facecluster` console script."""
