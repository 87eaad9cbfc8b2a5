"""Signed model registration: MLflow registry versions and aliases, OpenSSF model-signing signatures,
in-toto provenance, verification and lineage.

Kept import-free on purpose: ``tollgate.registry.pyfunc_model`` travels inside every logged model's
``code/`` folder, so importing this package must not pull in anything else.
"""
