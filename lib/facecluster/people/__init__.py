"""What people do with the results: curation with audit and undo, profiles of known users, statistics."""
