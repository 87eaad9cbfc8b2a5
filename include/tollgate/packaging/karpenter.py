"""A field-checked model of the Karpenter ``NodePool`` (karpenter.sh/v1) in docker/k8s/.

A custom resource has no schema in ``kubernetes-validate``; this model follows the karpenter.sh/v1 CRD for
the fields the example uses (unknown fields are refused, enums and duration formats are checked).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DURATION = r"^(([0-9]+(s|m|h))+|Never)$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class TemplateMetadata(_Strict):
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class NodeClassRef(_Strict):
    group: str
    kind: str
    name: str


class Requirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[str] = []
    minValues: int | None = Field(default=None, ge=1, le=50)


class Taint(_Strict):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeClaimSpec(_Strict):
    nodeClassRef: NodeClassRef
    requirements: list[Requirement] = Field(max_length=100)
    taints: list[Taint] = []
    startupTaints: list[Taint] = []
    expireAfter: str = Field(default="720h", pattern=DURATION)
    terminationGracePeriod: str | None = Field(default=None, pattern=r"^([0-9]+(s|m|h))+$")


class Template(_Strict):
    metadata: TemplateMetadata = TemplateMetadata()
    spec: NodeClaimSpec


class Budget(_Strict):
    nodes: str = Field(pattern=r"^((100|[0-9]{1,2})%|[0-9]+)$")
    reasons: list[Literal["Underutilized", "Empty", "Drifted"]] | None = None
    schedule: str | None = None
    duration: str | None = Field(default=None, pattern=r"^([0-9]+(m|h))+$")


class Disruption(_Strict):
    consolidationPolicy: Literal["WhenEmpty", "WhenEmptyOrUnderutilized"] = "WhenEmptyOrUnderutilized"
    consolidateAfter: str = Field(pattern=DURATION)
    budgets: list[Budget] = []


class NodePoolSpec(_Strict):
    template: Template
    disruption: Disruption
    limits: dict[str, str] = {}
    weight: int | None = Field(default=None, ge=1, le=100)


class NodePool(_Strict):
    apiVersion: Literal["karpenter.sh/v1"]
    kind: Literal["NodePool"]
    metadata: Metadata
    spec: NodePoolSpec
