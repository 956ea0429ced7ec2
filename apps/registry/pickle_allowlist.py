"""Which pickle globals a model artifact may name, and how bad the others are.

A pickle is a small program: ``GLOBAL``/``STACK_GLOBAL``/``INST`` import any attribute of any importable module,
``REDUCE``/``NEWOBJ``/``OBJ``/``INST`` call it, ``BUILD`` hands it state. Blocklists of "dangerous" globals
(what modelscan and picklescan ship) are bypassed again and again through harmless-looking functions of the
standard library and of the very packages a model needs (``pkgutil.resolve_name``, ``timeit.timeit``,
``numpy.testing._private.utils.runstring``, ``pandas.read_csv``, ``mlflow.projects...``), so this module is an
*allowlist*: only what scikit-learn, NumPy, SciPy, pandas, XGBoost, LightGBM and joblib models need in order
to be reconstructed passes; everything else is a finding that names the global.

Two tiers, because a global that is only *referenced* (stored as a value, e.g. ``FunctionTransformer(func=
numpy.log1p)``) runs no code when the pickle loads, while one that is *called* (``REDUCE``, ``NEWOBJ``,
``OBJ``, ``INST``, or passed as an argument to a call) runs with arguments the file chose:

* ``call``: classes and reconstruction helpers whose call with arbitrary arguments builds data and does no
  I/O, no import by name, no evaluation of code.
* ``reference``: ``call`` plus pure numerical functions (NumPy ufuncs, scikit-learn metric and scoring
  functions) that a fitted model legitimately keeps a reference to. They may be called later at predict time
  with the model's input, which is why I/O helpers (``numpy.load``, ``pandas.read_*``...) are excluded even
  there.

Names are matched exactly (``module`` and ``name``, the latter without dots, except for the few dotted names
listed in :data:`DOTTED_CALLABLES`): no prefix rules, because an allowlisted package re-exports dangerous
objects (``sklearn.callback._transport.Listener`` is ``multiprocessing.connection.Listener``,
``sklearn.datasets._base.NamedTemporaryFile`` is ``tempfile.NamedTemporaryFile``). For scikit-learn the exact
set is computed from the installed package: a class or function is allowed where it is *defined* (its
``__module__``), which is exactly where a genuine pickle names it, never where it is merely re-exported.

Residual risk that no allowlist removes: the ``__setstate__`` of an allowed class still receives
attacker-chosen state (e.g. crafted node arrays for ``sklearn.tree._tree.Tree`` or buffers for
``pyarrow.lib._restore_array``), which may crash a native extension. That is a memory-safety concern of those
packages, not code execution by design; the scan is a gate before loading, and loading still happens only in
sandboxed model-server processes, never in the control plane.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import logging
import pkgutil
import re
import warnings
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ALLOWLIST_VERSION = "2026.11.1"

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DOTTED_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _names(module: str, names: str) -> set[tuple[str, str]]:
    return {(module, name) for name in names.split()}


# ---------------------------------------------------------------------------------------------------------------
# Core: builtins containers and the standard library's own reconstruction helpers.
# ---------------------------------------------------------------------------------------------------------------
#: Builtin types whose call only builds a value. ``getattr``/``eval``/``exec``/``__import__``/``open``/``type``...
#: are absent on purpose; ``getattr`` is accepted only in the validated bound-method form (see scanning).
BUILTIN_TYPES = _names(
    "builtins",
    "set frozenset slice complex bytearray bytes dict list tuple range int float str bool object",
)

CORE_CALLABLES = (
    BUILTIN_TYPES
    # collections: OrderedDict/defaultdict/Counter/deque are pickled by class; defaultdict's factory argument
    # is itself a global and is checked on its own.
    | _names("collections", "OrderedDict defaultdict Counter deque")
    # datetime values (pandas timestamps, UTC offsets).
    | _names("datetime", "datetime date time timedelta timezone")
    | _names("decimal", "Decimal")
    # zoneinfo: pandas pickles zone-aware data as getattr(ZoneInfo, "_unpickle")(key, from_cache); the key is
    # validated by zoneinfo itself (no absolute paths, no "..").
    | _names("zoneinfo", "ZoneInfo")
    # pytz / dateutil zones as older pandas pickled them; dateutil.tz.tzfile (opens a path) is not here.
    | _names("pytz", "_p _UTC")
    | _names("dateutil.tz.tz", "tzutc tzoffset tzlocal")
)

#: Globals that are allowed only when called with arguments the scanner can validate (see
#: ``scanning._validate_call``). Any other use of them (referenced, passed along) is not allowed.
GUARDED_CALLABLES = {
    # numpy pickles bytes in protocol 0-2 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"),
    # copyreg._reconstructor(cls, base, state): protocol 0/1 reconstruction of plain objects (scipy.sparse).
    ("copyreg", "_reconstructor"),
    # bound/class methods are pickled as getattr(owner, "name"); allowed for an explicit list only.
    ("builtins", "getattr"),
    # numpy < 1.x ufuncs: _ufunc_reconstruct(module, name) imports *any* module by name, so the arguments must
    # be constants naming numpy or scipy.special.
    ("numpy.core._internal", "_ufunc_reconstruct"),
    ("numpy._core._internal", "_ufunc_reconstruct"),
    ("numpy.core", "_ufunc_reconstruct"),
    ("numpy._core", "_ufunc_reconstruct"),
}

#: Dotted names reached through the validated ``getattr(owner, attr)`` form or, in protocol 4+, directly.
DOTTED_CALLABLES = {("zoneinfo", "ZoneInfo._unpickle")}

#: Bound methods of allowed *instances* that ``getattr(instance, name)`` may produce (kept as references,
#: e.g. ``FunctionTransformer(func=scaler.transform)``); calling them during load is still a dynamic call.
BOUND_METHOD_NAMES = frozenset(
    """
    predict predict_proba predict_log_proba decision_function transform inverse_transform fit_transform
    score score_samples
    """.split()  # noqa: SIM905
)

# ---------------------------------------------------------------------------------------------------------------
# NumPy: arrays, dtypes, scalars and random generators. Both the NumPy 1.x (``numpy.core``) and 2.x
# (``numpy._core``) module paths, because pickles name the defining module of the NumPy that wrote them.
# ---------------------------------------------------------------------------------------------------------------
NUMPY_CALLABLES = (
    _names("numpy", "ndarray dtype matrix record recarray")
    | _names("numpy.core.multiarray", "_reconstruct scalar")
    | _names("numpy._core.multiarray", "_reconstruct scalar")
    | _names("numpy.core.numeric", "_frombuffer")
    | _names("numpy._core.numeric", "_frombuffer")
    | _names("numpy.core.records", "recarray record")
    | _names("numpy._core.records", "recarray record")
    | _names("numpy.rec", "recarray record")
    | _names("numpy.matrixlib.defmatrix", "matrix")
    | _names("numpy.ma", "MaskedArray")
    | _names("numpy.ma.core", "MaskedArray _mareconstruct")
    # Random state: RandomState/Generator and their bit generators (estimators keep them in random_state_).
    | _names("numpy.random", "__RandomState_ctor")
    | _names("numpy.random._pickle", "__randomstate_ctor __bit_generator_ctor __generator_ctor")
    | _names("numpy.random.mtrand", "RandomState")
    | _names("numpy.random._generator", "Generator")
    | _names("numpy.random._mt19937", "MT19937")
    | _names("numpy.random._pcg64", "PCG64 PCG64DXSM")
    | _names("numpy.random._philox", "Philox")
    | _names("numpy.random._sfc64", "SFC64")
    | _names("numpy.random.bit_generator", "SeedSequence __pyx_unpickle_SeedSequence")
)

#: Top-level NumPy functions that are never allowed, not even as references: file I/O, code evaluation,
#: process-wide state.
NUMPY_DENIED_NAMES = frozenset(
    """
    load save savez savez_compressed loadtxt savetxt genfromtxt fromfile fromregex memmap frompyfunc
    vectorize seterrcall seterr setbufsize set_printoptions show_config show_runtime info source lookfor who
    get_include test DataSource ctypeslib f2py testing distutils lib
    """.split()  # noqa: SIM905
)

# ---------------------------------------------------------------------------------------------------------------
# SciPy: sparse matrices and arrays (scikit-learn's text and one-hot features). Both the private module
# paths (SciPy >= 1.8) and the old public ones. scipy.stats frozen distributions are *not* here: their
# __setstate__ rebuilds argument parsers with exec() from a string in the state.
# ---------------------------------------------------------------------------------------------------------------
_SPARSE_FORMATS = "csr csc coo lil dok bsr dia"
SCIPY_CALLABLES = set()
for _fmt in _SPARSE_FORMATS.split():
    SCIPY_CALLABLES |= _names(f"scipy.sparse._{_fmt}", f"{_fmt}_matrix {_fmt}_array")
    SCIPY_CALLABLES |= _names(f"scipy.sparse.{_fmt}", f"{_fmt}_matrix")
    SCIPY_CALLABLES |= _names("scipy.sparse", f"{_fmt}_matrix {_fmt}_array")

# ---------------------------------------------------------------------------------------------------------------
# pandas: DataFrame/Series/Index and the extension arrays and dtypes they hold, under pandas 3 names
# (``pandas.DataFrame``) and the defining-module names pandas 1.x/2.x wrote (``pandas.core.frame.DataFrame``).
# No reader/writer (read_csv, read_pickle, HDFStore, ExcelWriter...) at any tier.
# ---------------------------------------------------------------------------------------------------------------
PANDAS_CALLABLES = (
    _names(
        "pandas",
        "DataFrame Series Index RangeIndex MultiIndex CategoricalIndex DatetimeIndex TimedeltaIndex PeriodIndex "
        "IntervalIndex Categorical CategoricalDtype DatetimeTZDtype PeriodDtype IntervalDtype SparseDtype "
        "StringDtype BooleanDtype ArrowDtype Int8Dtype Int16Dtype Int32Dtype Int64Dtype UInt8Dtype UInt16Dtype "
        "UInt32Dtype UInt64Dtype Float32Dtype Float64Dtype Timestamp Timedelta Period Interval DateOffset",
    )
    | _names(
        "pandas.arrays",
        "ArrowStringArray ArrowExtensionArray BooleanArray DatetimeArray FloatingArray IntegerArray "
        "PeriodArray SparseArray TimedeltaArray IntervalArray StringArray NumpyExtensionArray PandasArray "
        "Categorical",
    )
    | _names("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked")
    | _names("pandas._libs.internals", "_unpickle_block BlockPlacement")
    | _names("pandas._libs.sparse", "IntIndex BlockIndex")
    | _names("pandas._libs.interval", "Interval")
    # pandas.NA is a singleton value passed to dtype constructors.
    | _names("pandas", "NA NaT")
    | _names("pandas._libs.missing", "NAType NA")
    | _names("pandas.api.typing", "NAType")
    | _names("pandas._libs.tslibs.nattype", "_nat_unpickle __nat_unpickle")
    | _names("pandas._libs.tslibs.timestamps", "Timestamp _unpickle_timestamp")
    | _names("pandas._libs.tslibs.timedeltas", "Timedelta _timedelta_unpickle")
    | _names("pandas._libs.tslibs.period", "Period")
    | _names("pandas.core.indexes.base", "Index _new_Index")
    | _names("pandas.core.indexes.datetimes", "DatetimeIndex _new_DatetimeIndex")
    | _names("pandas.core.indexes.timedeltas", "TimedeltaIndex _new_TimedeltaIndex")
    | _names("pandas.core.indexes.period", "PeriodIndex _new_PeriodIndex")
    | _names("pandas.core.indexes.interval", "IntervalIndex _new_IntervalIndex")
    | _names("pandas.core.indexes.range", "RangeIndex")
    | _names("pandas.core.indexes.multi", "MultiIndex")
    | _names("pandas.core.indexes.category", "CategoricalIndex")
    | _names("pandas.core.indexes.numeric", "Int64Index UInt64Index Float64Index NumericIndex")
    | _names("pandas.core.frame", "DataFrame")
    | _names("pandas.core.series", "Series")
    | _names("pandas.core.internals.managers", "BlockManager SingleBlockManager")
    | _names(
        "pandas.core.internals.blocks",
        "Block NumpyBlock ObjectBlock DatetimeTZBlock ExtensionBlock CategoricalBlock DatetimeLikeBlock "
        "NumericBlock FloatBlock IntBlock new_block",
    )
    | _names("pandas.core.arrays.categorical", "Categorical")
    | _names("pandas.core.arrays.datetimes", "DatetimeArray")
    | _names("pandas.core.arrays.timedeltas", "TimedeltaArray")
    | _names("pandas.core.arrays.period", "PeriodArray")
    | _names("pandas.core.arrays.interval", "IntervalArray")
    | _names("pandas.core.arrays.integer", "IntegerArray Int8Dtype Int16Dtype Int32Dtype Int64Dtype UInt8Dtype "
             "UInt16Dtype UInt32Dtype UInt64Dtype")
    | _names("pandas.core.arrays.floating", "FloatingArray Float32Dtype Float64Dtype")
    | _names("pandas.core.arrays.boolean", "BooleanArray BooleanDtype")
    | _names("pandas.core.arrays.string_", "StringArray StringDtype")
    | _names("pandas.core.arrays.string_arrow", "ArrowStringArray")
    | _names("pandas.core.arrays.arrow.array", "ArrowExtensionArray")
    | _names("pandas.core.arrays.sparse.array", "SparseArray")
    | _names("pandas.core.arrays.numpy_", "PandasArray NumpyExtensionArray")
    | _names(
        "pandas.core.dtypes.dtypes",
        "CategoricalDtype DatetimeTZDtype PeriodDtype IntervalDtype SparseDtype ArrowDtype",
    )
    # pandas 3 stores string columns in Arrow: arrays are rebuilt from buffers by these three functions.
    | _names("pyarrow.lib", "_restore_array py_buffer type_for_alias")
    # skops rebuilds pandas' Arrow-backed string arrays from these array classes.
    | _names("pyarrow.lib", "StringArray LargeStringArray")
)

#: Modules whose classes (as defined there, checked by introspection) are date offsets: pure values.
PANDAS_INTROSPECTED_MODULES = ("pandas._libs.tslibs.offsets",)

# ---------------------------------------------------------------------------------------------------------------
# Gradient-boosting libraries' scikit-learn wrappers and boosters (the booster's state is the model in the
# library's own format) and joblib's array placeholder.
# ---------------------------------------------------------------------------------------------------------------
BOOSTING_CALLABLES = (
    _names("xgboost.sklearn", "XGBModel XGBClassifier XGBRegressor XGBRanker XGBRFClassifier XGBRFRegressor")
    | _names("xgboost.core", "Booster")
    | _names("lightgbm.sklearn", "LGBMModel LGBMClassifier LGBMRegressor LGBMRanker")
    | _names("lightgbm.basic", "Booster")
)

#: joblib replaces every array by this placeholder and writes the array's bytes right after it in the file
#: (the scanner skips them, see scanning); it is a plain object with no behaviour of its own.
JOBLIB_CALLABLES = _names("joblib.numpy_pickle", "NumpyArrayWrapper")

# ---------------------------------------------------------------------------------------------------------------
# PyTorch tensors, only for the pytorch flavour: the reconstruction helpers torch.load(weights_only=True) allows.
# ---------------------------------------------------------------------------------------------------------------
TORCH_CALLABLES = (
    _names(
        "torch._utils",
        "_rebuild_tensor _rebuild_tensor_v2 _rebuild_tensor_v3 _rebuild_parameter _rebuild_parameter_with_state "
        "_rebuild_sparse_tensor _rebuild_device_tensor_from_numpy _rebuild_meta_tensor_no_storage "
        "_rebuild_qtensor _rebuild_nested_tensor",
    )
    | _names("torch._tensor", "_rebuild_from_type_v2")
    | _names(
        "torch",
        "Tensor Size device dtype FloatStorage DoubleStorage HalfStorage BFloat16Storage LongStorage IntStorage "
        "ShortStorage CharStorage ByteStorage BoolStorage ComplexFloatStorage ComplexDoubleStorage "
        "float32 float64 float16 bfloat16 int64 int32 int16 int8 uint8 bool complex64 complex128 "
        "contiguous_format channels_last preserve_format",
    )
    | _names("torch.storage", "UntypedStorage TypedStorage _load_from_bytes")
    | _names("torch.nn.parameter", "Parameter")
)
# torch.storage._load_from_bytes calls torch.load on the bytes: it is dangerous, remove it again explicitly.
TORCH_CALLABLES.discard(("torch.storage", "_load_from_bytes"))

# ---------------------------------------------------------------------------------------------------------------
# scikit-learn, by introspection of the installed package.
# ---------------------------------------------------------------------------------------------------------------
#: Sub-packages never imported for the allowlist and never allowed: tests, dataset downloaders and file
#: readers, vendored third-party code, test helpers that run subprocesses, interactive callbacks that open
#: sockets and threads, build helpers.
SKLEARN_EXCLUDED_PREFIXES = (
    "sklearn.datasets",
    "sklearn.externals",
    "sklearn.experimental",
    "sklearn.callback",
    "sklearn._build_utils",
    "sklearn.__check_build",
    "sklearn._config",
    "sklearn.conftest",
    "sklearn.utils._testing",
    "sklearn.utils._mocking",
    "sklearn.utils.estimator_checks",
    "sklearn.utils._test_common",
    "sklearn.utils._show_versions",
    "sklearn.utils.fixes",
    "sklearn.utils.parallel",
    "sklearn.utils._joblib",
    "sklearn.utils._user_interface",
    "sklearn.utils._optional_dependencies",
)

#: Cython helpers scikit-learn's own pickles call: ``newObj(cls)`` returns ``cls.__new__(cls)``.
SKLEARN_HELPER_FUNCTIONS = frozenset({"newObj"})


def _sklearn_module_excluded(module: str) -> bool:
    parts = module.split(".")
    if any(p == "tests" or p.startswith("test_") or p == "conftest" for p in parts):
        return True
    return any(module == p or module.startswith(p + ".") for p in SKLEARN_EXCLUDED_PREFIXES)


@functools.lru_cache(maxsize=1)
def sklearn_definitions() -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
    """(classes and call-safe helpers, functions) *defined* in the installed scikit-learn, by module.

    Imports scikit-learn's own modules (trusted code installed with the control plane, never a name taken from an
    artifact) once per process; excluded sub-packages are skipped before they are imported.
    """
    classes: set[tuple[str, str]] = set()
    functions: set[tuple[str, str]] = set()
    try:
        import sklearn
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of mlflow
        logger.warning("scikit-learn is not importable: no scikit-learn class will pass the pickle allowlist")
        return frozenset(), frozenset()
    names = ["sklearn"] + [m.name for m in pkgutil.walk_packages(sklearn.__path__, "sklearn.",
                                                                   onerror=lambda _name: None)
                           if not _sklearn_module_excluded(m.name)]
    for modname in names:
        if _sklearn_module_excluded(modname):
            continue
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                module = importlib.import_module(modname)
        except Exception:  # noqa: BLE001, S112 - optional dependency missing: its classes stay unknown
            continue
        for attr, value in vars(module).items():
            if getattr(value, "__module__", None) != modname:
                continue  # re-exported from elsewhere: a genuine pickle never names it here
            if inspect.isclass(value) or attr in SKLEARN_HELPER_FUNCTIONS or attr.startswith("__pyx_unpickle_"):
                classes.add((modname, attr))
            elif callable(value) and IDENTIFIER.match(attr):
                functions.add((modname, attr))
    return frozenset(classes), frozenset(functions)


@functools.lru_cache(maxsize=1)
def introspected_value_classes() -> frozenset[tuple[str, str]]:
    """Classes defined in :data:`PANDAS_INTROSPECTED_MODULES` (date offsets), plus NumPy scalar types."""
    out: set[tuple[str, str]] = set()
    for modname in PANDAS_INTROSPECTED_MODULES:
        try:
            module = importlib.import_module(modname)
        except Exception:  # noqa: BLE001, S112 # pragma: no cover - pandas is a dependency of mlflow
            continue
        for attr, value in vars(module).items():
            if inspect.isclass(value) and getattr(value, "__module__", None) == modname:
                out.add((modname, attr))
    try:
        import numpy
    except ImportError:  # pragma: no cover
        return frozenset(out)
    for attr in dir(numpy):
        value = getattr(numpy, attr, None)
        # numpy.float64, numpy.int64, numpy.bool_, numpy.str_...: calling one builds a scalar.
        if inspect.isclass(value) and issubclass(value, numpy.generic):
            out.add(("numpy", attr))
    return frozenset(out)


@functools.lru_cache(maxsize=1)
def numerical_functions() -> frozenset[tuple[str, str]]:
    """NumPy ufuncs and plain NumPy functions, SciPy special functions: reference-tier only."""
    out: set[tuple[str, str]] = set()
    try:
        import numpy
    except ImportError:  # pragma: no cover
        return frozenset()
    for attr in dir(numpy):
        if attr in NUMPY_DENIED_NAMES or not IDENTIFIER.match(attr) or attr.startswith("_"):
            continue
        value = getattr(numpy, attr, None)
        if isinstance(value, numpy.ufunc) or (inspect.isfunction(value)
                                               and str(getattr(value, "__module__", "")).startswith("numpy")):
            out.add(("numpy", attr))
    try:
        special = importlib.import_module("scipy.special")
        for attr in dir(special):
            if not attr.startswith("_") and isinstance(getattr(special, attr, None), numpy.ufunc):
                out.add(("scipy.special", attr))
    except Exception:  # noqa: BLE001, S110 # pragma: no cover - scipy is a dependency of scikit-learn
        pass
    return frozenset(out)


# ---------------------------------------------------------------------------------------------------------------
# Families per flavour.
# ---------------------------------------------------------------------------------------------------------------
#: The tabular flavours all share one allowlist: an sklearn pipeline carries NumPy/SciPy/pandas objects and the
#: boosting libraries wrap sklearn estimators.
TABULAR_FLAVORS = frozenset({"sklearn", "xgboost", "lightgbm", "python_function", "pyfunc"})
TORCH_FLAVORS = frozenset({"pytorch", "torch"})


def families_for(flavors: set[str] | frozenset[str]) -> frozenset[str]:
    """The allowlist families for a set of MLflow flavour names (always includes the tabular ones)."""
    families = {"core", "numpy", "scipy", "pandas", "sklearn", "boosting", "joblib"}
    if flavors & TORCH_FLAVORS:
        families.add("torch")
    return frozenset(families)


@functools.lru_cache(maxsize=8)
def callables_for(families: frozenset[str]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set(CORE_CALLABLES) | DOTTED_CALLABLES
    if "numpy" in families:
        out |= NUMPY_CALLABLES
    if "scipy" in families:
        out |= SCIPY_CALLABLES
    if "pandas" in families:
        out |= PANDAS_CALLABLES
    if "boosting" in families:
        out |= BOOSTING_CALLABLES
    if "joblib" in families:
        out |= JOBLIB_CALLABLES
    if "torch" in families:
        out |= TORCH_CALLABLES
    if "sklearn" in families:
        out |= sklearn_definitions()[0]
    out |= introspected_value_classes()
    return frozenset(out)


@functools.lru_cache(maxsize=8)
def references_for(families: frozenset[str]) -> frozenset[tuple[str, str]]:
    out = set(callables_for(families)) | numerical_functions()
    if "sklearn" in families:
        out |= sklearn_definitions()[1]
    return frozenset(out)


# ---------------------------------------------------------------------------------------------------------------
# Severity of what is not allowed.
# ---------------------------------------------------------------------------------------------------------------
#: Modules (and packages, matched with their sub-modules) that run commands, evaluate code, import by name,
#: touch files or the network, or deserialize again. A global from one of them is *critical*; any other
#: global that is not allowed is *high*. This list only grades severity: the decision is the allowlist's.
DANGEROUS_MODULES = frozenset(
    """
    os posix nt subprocess commands sys runpy pty socket socketserver shutil importlib imp ctypes _ctypes
    pickle _pickle cPickle pickletools marshal webbrowser builtins __builtin__ code codeop pip pkgutil pydoc
    operator _operator functools asyncio idlelib io _io cProfile profile pstats timeit distutils setuptools
    trace bdb pdb venv ensurepip test lib2to3 multiprocessing threading _thread signal tempfile zipimport
    types inspect dill cloudpickle torch.utils torch.hub torch.jit torch.distributed torch.ops torch.storage
    mlflow http urllib urllib2 urllib3 requests aiohttp httplib ftplib smtplib telnetlib imaplib poplib
    nntplib ssl glob fileinput linecache tarfile zipfile sqlite3 shelve dbm numpy.testing numpy.f2py
    numpy.distutils numpy.ctypeslib numpy.lib.npyio numpy.lib._npyio_impl numpy.lib.format numpy.lib.utils
    pandas.io _posixsubprocess _interpreters _xxsubinterpreters _winapi msvcrt winreg site sysconfig
    _sitebuiltins doctest unittest string xmlrpc wsgiref logging numexpr sympy jinja2 keras tensorflow
    joblib sklearn.utils._testing sklearn.datasets sklearn.externals sklearn.callback scipy.io scipy.weave
    scipy.stats gc atexit readline rlcompleter getpass tkinter turtle antigravity this __main__ copyreg
    _codecs codecs mailcap
    """.split()  # noqa: SIM905
)

#: Attribute names that are dangerous whatever module they come from.
DANGEROUS_NAMES = frozenset(
    """
    eval exec compile system popen popen2 popen3 spawn spawnl spawnv spawnve spawnvp execv execve execl
    execvp call check_call check_output getoutput getstatusoutput run Popen __import__ import_module getattr
    setattr delattr globals locals vars open loads load load_module resolve_name locate main runcode
    runsource runctx runcall runeval run_path run_module _run_code _run_module_code write_file interact
    breakpoint input apply fork forkpty kill remove unlink rmtree urlopen urlretrieve read_csv read_pickle
    read_json read_sql read_html read_table read_excel read_parquet to_pickle save dump dumps create
    runstring _run_pip spawnv_passfds _run_entry_point collect_env debug_script attrgetter methodcaller
    itemgetter partial reduce
    """.split()  # noqa: SIM905
)


def is_dunder(name: str) -> bool:
    return any(part.startswith("__") and part.endswith("__") for part in name.split("."))


def danger_severity(module: str, name: str) -> str:
    """``critical`` for a known-dangerous module or name, else ``high`` (unknown is not allowed either)."""
    if is_dunder(name) or is_dunder(module):
        return "critical"
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) in DANGEROUS_MODULES:
            return "critical"
    last = name.split(".")[-1]
    if last in DANGEROUS_NAMES or name in DANGEROUS_NAMES:
        return "critical"
    return "high"


@dataclass(frozen=True)
class Verdict:
    """The allowlist's answer for one global in one use."""

    allowed: bool
    severity: str | None = None  # "critical" or "high" when not allowed
    reason: str = ""


def classify(module: str, name: str, *, tier: str, families: frozenset[str]) -> Verdict:
    """Is ``module.name`` allowed when used at ``tier`` ("call" or "reference") with these families?"""
    if not DOTTED_IDENTIFIER.match(module or "") or not DOTTED_IDENTIFIER.match(name or ""):
        return Verdict(False, "high", "is not a valid Python module/attribute name")
    if "." in name and (module, name) not in DOTTED_CALLABLES:
        sev = "critical" if is_dunder(name) else danger_severity(module, name)
        return Verdict(False, sev, "is a dotted attribute path (attribute traversal), which no model needs")
    if is_dunder(name):
        return Verdict(False, "critical", "is a dunder attribute (interpreter internals)")
    if (module, name) in GUARDED_CALLABLES:
        return Verdict(False, danger_severity(module, name),
                       "is allowed only as a direct call with validated constant arguments")
    allowed = callables_for(families) if tier == "call" else references_for(families)
    if (module, name) in allowed:
        return Verdict(True)
    if tier == "call" and (module, name) in references_for(families):
        return Verdict(False, danger_severity(module, name),
                       "may be kept as a reference but is called while loading")
    return Verdict(False, danger_severity(module, name), "is not on the model allowlist")
