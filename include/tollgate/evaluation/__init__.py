"""Evaluation stage: offline quality gate, evidence for the approver, promotion / rejection / rollback."""
