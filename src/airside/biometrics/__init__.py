"""Templates, embedding contracts, scores, thresholds and gallery indexes."""
