"""Names shared across the layers."""

#: The Ray namespace of facecluster's named actors.
RAY_NAMESPACE = "facecluster"
