"""Triplet fine-tuning of a projection head with Ray Train, and switching vector versions."""
