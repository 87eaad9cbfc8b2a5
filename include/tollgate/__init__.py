"""Tollgate: from new data to a signed, approved champion model, with a gate at every step."""
