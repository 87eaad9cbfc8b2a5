"""Check request input against a model's MLflow signature and turn it into what its pyfunc expects.

Two request shapes: JSON rows for ``POST /predict`` (``{"rows": [{field: value, ...}, ...]}``, or lists
of values for a tensor signature) and Open Inference Protocol (V2) inputs, one named input per column.
Any problem is an ``InputError`` naming the field, answered 422; nothing here may crash the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# V2 datatypes accepted for each MLflow column type.
V2_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("BOOL",),
    "integer": ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"),
    "long": ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"),
    "float": ("FP16", "FP32", "FP64"),
    "double": ("FP16", "FP32", "FP64"),
    "string": ("BYTES",),
    "binary": ("BYTES",),
    "datetime": ("BYTES",),
}
MAX_ROWS = 10_000
NUMPY_TYPES = {
    "long": "int64",
    "integer": "int32",
    "double": "float64",
    "float": "float32",
    "boolean": "bool",
}


class InputError(ValueError):
    """Bad request input; ``field`` names the offending field (or None for the request as a whole)."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow DataType name: long, double, string, boolean, datetime, ...
    required: bool = True


def _value_ok(kind: str, value: Any) -> bool:
    if kind in ("integer", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("string", "binary"):
        return isinstance(value, str)
    if kind == "datetime":
        if not isinstance(value, str):
            return False
        import pandas as pd

        try:  # ISO 8601 only: one unambiguous text form for every client
            pd.to_datetime(value, format="ISO8601")
        except (ValueError, TypeError):
            return False
        return True
    return True  # a type this router does not know is left to the model's own enforcement


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: named columns, a tensor (dtype, shape) or anything (no signature)."""

    columns: tuple[Column, ...] | None = None
    tensor_dtype: str | None = None
    tensor_shape: tuple[int, ...] | None = None

    @classmethod
    def from_pyfunc(cls, pyfunc: Any) -> InputSpec:
        schema = pyfunc.metadata.get_input_schema()
        if schema is None:
            return cls()
        if schema.is_tensor_spec():
            spec = schema.inputs[0]
            return cls(tensor_dtype=str(spec.type), tensor_shape=tuple(spec.shape))
        return cls(
            columns=tuple(
                Column(c.name, getattr(c.type, "name", str(c.type)), bool(getattr(c, "required", True)))
                for c in schema.inputs
            )
        )

    def describe(self) -> dict[str, Any]:
        if self.columns is not None:
            return {
                "columns": [{"name": c.name, "type": c.type, "required": c.required} for c in self.columns]
            }
        if self.tensor_dtype is not None:
            return {"tensor": {"dtype": self.tensor_dtype, "shape": list(self.tensor_shape or ())}}
        return {"any": True}

    # ---- POST /predict -------------------------------------------------------------------------
    def from_rows(self, rows: Any, limit: int | None = MAX_ROWS) -> Any:
        """The model input for a request's rows (``limit=None``: the shadow's batches of many requests)."""
        if not isinstance(rows, list) or not rows:
            raise InputError('"rows" must be a non-empty list of rows', "rows")
        if limit is not None and len(rows) > limit:
            raise InputError(f"at most {limit} rows per request, got {len(rows)}", "rows")
        if self.tensor_dtype is not None:
            return self._tensor(rows, "rows")
        if self.columns is None:
            import pandas as pd

            if not all(isinstance(r, dict) for r in rows):
                raise InputError("each row must be an object of field: value", "rows")
            return pd.DataFrame(rows)
        data: dict[str, list[Any]] = {c.name: [] for c in self.columns}
        known = {c.name: c for c in self.columns}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"row {i} must be an object of field: value", f"rows[{i}]")
            extra = sorted(set(row) - set(known))
            if extra:
                raise InputError(
                    f"row {i} has field {extra[0]!r}, which the model's signature does not have "
                    f"(expected {', '.join(known)})",
                    extra[0],
                )
            for column in self.columns:
                data[column.name].append(self._checked(column, row, i))
        return self._frame(data)

    def _checked(self, column: Column, row: dict[str, Any], i: int) -> Any:
        if column.name not in row or row[column.name] is None:
            if column.required:
                what = "missing" if column.name not in row else "null"
                raise InputError(
                    f"row {i}: field {column.name!r} is {what} ({column.type} required)", column.name
                )
            return None
        value = row[column.name]
        if not _value_ok(column.type, value):
            raise InputError(
                f"row {i}: field {column.name!r} must be {column.type}"
                f"{' (ISO 8601 text)' if column.type == 'datetime' else ''}, "
                f"got {type(value).__name__} {value!r:.40}",
                column.name,
            )
        return value

    def _frame(self, data: dict[str, list[Any]]) -> Any:
        """One typed numpy array per column, then one DataFrame: the cheap way (no per-column astype)."""
        import numpy as np
        import pandas as pd

        arrays: dict[str, Any] = {}
        for column in self.columns or ():
            values = data[column.name]
            if column.type == "datetime":
                arrays[column.name] = pd.to_datetime(values, utc=True, format="ISO8601")
            elif column.type in NUMPY_TYPES and None not in values:
                arrays[column.name] = np.asarray(values, dtype=NUMPY_TYPES[column.type])
            else:
                arrays[column.name] = np.asarray(values, dtype=object)
        return pd.DataFrame(arrays, copy=False)

    def _tensor(self, values: Any, field: str) -> Any:
        import numpy as np

        try:
            array = np.asarray(values, dtype=self.tensor_dtype)
        except (ValueError, TypeError) as err:
            raise InputError(f"{field} is not a {self.tensor_dtype} tensor: {err}", field) from None
        shape = self.tensor_shape or ()
        if array.ndim != len(shape) or any(
            s not in (-1, a) for s, a in zip(shape, array.shape, strict=False)
        ):
            raise InputError(f"{field} has shape {list(array.shape)}, the model takes {list(shape)}", field)
        return array

    # ---- POST /v2/models/{name}/infer ------------------------------------------------------------
    def from_v2(self, body: Any) -> Any:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise InputError('"inputs" must be a non-empty list of tensors', "inputs")
        tensors: dict[str, dict[str, Any]] = {}
        for i, item in enumerate(inputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InputError(f"inputs[{i}] must have a name, shape, datatype and data", f"inputs[{i}]")
            for key in ("shape", "datatype", "data"):
                if key not in item:
                    raise InputError(f"input {item['name']!r} has no {key!r}", item["name"])
            tensors[item["name"]] = item
        if self.tensor_dtype is not None:
            if len(tensors) != 1:
                raise InputError("this model takes exactly one input tensor", "inputs")
            ((name, item),) = tensors.items()
            import numpy as np

            return self._tensor(np.asarray(item["data"]).reshape(item["shape"]).tolist(), name)
        columns = self.columns or tuple(Column(n, "any") for n in tensors)
        known = {c.name for c in columns}
        extra = sorted(set(tensors) - known)
        if extra:
            raise InputError(
                f"input {extra[0]!r} is not in the model's signature (expected {', '.join(sorted(known))})",
                extra[0],
            )
        rows = None
        data: dict[str, list[Any]] = {}
        for column in columns:
            item = tensors.get(column.name)
            if item is None:
                if column.required:
                    raise InputError(
                        f"input {column.name!r} is missing ({column.type} required)", column.name
                    )
                continue
            allowed = V2_TYPES.get(column.type)
            if allowed and item["datatype"] not in allowed:
                raise InputError(
                    f"input {column.name!r} has datatype {item['datatype']}, the model's "
                    f"{column.type} column takes {' or '.join(allowed)}",
                    column.name,
                )
            values = item["data"]
            shape = item["shape"]
            if not isinstance(values, list) or not isinstance(shape, list) or not shape:
                raise InputError(f"input {column.name!r} needs a list shape and flat list data", column.name)
            if rows is None:
                rows = shape[0]
            if shape[0] != rows or len(values) != rows:
                raise InputError(
                    f"input {column.name!r} has {len(values)} values for shape {shape}; every input needs "
                    f"{rows} rows",
                    column.name,
                )
            for i, value in enumerate(values):
                if value is None and column.required:
                    raise InputError(f"input {column.name!r} value {i} is null", column.name)
                if value is not None and column.type in ("float", "double") and isinstance(value, int):
                    value = float(value)
                if value is not None and column.type != "any" and not _value_ok(column.type, value):
                    raise InputError(
                        f"input {column.name!r} value {i} must be {column.type}, got {value!r:.40}",
                        column.name,
                    )
            data[column.name] = values
        if not rows or rows > MAX_ROWS:
            raise InputError(f"between 1 and {MAX_ROWS} rows per request", "inputs")
        if self.columns is None:
            import pandas as pd

            return pd.DataFrame(data)
        for column in self.columns:
            data.setdefault(column.name, [None] * rows)
        return self._frame(data)
