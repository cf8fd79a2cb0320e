"""The only code that speaks MongoDB or Qdrant: typed documents, the embedded servers, retries."""
