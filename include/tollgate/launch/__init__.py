"""Launching the trainer: one job description, rendered as a spot pod (KubernetesPodOperator) or a local
child process, with every failed attempt classified as a spot preemption or a real failure.

Plain Python (no Airflow, no Kubernetes client): ``job``, ``classify``, ``budget``, ``ledger``, ``local``,
``report``. Airflow-facing: ``attempts``, ``operators``, ``kubernetes``.
"""
