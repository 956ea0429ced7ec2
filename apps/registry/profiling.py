"""Reference data profiles: per-feature statistics of a model's training data that drift monitoring compares
production inputs against.

A profile is plain JSON (no NumPy types, no NaN or infinity: a statistic that does not exist is ``None``), its
keys in a fixed order, and the same input always gives the same profile, sampling included. Its shape::

    {"profile_version": 1, "row_count": n, "features": {name: feature, ...}}

and, from :func:`profile_file`, also ``source_format``, ``source_row_count``, ``sampled`` and ``sample_size``.
Each feature has ``type``, ``count`` (values present) and ``missing``, then by type:

- ``numeric``: ``infinite`` (how many of the present values are +/-inf), ``min``, ``max``, ``mean``, ``std``
  (population, ddof=0) and ``quantiles`` (p1 ... p99, NumPy's linear method) over the finite values, and a
  ``histogram``.
- ``datetime``: ``min`` and ``max`` (UTC ISO 8601) and a ``histogram`` over epoch seconds. Times without a zone
  are taken as UTC.
- ``categorical`` and ``boolean``: ``distinct`` and ``frequencies``, ``{value: count}`` for the most frequent
  ``max_categories`` values (count descending, then value) followed by the ``__other__`` bucket (the rest; a
  value spelled ``__other__`` counts there too). Booleans always have ``false``, ``true`` and ``__other__``.
- ``text`` (strings with more than ``max_categories`` distinct values, most of them unique): ``distinct`` and
  ``length``, the numeric statistics of the strings' lengths.

A histogram is ``{"edges": [...], "counts": [...], "below": k, "above": m}``: equal-width bins from the reference
minimum to its maximum (a constant feature has one bin, ``[c, c]``), each bin ``[left, right)`` except the last,
which includes its right edge (NumPy's rule). ``below`` and ``above`` count values outside the edges: +/-inf in
the reference, out-of-range values in production. A feature with no finite value has ``histogram: None``.
``counts``, ``below`` and ``above`` together count every present value.

The edges are fixed in the profile so that production values are binned the same way later: :func:`bin_counts`
bins new values against a stored feature and :func:`reference_counts` gives the reference's counts in the same
layout, ready for PSI, chi-square or Jensen-Shannon.

Files come in through :func:`read_reference_file` (CSV or Parquet, told apart by content), which refuses bad
input with :class:`ProfileInputError` and, past ``max_rows``, reads a seeded uniform sample with bounded memory.
This module does not use Django or the database.
"""
from __future__ import annotations

import codecs
import csv
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pandas.api import types as ptypes

from apps.core.errors import ValidationFailed

PROFILE_VERSION = 1
OTHER = "__other__"
QUANTILES = (("p1", 0.01), ("p5", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99))
SAMPLE_SEED = 20240601
# Rows are sampled block by block (a hypergeometric draw per block), so choosing the sample needs memory in
# proportion to the sample, not to the file.
_SAMPLE_BLOCK = 1 << 16
_PARQUET_BATCH_ROWS = 1 << 16
_CSV_BLOCK_BYTES = 1 << 20  # larger blocks make Arrow read ahead more, for no gain here
_SNIFF_BYTES = 1 << 16
# pandas' default missing-value markers, so that a CSV means here what it means to pandas users.
CSV_NA_VALUES = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                 "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
# Formats people upload by mistake, named in the refusal. Only signatures no CSV header could begin with.
_BINARY_SIGNATURES = (
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook?)"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Excel or Office document"),
    (b"%PDF-", "a PDF document"),
    (b"ARROW1\x00", "an Arrow IPC file"),
    (b"\x80\x02", "a Python pickle"), (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"), (b"\x80\x05", "a Python pickle"),
)
# Control characters other than tab, line feed, vertical tab, form feed and carriage return: no CSV has them.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_PANDAS_INDEX_COLUMN = re.compile(r"__index_level_\d+__")
_ISO_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?")
_EPOCH_US = np.datetime64(0, "us")


class ProfileInputError(ValidationFailed):
    """Reference data that cannot be profiled; ``field`` names the input at fault, the message says what is wrong.

    A 400 in its own right (``fields == {field: [message]}``), so a service may let it through as it is.
    """

    code = "invalid_reference_data"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", fields={field: [message]})
        self.field = field
        self.problem = message


# --- profiling a DataFrame ---------------------------------------------------------------------------------

def profile_dataframe(df: pd.DataFrame, *, max_categories: int = 50, bins: int = 20) -> dict:
    """The profile of every column of ``df``, in column order."""
    if max_categories < 1 or bins < 1:
        raise ValueError("max_categories and bins must be at least 1")
    names = [str(c) for c in df.columns]
    duplicates = _duplicates(names)
    if duplicates:
        raise ValueError(f"duplicate column names: {', '.join(map(repr, duplicates))}")
    features = {}
    for position, name in enumerate(names):
        features[name] = _profile_column(df.iloc[:, position], max_categories=max_categories, bins=bins)
    return {"profile_version": PROFILE_VERSION, "row_count": len(df), "features": features}


def _profile_column(series: pd.Series, *, max_categories: int, bins: int) -> dict:
    kind, values = _classify(series)
    missing = int(series.isna().sum())
    count = len(series) - missing
    head = {"type": kind, "count": count, "missing": missing}
    if kind == "numeric":
        return head | _numeric_summary(values, bins=bins, report_infinite=True)
    if kind == "datetime":
        return head | _datetime_summary(values, bins=bins)
    if kind == "boolean":
        return head | _frequencies(_boolean_counts(values), keys=["false", "true"])
    counts = _value_counts(values)
    distinct = len(counts)
    if distinct > max_categories and distinct > count / 2:  # mostly unique: identifiers, free text
        lengths = values.str.len().to_numpy(dtype="float64", na_value=np.nan)
        return {"type": "text", "count": count, "missing": missing, "distinct": distinct,
                "length": _numeric_summary(lengths, bins=bins, report_infinite=False)}
    return head | _frequencies(counts, top=max_categories)


def _classify(series: pd.Series) -> tuple[str, Any]:
    """The feature type of a column and its values in the form that type's summary takes: a float64 NumPy array
    (numeric, NaN for missing; durations in seconds), a UTC datetime Series, the boolean Series, or strings."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
        dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        return "boolean", series
    if ptypes.is_numeric_dtype(dtype) and not ptypes.is_complex_dtype(dtype):
        return "numeric", series.to_numpy(dtype="float64", na_value=np.nan)
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime", _utc(series)
    if ptypes.is_timedelta64_dtype(dtype):
        return "numeric", (series / pd.Timedelta(seconds=1)).to_numpy(dtype="float64", na_value=np.nan)
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    if inferred == "empty":  # nothing present: say numeric, the most common case, with empty statistics
        return "numeric", np.full(len(series), np.nan)
    if inferred == "boolean":
        return "boolean", series.astype("boolean")
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "numeric", pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if inferred in ("datetime", "datetime64", "date"):
        return "datetime", _utc(pd.to_datetime(series, utc=True))
    strings = _as_strings(series)
    parsed = _iso_datetimes(strings)
    if parsed is not None:
        return "datetime", parsed
    return "categorical", strings


def _as_strings(series: pd.Series) -> pd.Series:
    """Present values as strings (the form categories are stored and compared in), missing kept missing."""
    if ptypes.is_string_dtype(series.dtype) and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return series.astype("str")
    present = series.notna()
    out = pd.Series(np.full(len(series), None, dtype=object), index=series.index)
    out[present] = [str(v) for v in series[present]]
    return out.astype("str")


def _iso_datetimes(strings: pd.Series) -> pd.Series | None:
    """The column as UTC datetimes when every present value is an ISO 8601 date or time, else None."""
    present = strings.dropna()
    if present.empty or not _ISO_DATETIME.fullmatch(present.iloc[0]):
        return None
    if not bool(present.str.fullmatch(_ISO_DATETIME.pattern).all()):
        return None
    try:
        return _utc(pd.to_datetime(strings, utc=True, format="ISO8601"))
    except (ValueError, OverflowError):  # 2024-13-45 looks like a date but is not one
        return None


def _utc(series: pd.Series) -> pd.Series:
    if series.dt.tz is None:
        series = series.dt.tz_localize("UTC")
    return series.dt.tz_convert("UTC").dt.as_unit("us")


def _epoch_seconds(series: pd.Series) -> np.ndarray:
    """Microsecond integers to float seconds: exact for any date a model will meet, and the same however the
    times were first stored (s, ms, us, ns)."""
    micros = series.dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    seconds = (micros - _EPOCH_US).astype("int64").astype("float64") / 1e6
    seconds[np.isnat(micros)] = np.nan
    return seconds


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _numeric_summary(values: np.ndarray, *, bins: int, report_infinite: bool) -> dict:
    present = values[~np.isnan(values)]
    finite = present[np.isfinite(present)]
    out: dict[str, Any] = {}
    if report_infinite:
        out["infinite"] = int(len(present) - len(finite))
    if len(finite) == 0:
        return out | {"min": None, "max": None, "mean": None, "std": None,
                      "quantiles": {name: None for name, _ in QUANTILES}, "histogram": None}
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = np.mean(finite), np.std(finite)
    quantiles = np.quantile(finite, [q for _, q in QUANTILES])
    edges = _edges(float(finite.min()), float(finite.max()), bins)
    return out | {
        "min": float(finite.min()),
        "max": float(finite.max()),
        "mean": _finite_or_none(mean),
        "std": _finite_or_none(std),
        "quantiles": {name: float(v) for (name, _), v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": _histogram(edges, present),
    }


def _datetime_summary(values: pd.Series, *, bins: int) -> dict:
    seconds = _epoch_seconds(values)
    present = seconds[~np.isnan(seconds)]
    if len(present) == 0:
        return {"min": None, "max": None, "histogram": None}
    edges = _edges(float(present.min()), float(present.max()), bins)
    return {"min": _iso(values.min()), "max": _iso(values.max()), "histogram": _histogram(edges, present)}


def _edges(low: float, high: float, bins: int) -> list[float]:
    if low == high:
        return [low, high]
    steps = np.arange(bins + 1, dtype="float64") / bins
    with np.errstate(over="ignore", invalid="ignore"):
        span = high - low
        edges = low + span * steps if math.isfinite(span) else low * (1 - steps) + high * steps
    edges[0], edges[-1] = low, high
    return [float(e) for e in np.maximum.accumulate(edges)]


def _histogram(edges: list[float], present: np.ndarray) -> dict:
    below, counts, above = _bin(edges, present)
    return {"edges": edges, "counts": counts, "below": below, "above": above}


def _bin(edges: list[float], values: np.ndarray) -> tuple[int, list[int], int]:
    """(below, per-bin counts, above) of present (non-NaN) values: the one binning rule, for reference and
    production alike."""
    e = np.asarray(edges, dtype="float64")
    below = values < e[0]
    above = values > e[-1]
    inside = values[~below & ~above]
    index = np.searchsorted(e[1:-1], inside, side="right")
    counts = np.bincount(index, minlength=len(e) - 1)
    return int(below.sum()), [int(c) for c in counts], int(above.sum())


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _value_counts(labels: pd.Series) -> pd.Series:
    return labels.dropna().value_counts(sort=False)


def _frequencies(counts: pd.Series, *, top: int | None = None, keys: list[str] | None = None) -> dict:
    """``distinct`` and ``frequencies`` from value counts: either the fixed ``keys`` or the ``top`` most
    frequent values (count descending, then value), then ``__other__``."""
    distinct = len(counts)
    total = int(counts.sum())
    counts = counts.drop(OTHER, errors="ignore")
    if keys is None:
        table = pd.DataFrame({"value": counts.index.astype("str"), "count": counts.to_numpy()})
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="mergesort").head(top)
        chosen = {str(v): int(c) for v, c in zip(table["value"], table["count"], strict=True)}
    else:
        chosen = {k: int(counts.get(k, 0)) for k in keys}
    return {"distinct": distinct, "frequencies": chosen | {OTHER: total - sum(chosen.values())}}


def _boolean_counts(series: pd.Series) -> pd.Series:
    """Counts of ``"true"`` and ``"false"`` (booleans and their spellings in any case) and of any other value
    as its string (it lands in ``__other__``); missing values are not counted."""
    present = series.dropna()
    if ptypes.is_bool_dtype(present.dtype):
        true = int(present.astype(bool).sum())
        return pd.Series({k: n for k, n in (("false", len(present) - true), ("true", true)) if n}, dtype="int64")
    return _value_counts(present.astype(object).map(_boolean_label).astype("str"))


def _boolean_label(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    text = str(v)
    lowered = text.strip().lower()
    return lowered if lowered in ("true", "false") else text


def _is_missing(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


# --- binning production values against a stored profile ----------------------------------------------------

def bin_labels(profile_feature: dict) -> list[str]:
    """Names of the bins that :func:`bin_counts` and :func:`reference_counts` count, in their order."""
    if profile_feature["type"] in ("categorical", "boolean"):
        return list(profile_feature["frequencies"])
    edges = _feature_histogram(profile_feature)["edges"]
    return ["below"] + [f"[{a!r}, {b!r}{']' if i == len(edges) - 2 else ')'}"
                        for i, (a, b) in enumerate(itertools.pairwise(edges))] + ["above"]


def reference_counts(profile_feature: dict) -> list[int]:
    """The reference's counts in :func:`bin_counts`' layout: frequencies in order (``__other__`` last) for
    categorical and boolean features; ``[below, *counts, above]`` for numeric, datetime and text (lengths)."""
    if profile_feature["type"] in ("categorical", "boolean"):
        return [int(c) for c in profile_feature["frequencies"].values()]
    histogram = _feature_histogram(profile_feature)
    return [histogram["below"], *histogram["counts"], histogram["above"]]


def bin_counts(profile_feature: dict, values: Iterable[Any]) -> list[int]:
    """Counts of ``values`` in the bins of a stored profile feature, in :func:`reference_counts`' layout.

    Missing values are not counted (compare the missing rate apart); so are values that do not read as the
    feature's type (a word in a numeric feature, an unparseable time). Categorical values are compared as
    strings, booleans as true/false in any case; values the reference did not list count in ``__other__``.
    Raises ``ValueError`` for a numeric, datetime or text feature without a histogram (no reference value).
    """
    kind = profile_feature["type"]
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if kind in ("categorical", "boolean"):
        counts = _boolean_counts(series) if kind == "boolean" else _value_counts(_as_strings(series))
        keys = [k for k in profile_feature["frequencies"] if k != OTHER]
        chosen = [int(counts.get(k, 0)) for k in keys]
        return chosen + [int(counts.sum()) - sum(chosen)]
    histogram = _feature_histogram(profile_feature)
    if kind == "numeric":
        if ptypes.is_timedelta64_dtype(series.dtype):
            series = series / pd.Timedelta(seconds=1)
        elif not ptypes.is_numeric_dtype(series.dtype) or ptypes.is_bool_dtype(series.dtype):
            series = pd.to_numeric(series.astype(object), errors="coerce")
        numbers = series.to_numpy(dtype="float64", na_value=np.nan)
    elif kind == "datetime":
        if not ptypes.is_datetime64_any_dtype(series.dtype):
            series = pd.to_datetime(series.astype(object), utc=True, errors="coerce", format="ISO8601")
        numbers = _epoch_seconds(_utc(series))
    elif kind == "text":
        numbers = _as_strings(series).str.len().to_numpy(dtype="float64", na_value=np.nan)
    else:
        raise ValueError(f"unknown feature type {kind!r}")
    below, counts, above = _bin(histogram["edges"], numbers[~np.isnan(numbers)])
    return [below, *counts, above]


def _feature_histogram(profile_feature: dict) -> dict:
    holder = profile_feature["length"] if profile_feature["type"] == "text" else profile_feature
    histogram = holder.get("histogram")
    if histogram is None:
        raise ValueError("the reference has no value of this feature, so there are no bins to count in")
    return histogram


# --- reading reference files --------------------------------------------------------------------------------

def read_reference_file(path: Path, *, max_rows: int = 1_000_000, max_bytes: int,
                        field: str = "file") -> pd.DataFrame:
    """A CSV or Parquet file as a DataFrame, refusing what cannot be profiled with :class:`ProfileInputError`.

    The format is told by content (Parquet begins with ``PAR1``), not by name. CSV is UTF-8, comma-separated,
    with a header row; its columns are typed here (numbers, true/false, pandas' missing markers) rather than by
    pandas, so that a sample is typed the same way as the whole. Files of more than ``max_rows`` rows are
    sampled uniformly with a fixed seed, streaming, so memory follows ``max_rows`` rather than the file.
    ``df.attrs["reference_file"]`` records the format, the file's row count and whether it was sampled.
    """
    path = Path(path)
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    size = path.stat().st_size
    if size == 0:
        raise ProfileInputError(field, "The file is empty.")
    if size > max_bytes:
        raise ProfileInputError(field, f"The file is too large: {size} bytes; the limit is {max_bytes} bytes.")
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith(b"PAR1"):
        source_format, (table, total) = "parquet", _read_parquet(path, max_rows=max_rows, field=field)
    else:
        _require_text(head, complete=size <= len(head), field=field)
        source_format, (table, total) = "csv", _read_csv(path, max_rows=max_rows, field=field)
    df = _table_to_frame(table, typed=source_format == "parquet")
    df.attrs["reference_file"] = {"source_format": source_format, "source_row_count": total,
                                  "sampled": total > len(df), "sample_size": len(df)}
    return df


def profile_file(path: Path, max_bytes: int, *, max_rows: int = 1_000_000, max_categories: int = 50,
                 bins: int = 20, field: str = "file") -> dict:
    """The profile of a reference CSV or Parquet file, with where it came from and whether it was sampled."""
    df = read_reference_file(path, max_rows=max_rows, max_bytes=max_bytes, field=field)
    source = df.attrs["reference_file"]
    profile = profile_dataframe(df, max_categories=max_categories, bins=bins)
    return {
        "profile_version": profile["profile_version"],
        "source_format": source["source_format"],
        "source_row_count": source["source_row_count"],
        "sampled": source["sampled"],
        "sample_size": source["sample_size"] if source["sampled"] else None,
        "row_count": profile["row_count"],
        "features": profile["features"],
    }


def _require_text(head: bytes, *, complete: bool, field: str) -> None:
    for signature, what in _BINARY_SIGNATURES:
        if head.startswith(signature):
            raise ProfileInputError(field, f"The file is not a CSV or Parquet file: it looks like {what}.")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ProfileInputError(field, "The file is UTF-16 text: save the CSV as UTF-8.")
    if _CONTROL_BYTES.search(head):
        raise ProfileInputError(field, "The file is not a CSV or Parquet file: it contains binary data.")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=complete)
    except UnicodeDecodeError as exc:
        raise ProfileInputError(field, _not_utf8(head[:exc.start].count(b"\n") + 1)) from None


def _not_utf8(line: int) -> str:
    return f"The file is not UTF-8 text (line {line}): save the CSV as UTF-8."


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})


def _column_names(raw: list[str], field: str) -> list[str]:
    """Blank names become ``Unnamed: i`` (pandas' spelling, e.g. a saved index); repeats are refused, since a
    profile is keyed by name."""
    names = [name if name.strip() else f"Unnamed: {i}" for i, name in enumerate(raw)]
    duplicates = _duplicates(names)
    if duplicates:
        raise ProfileInputError(field, f"The file has duplicate column names: {', '.join(map(repr, duplicates))}.")
    return names


def _sample_positions(total: int, size: int) -> np.ndarray:
    """Sorted row positions of a uniform sample of ``size`` rows out of ``total``, the same every time."""
    rng = np.random.default_rng(SAMPLE_SEED)
    chosen, remaining, wanted = [], total, size
    for start in range(0, total, _SAMPLE_BLOCK):
        if wanted == 0:
            break
        block = min(_SAMPLE_BLOCK, total - start)
        take = int(rng.hypergeometric(block, remaining - block, wanted)) if remaining > block else wanted
        chosen.append(start + np.sort(rng.choice(block, size=take, replace=False)))
        remaining -= block
        wanted -= take
    return np.concatenate(chosen) if chosen else np.empty(0, dtype="int64")


def _take(batches: Iterator[pa.RecordBatch], positions: np.ndarray) -> list[pa.RecordBatch]:
    kept, start = [], 0
    for batch in batches:
        end = start + batch.num_rows
        low, high = np.searchsorted(positions, [start, end])
        if high > low:
            kept.append(batch.take(pa.array(positions[low:high] - start)))
        start = end
    return kept


def _read_parquet(path: Path, *, max_rows: int, field: str) -> tuple[pa.Table, int]:
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        total = parquet.metadata.num_rows
        if not schema.names:
            raise ProfileInputError(field, "The file has no columns.")
        names = _column_names(schema.names, field)
        if total == 0:
            raise ProfileInputError(field, "The file has no data rows.")
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        if total > max_rows:
            kept = _take(batches, _sample_positions(total, max_rows))
        else:
            kept = list(batches)
        table = pa.Table.from_batches(kept, schema=schema)
    except (pa.ArrowException, OSError) as exc:
        raise ProfileInputError(field, f"The file is not a readable Parquet file: {exc}") from None
    return table.rename_columns(names), total


def _read_csv(path: Path, *, max_rows: int, field: str) -> tuple[pa.Table, int]:
    raw_names = _csv_header(path, field)
    names = _column_names(raw_names, field)

    def batches() -> Iterator[pa.RecordBatch]:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in raw_names},
                null_values=list(CSV_NA_VALUES), strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
        if reader.schema.names != raw_names:
            raise ProfileInputError(field, "The file cannot be parsed as CSV: its header row is ambiguous.")
        yield from reader

    kept: list[pa.RecordBatch] = []
    total, last = 0, None
    try:
        for batch in batches():
            total += batch.num_rows
            if batch.num_rows:
                last = batch.slice(batch.num_rows - 1)
            if total <= max_rows:
                kept.append(batch)
            else:
                kept = []  # more rows than we keep: count them all, then read a sample
        if last is not None and _may_hide_open_quote(last):
            problem = _csv_problem(path, len(raw_names))
            if problem:
                raise ProfileInputError(field, problem)
        if total == 0:
            raise ProfileInputError(field, "The file has a header row but no data rows.")
        if total > max_rows:
            kept = _take(batches(), _sample_positions(total, max_rows))
    except pa.ArrowException as exc:
        problem = _csv_problem(path, len(raw_names))
        raise ProfileInputError(field, problem or f"The file cannot be parsed as CSV: {exc}") from None
    schema = pa.schema([(name, pa.string()) for name in raw_names])
    return pa.Table.from_batches(kept, schema=schema).rename_columns(names), total


def _csv_header(path: Path, field: str) -> list[str]:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            for row in reader:
                if row:
                    return row
    except csv.Error as exc:
        raise ProfileInputError(field, f"The file cannot be parsed as CSV: the header row: {exc}.") from None
    except UnicodeDecodeError:
        raise ProfileInputError(field, _not_utf8(_invalid_utf8_line(path))) from None
    raise ProfileInputError(field, "The file has no columns: it has no header row.")


def _may_hide_open_quote(last_row: pa.RecordBatch) -> bool:
    """A quote left open in the last column runs to the end of the file without a parse error; it shows as a
    line break inside the last row, which is rare enough to check the file when it happens."""
    return any(isinstance(v, str) and ("\n" in v or "\r" in v)
               for column in last_row.columns for v in column.to_pylist())


def _csv_problem(path: Path, width: int) -> str | None:
    """Find the first malformed line with Python's csv module (slower than Arrow's reader, but it knows line
    numbers); only on the error path. None when it finds nothing."""
    start = 1
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, strict=True)
            header_seen = False
            for row in reader:
                if row:
                    if not header_seen:
                        header_seen = True
                    elif len(row) != width:
                        return (f"The file cannot be parsed as CSV: line {start} has {len(row)} fields; "
                                f"the header has {width}.")
                start = reader.line_num + 1
    except csv.Error as exc:
        if "field limit" in str(exc):  # a long value is no fault; the csv module just cannot say more
            return None
        if "unexpected end of data" in str(exc):
            return f"The file cannot be parsed as CSV: the quoted field that begins on line {start} is never closed."
        return f"The file cannot be parsed as CSV: line {start}: {exc}."
    except UnicodeDecodeError:
        return _not_utf8(_invalid_utf8_line(path))
    return None


def _invalid_utf8_line(path: Path) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return line + chunk[:max(exc.start, 0)].count(b"\n")
            line += chunk.count(b"\n")
    return line


def _table_to_frame(table: pa.Table, *, typed: bool) -> pd.DataFrame:
    """Parquet columns keep their stored types; CSV's string columns are typed here, one column at a time."""
    if typed:
        # The file's own columns, as stored: pandas' metadata would move some into the index. The index
        # pandas writes when it has no name is an artefact of saving, not a feature.
        frame = table.to_pandas(ignore_metadata=True)
        return frame.drop(columns=[c for c in frame.columns if _PANDAS_INDEX_COLUMN.fullmatch(c)])
    return pd.DataFrame({name: _type_csv_column(table.column(name)) for name in table.column_names},
                        index=pd.RangeIndex(table.num_rows))


def _type_csv_column(column: pa.ChunkedArray) -> Any:
    """All present values true/false → boolean; all numbers → float64; else strings. Missing stays missing.
    The first present value rules out most columns before any whole-column work."""
    present = pc.drop_null(column)
    if len(present) == 0:
        return np.full(len(column), np.nan)
    first = present[0].as_py().strip()
    if first.lower() in ("true", "false"):
        trimmed = pc.utf8_trim_whitespace(column)
        lowered = pc.utf8_lower(trimmed)
        if pc.all(pc.is_in(pc.drop_null(lowered), value_set=pa.array(["true", "false"]))).as_py():
            return pc.equal(lowered, "true").to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    elif _is_number(first):
        try:
            return pc.cast(pc.utf8_trim_whitespace(column), pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            pass
    return column.to_pandas()


def _is_number(text: str) -> bool:
    try:
        pc.cast(pa.array([text]), pa.float64())
    except pa.ArrowInvalid:
        return False
    return True
