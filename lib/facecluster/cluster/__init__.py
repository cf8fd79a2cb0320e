"""Neighbour graphs, clustering methods, clustering runs, incremental matching and cluster-to-profile assignment."""
