"""The shipped examples, one folder each; ``TOLLGATE_EXAMPLE`` picks one at run time.

* ``ctr``: click-through prediction on ad impressions (binary; the default);
* ``digits``: handwritten digits from scikit-learn (multiclass image classification, a small CNN).

Each folder's ``__init__`` exposes ``EXAMPLE = tollgate.extensions.Example(...)``. The core
(``dags/``, ``include/tollgate/``) never imports this package; it loads the configured example by name.
"""
