"""The serving router: only verified models, shadow mirroring, sticky canary, hot reload, metrics and a
prediction log. ``python -m tollgate.serving`` runs it; ``tollgate.serving.app.build_app`` builds the
ASGI app.

Nothing here assumes the click-through model: inputs are checked against the model's MLflow signature and
outputs are whatever its pyfunc returns.
"""
