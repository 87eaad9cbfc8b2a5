"""Whatever a pyfunc returns (array, DataFrame, Series, list, dict, scalar) as JSON, and as V2 tensors.

Nothing is assumed about the model: probabilities, classes and values pass through with their types.
"""

from __future__ import annotations

from typing import Any

V2_DATATYPES = {"b": "BOOL", "i": "INT64", "u": "UINT64", "f": "FP64"}


def to_jsonable(output: Any) -> Any:
    """JSON-ready form of a pyfunc output: DataFrames become records, arrays nested lists."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        return [{k: _scalar(v) for k, v in row.items()} for row in output.to_dict(orient="records")]
    if isinstance(output, pd.Series):
        return [_scalar(v) for v in output.tolist()]
    if isinstance(output, np.ndarray):
        return output.tolist()
    if isinstance(output, dict):
        return {str(k): to_jsonable(v) for k, v in output.items()}
    if isinstance(output, list | tuple):
        return [to_jsonable(v) for v in output]
    return _scalar(output)


def _scalar(value: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _tensor(name: str, values: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(values)
    datatype = V2_DATATYPES.get(array.dtype.kind, "BYTES")
    data = array.reshape(-1).tolist() if datatype != "BYTES" else [str(v) for v in array.reshape(-1).tolist()]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def to_v2_outputs(output: Any) -> list[dict[str, Any]]:
    """V2 output tensors: one per DataFrame column or dict key, else one named ``predict``."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        return [_tensor(str(c), output[c].to_numpy()) for c in output.columns]
    if isinstance(output, dict):
        return [_tensor(str(k), v) for k, v in output.items()]
    if isinstance(output, pd.Series):
        output = output.to_numpy()
    return [_tensor("predict", output)]
