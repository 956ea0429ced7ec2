"""Request bodies checked against a model version's MLflow signature, and the Open Inference Protocol (v2)
translated to and from MLflow's scoring format.

Pure functions on parsed JSON: no I/O, no Django. The gateway runs them on its hot path, so the checks walk
the values once, type by type, and stop at the first problem per column.

What is checked (MLflow's scoring server would refuse the same bodies, less clearly and a few milliseconds
later):

- column-based signatures (``double``, ``float``, ``long``, ``integer``, ``boolean``, ``string``, ``binary``,
  ``datetime``; ``required``): every required column present, every value of the column's type, for
  ``dataframe_split``, ``dataframe_records``, ``instances`` given as records, ``inputs`` given by column, and
  Open Inference Protocol inputs named by column. Columns the signature does not name pass (MLflow drops them);
  types it does not know here (arrays, objects, maps) pass unchecked;
- tensor-based signatures, loosely: the number of dimensions, fixed dimensions, and the kind of the elements
  (numbers, integers, booleans, strings) against the dtype;
- no signature: nothing beyond the body being one of MLflow's formats.

Errors are :class:`InputError` with a message and ``fields`` (column -> problems), e.g. ``missing required column
`amount``` or ```age`: expected long, got string "x" (row 3)``.
"""
from __future__ import annotations

import math
from typing import Any

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MAX_ERRORS = 20

_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)


class InputError(Exception):
    """A client's body does not fit the deployment's model: a 400 naming the column (or field) and the problem."""

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


# --------------------------------------------------------------------------------------------------------
# Values


def describe(value: Any) -> str:
    """A value as an error message names it: its JSON-ish type and a short rendering."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'string "{shown}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _ok_number(value: Any) -> bool:
    kind = type(value)
    return kind is float or kind is int


def _ok_long(value: Any) -> bool:
    return type(value) is int and _INT64[0] <= value <= _INT64[1]


def _ok_integer(value: Any) -> bool:
    return type(value) is int and _INT32[0] <= value <= _INT32[1]


def _ok_bool(value: Any) -> bool:
    return type(value) is bool


def _ok_str(value: Any) -> bool:
    return type(value) is str


def _ok_datetime(value: Any) -> bool:
    kind = type(value)
    return kind is str or kind is int or kind is float


# Column type -> (value check, may a required column hold null). Null in a double/float column is NaN to
# pandas; in an integer or boolean column MLflow cannot convert it; strings and binaries are objects.
COLUMN_CHECKS = {
    "double": (_ok_number, True),
    "float": (_ok_number, True),
    "long": (_ok_long, False),
    "integer": (_ok_integer, False),
    "boolean": (_ok_bool, False),
    "string": (_ok_str, False),
    "binary": (_ok_str, False),
    "datetime": (_ok_datetime, False),
}


# Column type -> the Python types (as orjson parses JSON) that always fit it: a column whose values' types are
# all in the set passes without a per-value check (a set comprehension runs in C; long and integer still get
# a min/max range check).
FITTING_TYPES = {
    "double": {float, int}, "float": {float, int}, "long": {int}, "integer": {int}, "boolean": {bool},
    "string": {str}, "binary": {str}, "datetime": {str, int, float},
}
INT_RANGES = {"long": _INT64, "integer": _INT32}


class Column:
    """One column of a column-based signature."""

    __slots__ = ("check", "fitting", "name", "null_ok", "range", "required", "type")

    def __init__(self, name: str, type_: str, required: bool):
        self.name = name
        self.type = type_
        self.required = required
        check = COLUMN_CHECKS.get(type_)
        self.check = check[0] if check else None
        self.null_ok = (check[1] if check else True) or not required
        fitting = FITTING_TYPES.get(type_)
        self.fitting = (frozenset(fitting | ({type(None)} if self.null_ok else set()))
                        if fitting is not None else None)
        self.range = INT_RANGES.get(type_)

    def fits_all(self, values) -> bool:
        """True when every value surely fits (fast path); False: look value by value."""
        if self.fitting is None:
            return True
        types = set(map(type, values))  # map + set run in C: no Python loop per value
        if not types <= self.fitting:
            return False
        if self.range is not None:
            numbers = [value for value in values if value is not None] if type(None) in types else values
            if numbers and (min(numbers) < self.range[0] or max(numbers) > self.range[1]):
                return False
        return True

    def problem(self, value: Any) -> str | None:
        """None when ``value`` fits this column, else what is wrong with it."""
        if value is None:
            return None if self.null_ok else f"expected {self.type}, got null (the column is required)"
        if self.check is None or self.check(value):
            return None
        if self.type in ("long", "integer") and type(value) is int:
            return f"expected {self.type}, got {describe(value)} (out of range)"
        return f"expected {self.type}, got {describe(value)}"


class Tensor:
    """One tensor of a tensor-based signature."""

    __slots__ = ("dtype", "name", "shape")

    def __init__(self, name: str | None, dtype: str, shape: list[int] | None):
        self.name = name
        self.dtype = dtype
        self.shape = shape


def _dtype_check(dtype: str):
    if dtype.startswith(("float", "double")):
        return _ok_number, "number"
    if dtype.startswith(("int", "uint")):
        return (lambda v: type(v) is int), "integer"
    if dtype in ("bool", "boolean"):
        return _ok_bool, "boolean"
    if dtype in ("str", "string", "bytes", "unicode"):
        return _ok_str, "string"
    return None, None


def _maybe_json(value: Any) -> Any:
    # MLflow's Signature.to_dict() holds each part as a JSON string; a route may carry either form.
    if isinstance(value, str):
        import orjson

        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


class Signature:
    """A model version's MLflow signature, compiled for checking requests.

    ``kind`` is ``"columns"`` (named columns), ``"tensors"`` or ``"unchecked"`` (a shape this module does not
    check: unnamed columns, an empty schema).
    """

    def __init__(self, doc: dict):
        self.doc = doc
        inputs = _maybe_json(doc.get("inputs")) or []
        outputs = _maybe_json(doc.get("outputs")) or []
        self.columns: list[Column] = []
        self.tensors: list[Tensor] = []
        self.outputs = outputs if isinstance(outputs, list) else []
        self.inputs_raw = inputs if isinstance(inputs, list) else []
        specs = [spec for spec in self.inputs_raw if isinstance(spec, dict)]
        if specs and all(spec.get("type") == "tensor" for spec in specs):
            self.kind = "tensors"
            for spec in specs:
                tensor_spec = spec.get("tensor-spec") or {}
                shape = tensor_spec.get("shape")
                self.tensors.append(Tensor(spec.get("name"), str(tensor_spec.get("dtype") or ""),
                                           list(shape) if isinstance(shape, (list, tuple)) else None))
        elif specs and all(isinstance(spec.get("name"), str) for spec in specs):
            self.kind = "columns"
            self.columns = [Column(spec["name"], str(spec.get("type") or ""), bool(spec.get("required", True)))
                            for spec in specs]
        else:
            self.kind = "unchecked"
        self.by_name = {column.name: column for column in self.columns}

    @classmethod
    def parse(cls, doc: Any) -> Signature | None:
        """The compiled signature of a route variant, or None (no signature: nothing to check)."""
        doc = _maybe_json(doc)
        if not isinstance(doc, dict):
            return None
        return cls(doc)


# --------------------------------------------------------------------------------------------------------
# MLflow scoring bodies


class _Errors:
    """Problems gathered per column; the first problem of each column only."""

    def __init__(self):
        self.fields: dict[str, list[str]] = {}

    def add(self, field: str, problem: str) -> None:
        if field not in self.fields:
            self.fields[field] = [problem]

    def full(self) -> bool:
        return len(self.fields) >= MAX_ERRORS

    def raise_if_any(self) -> None:
        if self.fields:
            first_field, (first_problem,) = next(iter(self.fields.items()))
            more = len(self.fields) - 1
            message = (first_problem if first_problem.startswith("missing required")
                       else f"`{first_field}`: {first_problem}")
            if more:
                message += f" (and {more} more field{'s' if more > 1 else ''})"
            raise InputError(message, self.fields)


def mlflow_format(body: Any) -> str:
    """Which of MLflow's formats ``body`` uses; InputError unless exactly one."""
    if not isinstance(body, dict):
        raise InputError("the body must be a JSON object with one of: " + ", ".join(MLFLOW_FORMATS),
                         {"body": [f"expected an object, got {describe(body)}"]})
    found = [key for key in MLFLOW_FORMATS if key in body]
    if len(found) != 1:
        got = ", ".join(found) if found else ", ".join(list(body)[:10]) or "no field"
        raise InputError(f"the body must have exactly one of {', '.join(MLFLOW_FORMATS)}; got {got}",
                         {"body": [f"expected one of {', '.join(MLFLOW_FORMATS)}"]})
    return found[0]


def check_mlflow(body: Any, signature: Signature | None) -> str:
    """Check an MLflow scoring body against ``signature``; return its format. Raises InputError."""
    fmt = mlflow_format(body)
    if signature is None or signature.kind == "unchecked":
        return fmt
    data = body[fmt]
    if signature.kind == "columns":
        if fmt == "dataframe_split":
            _check_split(data, signature)
        elif fmt == "dataframe_records":
            _check_records(data, signature, "dataframe_records")
        elif fmt == "instances":
            if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
                _check_records(data, signature, "instances")
            elif isinstance(data, dict):
                _check_columns(data, signature, "instances")
            elif not isinstance(data, list):
                raise InputError("`instances` must be an array", {"instances": ["expected an array"]})
        elif isinstance(data, dict):  # inputs by column
            _check_columns(data, signature, "inputs")
    elif fmt in ("instances", "inputs"):
        _check_tensors(data, signature, fmt)
    return fmt


def _check_split(data: Any, signature: Signature) -> None:
    if not isinstance(data, dict):
        raise InputError("`dataframe_split` must be an object with `columns` and `data`",
                         {"dataframe_split": [f"expected an object, got {describe(data)}"]})
    columns = data.get("columns")
    rows = data.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise InputError("`dataframe_split.columns` must be an array of column names",
                         {"dataframe_split.columns": ["expected an array of strings"]})
    if not isinstance(rows, list):
        raise InputError("`dataframe_split.data` must be an array of rows",
                         {"dataframe_split.data": [f"expected an array, got {describe(rows)}"]})
    width = len(columns)
    # Every row a list of `width` values, checked in C first; the loop below only finds the row to name.
    if rows and (set(map(type, rows)) != {list} or set(map(len, rows)) != {width}):
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != width:
                got = f"{len(row)} values" if isinstance(row, list) else describe(row)
                raise InputError(f"`dataframe_split.data` row {index}: expected {width} values (one per column), "
                                 f"got {got}", {"dataframe_split.data": [f"row {index}: expected {width} values"]})
    position = {name: i for i, name in enumerate(columns)}
    by_column = list(zip(*rows, strict=True)) if rows else [()] * width  # the values of each column, in C
    errors = _Errors()
    for column in signature.columns:
        i = position.get(column.name)
        if i is None:
            if column.required:
                errors.add(column.name, f"missing required column `{column.name}`")
            continue
        if column.fits_all(by_column[i]):
            continue
        for r, row in enumerate(rows):
            problem = column.problem(row[i])
            if problem:
                errors.add(column.name, f"{problem} (row {r})")
                break
        if errors.full():
            break
    errors.raise_if_any()


class _Missing:
    """The value of a column a record leaves out."""


_MISSING = _Missing()


def _records_fit(records: list[dict], signature: Signature) -> bool:
    """The fast path of records: every column's values of fitting types (False: look record by record)."""
    for column in signature.columns:
        name = column.name
        values = [record.get(name, _MISSING) for record in records]
        if any(value is _MISSING for value in values):
            if column.required:
                return False
            values = [value for value in values if value is not _MISSING]
        if not column.fits_all(values):
            return False
    return True


def _check_records(records: Any, signature: Signature, where: str) -> None:
    if not isinstance(records, list):
        raise InputError(f"`{where}` must be an array of records",
                         {where: [f"expected an array, got {describe(records)}"]})
    if all(type(record) is dict for record in records) and _records_fit(records, signature):
        return
    errors = _Errors()
    missing = _MISSING
    for r, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"`{where}` record {r}: expected an object, got {describe(record)}",
                             {where: [f"record {r}: expected an object"]})
        for column in signature.columns:
            if column.name in errors.fields:
                continue
            value = record.get(column.name, missing)
            if value is missing:
                if column.required:
                    errors.add(column.name, f"missing required column `{column.name}` (record {r})")
                continue
            check = column.check
            if check is not None and value is not None and check(value):
                continue
            problem = column.problem(value)
            if problem:
                errors.add(column.name, f"{problem} (record {r})")
        if errors.full():
            break
    errors.raise_if_any()


def _check_columns(data: dict, signature: Signature, where: str) -> None:
    errors = _Errors()
    for column in signature.columns:
        if column.name not in data:
            if column.required:
                errors.add(column.name, f"missing required column `{column.name}`")
            continue
        values = data[column.name]
        if not isinstance(values, list):
            values = [values]
        if column.fits_all(values):
            continue
        for r, value in enumerate(values):
            problem = column.problem(value)
            if problem:
                errors.add(column.name, f"{problem} (row {r})")
                break
    errors.raise_if_any()


def nested_shape(value: Any) -> list[int]:
    """The shape of a nested list, read along the first elements (a ragged array is caught by the walk)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _walk_leaves(value: Any, depth: int, ok, field: str, expected: str) -> None:
    if depth == 0:
        if not ok(value):
            raise InputError(f"`{field}`: expected {expected} elements, got {describe(value)}",
                             {field: [f"expected {expected} elements, got {describe(value)}"]})
        return
    if not isinstance(value, list):
        raise InputError(f"`{field}`: ragged tensor (an element is {describe(value)} where an array was expected)",
                         {field: ["ragged tensor"]})
    for item in value:
        _walk_leaves(item, depth - 1, ok, field, expected)


def _check_tensor_value(value: Any, tensor: Tensor, field: str) -> None:
    shape = nested_shape(value)
    if tensor.shape is not None:
        if len(shape) != len(tensor.shape):
            raise InputError(f"`{field}`: expected {len(tensor.shape)} dimensions {tensor.shape}, got "
                             f"{len(shape)} {shape}", {field: [f"expected shape {tensor.shape}, got {shape}"]})
        for got, want in zip(shape, tensor.shape, strict=False):
            if want not in (-1, None) and got != want:
                raise InputError(f"`{field}`: expected shape {tensor.shape}, got {shape}",
                                 {field: [f"expected shape {tensor.shape}, got {shape}"]})
    ok, expected = _dtype_check(tensor.dtype)
    if ok is not None and shape and shape[-1:] != [0]:
        _walk_leaves(value, len(shape), ok, field, expected)


def _check_tensors(data: Any, signature: Signature, where: str) -> None:
    tensors = signature.tensors
    if len(tensors) == 1 and not isinstance(data, dict):
        _check_tensor_value(data, tensors[0], where)
        return
    if isinstance(data, dict):
        named = {t.name: t for t in tensors if t.name}
        for name, tensor in named.items():
            if name not in data:
                raise InputError(f"missing required input `{name}`", {name: [f"missing required input `{name}`"]})
            _check_tensor_value(data[name], tensor, name)


# --------------------------------------------------------------------------------------------------------
# Open Inference Protocol (v2)

OIP_NUMERIC = {"FP16", "FP32", "FP64", "BF16"}
OIP_INTS = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
OIP_DATATYPES = OIP_NUMERIC | OIP_INTS | {"BOOL", "BYTES"}

# Which OIP datatypes may fill a column of each MLflow type.
COLUMN_DATATYPES = {
    "double": OIP_NUMERIC | OIP_INTS,
    "float": OIP_NUMERIC | OIP_INTS,
    "long": OIP_INTS,
    "integer": {"INT8", "INT16", "INT32", "UINT8", "UINT16"},
    "boolean": {"BOOL"},
    "string": {"BYTES"},
    "binary": {"BYTES"},
    "datetime": {"BYTES", "INT64"},
}

COLUMN_TO_OIP = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32", "boolean": "BOOL",
                 "string": "BYTES", "binary": "BYTES", "datetime": "BYTES"}


def dtype_to_oip(dtype: str) -> str:
    """A NumPy dtype name (as MLflow writes tensor specs) as an OIP datatype."""
    names = {"float64": "FP64", "float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32",
             "int16": "INT16", "int8": "INT8", "uint64": "UINT64", "uint32": "UINT32", "uint16": "UINT16",
             "uint8": "UINT8", "bool": "BOOL"}
    return names.get(dtype, "BYTES")


def _flatten(data: Any, out: list) -> None:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)


def flatten(data: Any) -> list:
    """Tensor data in row-major order, however nested it was sent."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list = []
    _flatten(data, out)
    return out


def reshape(flat: list, shape: list[int]) -> Any:
    """A flat row-major list as a nested list of ``shape``."""
    if len(shape) <= 1:
        return flat
    step = math.prod(shape[1:])
    return [reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


_OIP_VALUE_CHECKS = {
    "BOOL": (_ok_bool, "booleans"),
    "BYTES": (_ok_str, "strings"),
}


def _oip_value_check(datatype: str):
    if datatype in OIP_INTS:
        return (lambda v: type(v) is int), "integers"
    if datatype in OIP_NUMERIC:
        return _ok_number, "numbers"
    return _OIP_VALUE_CHECKS[datatype]


class OipInput:
    """One ``$request_input`` of an inference request, checked and flattened."""

    __slots__ = ("datatype", "flat", "name", "shape")

    def __init__(self, name: str, shape: list[int], datatype: str, flat: list):
        self.name = name
        self.shape = shape
        self.datatype = datatype
        self.flat = flat


def parse_oip_inputs(body: Any) -> list[OipInput]:
    """The inputs of an OIP inference request, each checked: name, shape, datatype, data of that size."""
    if not isinstance(body, dict):
        raise InputError("the body must be an inference request object with `inputs`",
                         {"body": [f"expected an object, got {describe(body)}"]})
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InputError("`inputs` must be a non-empty array of tensors",
                         {"inputs": ["expected a non-empty array"]})
    parsed = []
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"`{where}` must be an object", {where: [f"expected an object, got {describe(item)}"]})
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"`{where}.name` is required", {f"{where}.name": ["required"]})
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InputError(f"input `{name}`: `shape` must be an array of non-negative integers",
                             {name: ["shape must be an array of non-negative integers"]})
        datatype = item.get("datatype")
        if datatype not in OIP_DATATYPES:
            raise InputError(f"input `{name}`: unknown datatype {describe(datatype)}",
                             {name: [f"datatype must be one of {', '.join(sorted(OIP_DATATYPES))}"]})
        if "data" not in item:
            raise InputError(f"input `{name}`: `data` is required", {name: ["data is required"]})
        flat = flatten(item["data"])
        expected = math.prod(shape)
        if len(flat) != expected:
            raise InputError(f"input `{name}`: shape {shape} needs {expected} values, got {len(flat)}",
                             {name: [f"shape {shape} needs {expected} values, got {len(flat)}"]})
        ok, kind = _oip_value_check(datatype)
        for position, value in enumerate(flat):
            if not ok(value):
                raise InputError(f"input `{name}`: datatype {datatype} needs {kind}, got {describe(value)} "
                                 f"(element {position})", {name: [f"datatype {datatype} needs {kind}"]})
        parsed.append(OipInput(name, shape, datatype, flat))
    return parsed


def _is_column_shaped(item: OipInput) -> bool:
    return len(item.shape) == 1 or (len(item.shape) == 2 and item.shape[1] == 1)


def oip_to_mlflow(body: Any, signature: Signature | None) -> dict:
    """Translate an OIP inference request into the MLflow scoring body for ``signature``'s model, checked.

    Named 1-D (or [N, 1]) inputs become the columns of a ``dataframe_split``; a single [N, k] tensor for a
    model whose signature has k columns (or k required ones) becomes their rows; otherwise tensors go as ``{"inputs": ...}``
    (one tensor: the array; several: by name).
    """
    items = parse_oip_inputs(body)
    kind = signature.kind if signature is not None else None
    if kind != "tensors":
        if all(_is_column_shaped(item) for item in items) and (
                kind != "columns" or len(items) > 1 or items[0].name in signature.by_name):
            lengths = {item.shape[0] for item in items}
            if len(lengths) > 1:
                raise InputError("inputs named by column must all have the same length; got "
                                 + ", ".join(f"`{i.name}` {i.shape[0]}" for i in items),
                                 {i.name: [f"length {i.shape[0]}"] for i in items})
            if kind == "columns":
                errors = _Errors()
                for item in items:
                    column = signature.by_name.get(item.name)
                    allowed = COLUMN_DATATYPES.get(column.type) if column else None
                    if allowed is not None and item.datatype not in allowed:
                        errors.add(item.name, f"expected {column.type}, got datatype {item.datatype}")
                errors.raise_if_any()
            payload = {"dataframe_split": {"columns": [item.name for item in items],
                                           "data": [list(row) for row in zip(*(i.flat for i in items),
                                                                             strict=True)]}}
            if kind == "columns":
                check_mlflow(payload, signature)
            return payload
        if kind == "columns" and len(items) == 1 and len(items[0].shape) == 2:
            # One [N, k] tensor: its columns are the signature's k columns in order (all of them, or the
            # required ones when the optional ones are left out).
            item = items[0]
            width = item.shape[1]
            required = [c.name for c in signature.columns if c.required]
            names = ([c.name for c in signature.columns] if width == len(signature.columns)
                     else required if width == len(required) else None)
            if names is not None:
                rows = [item.flat[i * width:(i + 1) * width] for i in range(item.shape[0])]
                payload = {"dataframe_split": {"columns": names, "data": rows}}
                check_mlflow(payload, signature)
                return payload
        if kind == "columns":
            missing = [c.name for c in signature.columns if c.required and c.name not in {i.name for i in items}]
            if missing:
                raise InputError(f"missing required column `{missing[0]}`",
                                 {name: [f"missing required column `{name}`"] for name in missing})
    if len(items) == 1 and not (kind == "tensors" and signature.tensors[0].name
                                and len(signature.tensors) > 1):
        payload = {"inputs": reshape(items[0].flat, items[0].shape)}
    else:
        payload = {"inputs": {item.name: reshape(item.flat, item.shape) for item in items}}
    if kind == "tensors":
        check_mlflow(payload, signature)
    return payload


def _datatype_of(flat: list) -> str:
    kinds = {type(value) for value in flat}
    kinds.discard(type(None))
    if not kinds:
        return "FP64"
    if kinds == {bool}:
        return "BOOL"
    if kinds == {int}:
        return "INT64"
    if kinds <= {int, float}:
        return "FP64"
    return "BYTES"


def _output(name: str, values: Any) -> dict:
    flat = flatten(values) if isinstance(values, list) else [values]
    shape = nested_shape(values) if isinstance(values, list) else [1]
    return {"name": name, "shape": shape, "datatype": _datatype_of(flat), "data": flat}


def mlflow_to_oip_outputs(answer: Any) -> list[dict]:
    """A model server's MLflow answer (``{"predictions": ...}``) as OIP output tensors."""
    predictions = answer.get("predictions", answer) if isinstance(answer, dict) else answer
    if isinstance(predictions, dict):
        return [_output(str(name), values) for name, values in predictions.items()]
    if isinstance(predictions, list) and predictions and all(isinstance(row, dict) for row in predictions):
        names = list(dict.fromkeys(name for row in predictions for name in row))
        return [_output(str(name), [row.get(name) for row in predictions]) for name in names]
    return [_output("predictions", predictions)]


def oip_metadata(name: str, versions: list[str], signature: Signature | None) -> dict:
    """The OIP model metadata response of a deployment, from its primary variant's signature."""
    inputs: list[dict] = []
    outputs: list[dict] = []
    if signature is not None:
        if signature.kind == "columns":
            inputs = [{"name": c.name, "datatype": COLUMN_TO_OIP.get(c.type, "BYTES"), "shape": [-1]}
                      for c in signature.columns]
        elif signature.kind == "tensors":
            inputs = [{"name": t.name or f"input-{i}", "datatype": dtype_to_oip(t.dtype),
                       "shape": [d if isinstance(d, int) else -1 for d in (t.shape or [-1])]}
                      for i, t in enumerate(signature.tensors)]
        for i, spec in enumerate(signature.outputs):
            if not isinstance(spec, dict):
                continue
            if spec.get("type") == "tensor":
                tensor_spec = spec.get("tensor-spec") or {}
                outputs.append({"name": spec.get("name") or ("predictions" if i == 0 else f"output-{i}"),
                                "datatype": dtype_to_oip(str(tensor_spec.get("dtype") or "")),
                                "shape": list(tensor_spec.get("shape") or [-1])})
            else:
                outputs.append({"name": spec.get("name") or ("predictions" if i == 0 else f"output-{i}"),
                                "datatype": COLUMN_TO_OIP.get(str(spec.get("type")), "BYTES"), "shape": [-1]})
    return {"name": name, "versions": versions, "platform": "mlflow", "inputs": inputs, "outputs": outputs}
