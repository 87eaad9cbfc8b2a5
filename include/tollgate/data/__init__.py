"""Data stage: landing-area source, Great Expectations gate with quarantine, DVC dataset versions."""
