"""Validate KServe manifests offline against the KServe SDK's own models (run in the kserve tool env).

Reads a JSON list of manifests on stdin and prints a JSON list of problems (empty = valid). Each document
is built into the SDK model of its kind, field by field: KServe's models check required fields, enum
values and types; the Kubernetes models they embed (containers, probes, env) are checked by the
Kubernetes client's own models. The built object must serialize back to the very same document, so a
misspelled or unknown field (which a model would silently drop) is a problem too.
Run by tests/unit/test_serving_manifests.py with the interpreter of `make serving-tools` (.venv-kserve).
"""

import json
import re
import sys

import kserve.models
import kubernetes.client.models

KINDS = {
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}


def build(data, type_name, path):
    inner = re.fullmatch(r"(?:list|List)\[(.+)\]", type_name)
    if inner:
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list")
        return [build(item, inner.group(1), f"{path}[{i}]") for i, item in enumerate(data)]
    mapping = re.fullmatch(r"(?:dict\(str, |Dict\[str, )(.+)[\)\]]", type_name)
    if mapping:
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        return {k: build(v, mapping.group(1), f"{path}.{k}") for k, v in data.items()}
    if type_name in PRIMITIVES:
        if not isinstance(data, PRIMITIVES[type_name]) or (type_name == "int" and isinstance(data, bool)):
            raise ValueError(f"{path}: expected {type_name}, got {data!r}")
        return data
    model = getattr(kserve.models, type_name, None)
    if model is not None and hasattr(model, "attribute_map"):
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object ({type_name})")
        json_names = {json_name: attr for attr, json_name in model.attribute_map.items()}
        unknown = sorted(set(data) - set(json_names))
        if unknown:
            raise ValueError(f"{path}: {unknown} not fields of {type_name}")
        kwargs = {
            attr: build(data[name], model.openapi_types[attr], f"{path}.{name}")
            for name, attr in json_names.items()
            if name in data
        }
        try:
            return model(**kwargs)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} ({type_name}): {err}") from None
    model = getattr(kubernetes.client.models, type_name)
    try:
        obj = model.from_dict(data)
    except Exception as err:
        raise ValueError(f"{path} ({type_name}): {err}") from None
    back = obj.model_dump(by_alias=True, exclude_none=True)
    dropped = differences(data, back, path)
    if dropped:
        raise ValueError("; ".join(dropped))
    return obj


def differences(expected, actual, path):
    found = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                found.append(f"{path}.{key}: not a field of the model (dropped)")
            else:
                found += differences(expected[key], actual[key], f"{path}.{key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            found += differences(e, a, f"{path}[{i}]")
    return found


def main() -> int:
    problems = []
    for doc in json.load(sys.stdin):
        what = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        model = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            problems.append(f"{what}: no KServe model for {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        try:
            build(doc, model, "$")
        except ValueError as err:
            problems.append(f"{what}: {err}")
    json.dump(problems, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
