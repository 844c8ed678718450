"""Paper-style tables built from the metrics files of runs that really happened."""
