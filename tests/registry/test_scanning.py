"""Artifact scanning (apps/registry/scanning.py): a clean corpus that must pass, hostile artifacts that must not.

Plain pytest, no database. The corpus is built at test time (tests/registry/corpus.py); every hostile payload
would only ``touch`` a marker file, and no test ever sees that marker: nothing is unpickled.

What each scanner says about the hostile corpus, alone (``test_comparison_table_is_current`` re-derives this
table from live runs and fails when it drifts; "error only" = the scanner reported a parse error and no issue):

| technique | source | modelscan alone | picklescan alone | Modelplane allowlist |
|---|---|---|---|---|
| classic_reduce | baseline | caught | caught | blocked (critical) |
| inst_protocol0 | https://github.com/protectai/modelscan/issues/51 | caught | caught | blocked (critical) |
| pkgutil_resolve_name | https://github.com/mmaitre314/picklescan/security/advisories/GHSA-vvpj-8cmc-gx39 | missed | caught | blocked (critical) |
| timeit | https://github.com/mmaitre314/picklescan/security/advisories/GHSA-v7x6-rv5q-mhwc | missed | caught | blocked (critical) |
| ensurepip_run_pip | https://github.com/mmaitre314/picklescan/security/advisories/GHSA-xp4f-hrf8-rxw7 | missed | caught | blocked (critical) |
| cprofile_runctx | https://github.com/mmaitre314/picklescan/security/advisories/GHSA-9w88-8rmg-7g2p | missed | caught | blocked (critical) |
| mlflow_run_entry_point | https://github.com/protectai/modelscan/issues/338 | missed | suspicious only | blocked (critical) |
| pandas_read_csv | https://github.com/protectai/modelscan/issues/338 | missed | suspicious only | blocked (critical) |
| numpy_f2py_eval | https://github.com/trailofbits/fickling/pull/210 | missed | caught | blocked (critical) |
| numpy_builtins_build | https://github.com/protectai/modelscan/issues/330 | missed | suspicious only | blocked (critical) |
| numpy_prod_memo | https://github.com/protectai/modelscan/issues/85 | missed | suspicious only | blocked (critical) |
| importlib_methodcaller | https://github.com/protectai/modelscan/issues/331 | missed | caught | blocked (critical) |
| truncated_after_payload | https://github.com/trailofbits/fickling/pull/139 | error only | caught | blocked (critical) |
| nonstandard_extension | https://github.com/mmaitre314/picklescan/security/advisories/GHSA-769v-p64c-89pr | missed | missed | blocked (critical) |
| zip_bad_crc | https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/ | missed | caught | blocked (critical) |
| joblib_zlib | modelplane | error only | missed | blocked (critical) |
| joblib_after_array | modelplane | error only | error only | blocked (critical) |
| compat_commands | modelplane | missed | caught | blocked (critical) |
| npz_object_array | modelplane | error only | caught | blocked (critical) |
| sklearn_reexport | modelplane | missed | suspicious only | blocked (critical) |
| stack_global_computed | modelplane | caught | caught | blocked (high) |
| cloudpickle_lambda | modelplane | missed | caught | blocked (critical) |
| skops_operator | modelplane | missed | missed | blocked (critical) |
| mlmodel_code_path | modelplane | missed | missed | blocked (high) |
| tar_path_traversal | modelplane | missed | missed | blocked (high) |
"""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from apps.registry import scanning
from apps.registry.scanning import Finding, ScanLimits, ScanResult, scan_directory
from tests.registry.corpus import (
    TECHNIQUES,
    Evil,
    build_clean_corpus,
    build_hostile_corpus,
    call,
    glob,
    proto,
    s,
    sglob,
)

OURS = scanning.SCANNER_NAME


def ours(result: ScanResult, prefix: str = "") -> list[Finding]:
    return [f for f in result.findings if f.scanner == OURS and f.file.startswith(prefix)]


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity in ("high", "critical")]


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


# ---------------------------------------------------------------------------------------------------------------
# Corpora (built and scanned once per session)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("marker") / "PAYLOAD-RAN"


@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    counts = build_clean_corpus(root)
    return root, counts, scan_directory(root)


@pytest.fixture(scope="session")
def hostile(tmp_path_factory, marker):
    root = tmp_path_factory.mktemp("hostile")
    build_hostile_corpus(root, marker)
    return root, scan_directory(root)


@pytest.fixture(scope="session")
def picklescan_verdicts(hostile) -> dict[str, str]:
    from picklescan.scanner import scan_directory_path

    root, _ = hostile
    out = {}
    for technique in TECHNIQUES:
        result = scan_directory_path(str(root / technique.key))
        out[technique.key] = ("caught" if result.issues_count else "error only" if result.scan_err
                              else "suspicious only" if result.suspicious_count else "missed")
    return out


def modelscan_verdict(result: ScanResult, key: str) -> str:
    mine = [f for f in result.findings if f.scanner == scanning.MODELSCAN_NAME and f.file.startswith(key + "/")]
    if any(f.code == "modelscan.unsafe_operator" for f in mine):
        return "caught"
    return "error only" if mine else "missed"


def our_verdict(result: ScanResult, key: str) -> str:
    found = blocking(ours(result, key + "/"))
    if not found:
        return "passed"
    return f"blocked ({max((f.severity for f in found), key=scanning.SEVERITY_RANK.__getitem__)})"


# ---------------------------------------------------------------------------------------------------------------
# The clean corpus: false positives matter
# ---------------------------------------------------------------------------------------------------------------
def test_clean_corpus_is_not_blocked(clean):
    _root, _counts, result = clean
    bad = [f for f in result.findings if scanning.SEVERITY_RANK[f.severity] >= scanning.SEVERITY_RANK["medium"]]
    assert not bad, "\n".join(f"{f.severity} {f.code} {f.file}: {f.message}" for f in bad)
    assert not result.blocked
    assert result.max_severity in ("info", "low")


def test_clean_corpus_every_pickle_was_actually_read(clean):
    root, counts, result = clean
    scanned = {f.file for f in result.findings if f.code == "pickle.scanned"}
    pickle_files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                          if p.suffix in (".pkl", ".joblib"))
    assert len(pickle_files) >= counts["pickle"] + counts["joblib"]
    missing = [name for name in pickle_files
               if not any(label == name or label.startswith(name + "!") for label in scanned)]
    assert not missing, missing
    assert result.files_scanned > len(pickle_files)
    # Each pickle's globals were checked: the summary says how many, and a sklearn model has several.
    summary = next(f for f in result.findings if f.code == "pickle.scanned" and f.file == "forest.p5.pkl")
    assert "globals, all on the allowlist" in summary.message
    assert int(summary.message.split("pickle: ")[1].split(" ")[0]) >= 5


def test_clean_corpus_compressed_joblib_is_decompressed_and_scanned(clean):
    _root, _counts, result = clean
    labels = {f.file for f in result.findings if f.code == "pickle.scanned"}
    assert "forest.zlib.joblib!<zlib>" in labels
    assert "forest.gz.joblib!<gzip>" in labels
    assert "forest.xz.joblib!<xz>" in labels
    joblib_summary = next(f for f in result.findings if f.code == "pickle.scanned" and f.file == "forest.joblib")
    assert "joblib array(s)" in joblib_summary.message


def test_clean_mlflow_models_in_every_serialization_format(clean):
    root, counts, result = clean
    assert counts["mlflow-skops"] == counts["mlflow-cloudpickle"] == counts["mlflow-pickle"] == 3
    mlmodel = (root / "mlflow_skops_forest" / "MLmodel").read_text()
    assert "serialization_format: skops" in mlmodel  # MLflow 3.17's default for sklearn
    labels = {(f.code, f.file) for f in result.findings}
    for name in ("logreg", "forest", "pipeline"):
        assert ("skops.scanned", f"mlflow_skops_{name}/model.skops!schema.json") in labels
        assert ("pickle.scanned", f"mlflow_cloudpickle_{name}/model.pkl") in labels
        assert ("pickle.scanned", f"mlflow_pickle_{name}/model.pkl") in labels


def test_clean_corpus_reports_scanner_versions(clean):
    _root, _counts, result = clean
    assert result.scanners[OURS] == scanning.SCANNER_VERSION
    assert result.scanners[scanning.MODELSCAN_NAME] == scanning.modelscan_version()
    assert result.duration_seconds > 0


# ---------------------------------------------------------------------------------------------------------------
# The hostile corpus
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: t.key)
def test_hostile_artifact_is_blocked(hostile, technique):
    _root, result = hostile
    found = blocking(ours(result, technique.key + "/"))
    assert found, f"{technique.key}: no high/critical finding from the allowlist scanner"
    assert codes(found) & set(technique.expect_codes), (technique.key, sorted(codes(found)))
    for finding in found:
        if finding.code == "pickle.global_not_allowed":
            assert finding.message.split(" ")[0].count(".") >= 1, finding.message  # names module.attribute


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: t.key)
def test_modelscan_alone_matches_the_table(hostile, technique):
    _root, result = hostile
    assert modelscan_verdict(result, technique.key) == technique.modelscan


@pytest.mark.parametrize("technique", TECHNIQUES, ids=lambda t: t.key)
def test_picklescan_alone_matches_the_table(picklescan_verdicts, technique):
    assert picklescan_verdicts[technique.key] == technique.picklescan


def test_no_payload_ever_ran(hostile, clean, marker):
    assert not marker.exists()


def test_published_bypasses_that_modelscan_alone_misses_are_blocked(hostile):
    _root, result = hostile
    rescued = [t for t in TECHNIQUES if t.published and t.modelscan != "caught"
               and our_verdict(result, t.key).startswith("blocked")]
    assert len(rescued) >= 5, [t.key for t in rescued]


def _table(result: ScanResult, picklescan_verdicts: dict[str, str]) -> str:
    lines = ["| technique | source | modelscan alone | picklescan alone | Modelplane allowlist |",
             "|---|---|---|---|---|"]
    for t in TECHNIQUES:
        lines.append(f"| {t.key} | {t.source} | {modelscan_verdict(result, t.key)} | {picklescan_verdicts[t.key]} | "
                     f"{our_verdict(result, t.key)} |")
    return "\n".join(lines)


def test_comparison_table_is_current(hostile, picklescan_verdicts):
    _root, result = hostile
    table = _table(result, picklescan_verdicts)
    print("\n" + table)
    assert table in __doc__, "the table in this module's docstring is stale; replace it with:\n" + table


def test_scanning_never_unpickles(tmp_path, marker, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the scanner must never unpickle")

    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    build_dir = tmp_path / "h"
    monkeypatch.undo()  # the corpus builders use pickle.dumps / joblib, which is fine
    build_hostile_corpus(build_dir, marker)
    for name in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    result = scan_directory(build_dir, run_modelscan=False)
    assert result.blocked
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------------------------
def test_result_severity_and_blocked():
    empty = ScanResult()
    assert empty.max_severity is None and not empty.blocked
    low = ScanResult(findings=[Finding("low", OURS, "a", "x.y", "m")])
    assert low.max_severity == "low" and not low.blocked
    mixed = ScanResult(findings=[Finding("medium", OURS, "a", "x", "m"), Finding("high", OURS, "b", "y", "n")])
    assert mixed.max_severity == "high" and mixed.blocked
    data = mixed.to_dict()
    assert data["blocked"] is True and data["max_severity"] == "high"
    assert data["findings"][1] == {"severity": "high", "scanner": OURS, "file": "b", "code": "y", "message": "n",
                                   "offset": None}


def test_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_directory(tmp_path / "nope", run_modelscan=False)


def _scan(tmp_path: Path, **kwargs) -> ScanResult:
    return scan_directory(tmp_path, run_modelscan=False, **kwargs)


def _write_pickle(path: Path, body: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def only(result: ScanResult, code: str) -> Finding:
    matches = [f for f in result.findings if f.code == code]
    assert matches, f"no {code} in {[(f.code, f.message) for f in result.findings]}"
    return matches[0]


# -- pickle semantics -----------------------------------------------------------------------------------------------
def test_unknown_global_is_high_and_known_dangerous_is_critical(tmp_path):
    _write_pickle(tmp_path / "a.pkl", proto(4) + call(sglob("colorsys", "rgb_to_hsv"), s("1")) + pickle.STOP)
    _write_pickle(tmp_path / "b.pkl", proto(4) + call(sglob("subprocess", "Popen"), s("x")) + pickle.STOP)
    result = _scan(tmp_path)
    by_file = {f.file: f for f in result.findings if f.code == "pickle.global_not_allowed"}
    assert by_file["a.pkl"].severity == "high" and "colorsys.rgb_to_hsv" in by_file["a.pkl"].message
    assert by_file["b.pkl"].severity == "critical" and "subprocess.Popen" in by_file["b.pkl"].message


def test_reference_only_function_passes_but_calling_it_does_not(tmp_path):
    # numpy.log1p stored in a dict is what FunctionTransformer(np.log1p) pickles to; calling it while loading is not.
    _write_pickle(tmp_path / "ref.pkl", proto(4) + pickle.EMPTY_DICT + s("f") + sglob("numpy", "log1p")
                  + pickle.SETITEM + pickle.STOP)
    _write_pickle(tmp_path / "call.pkl", proto(4) + call(sglob("numpy", "log1p"), pickle.BININT1 + b"\x01")
                  + pickle.STOP)
    result = _scan(tmp_path)
    assert not blocking(ours(result, "ref.pkl"))
    finding = only(result, "pickle.global_not_allowed")
    assert finding.file == "call.pkl" and "called while loading" in finding.message


def test_dunder_and_dotted_names_are_refused(tmp_path):
    _write_pickle(tmp_path / "dunder.pkl", proto(4) + sglob("sklearn", "__builtins__") + pickle.STOP)
    _write_pickle(tmp_path / "dotted.pkl", proto(4) + sglob("numpy", "ndarray.tofile") + pickle.STOP)
    result = _scan(tmp_path)
    findings = {f.file: f for f in result.findings if f.code == "pickle.global_not_allowed"}
    assert findings["dunder.pkl"].severity == "critical"
    assert "dotted attribute path" in findings["dotted.pkl"].message
    assert findings["dotted.pkl"].severity in ("high", "critical")


def test_build_and_setitem_on_a_global_are_critical(tmp_path):
    _write_pickle(tmp_path / "build.pkl", proto(4) + sglob("numpy", "ndarray") + pickle.EMPTY_DICT + pickle.BUILD
                  + pickle.STOP)
    _write_pickle(tmp_path / "setitem.pkl", proto(4) + sglob("collections", "OrderedDict") + s("k") + s("v")
                  + pickle.SETITEM + pickle.STOP)
    result = _scan(tmp_path)
    assert only(result, "pickle.build_on_global").severity == "critical"
    assert only(result, "pickle.mutates_global").file == "setitem.pkl"


def test_guarded_helpers_need_checkable_arguments(tmp_path):
    _write_pickle(tmp_path / "latin1.pkl", proto(2) + call(glob("_codecs", "encode"), s("abc"), s("latin1"))
                  + pickle.STOP)
    _write_pickle(tmp_path / "computed.pkl", proto(2) + call(glob("_codecs", "encode"), s("abc"),
                                                             call(glob("__builtin__", "str"), s("x")))
                  + pickle.STOP)
    _write_pickle(tmp_path / "getattr_ok.pkl", proto(4) + call(sglob("builtins", "getattr"), sglob("zoneinfo", "ZoneInfo"),
                                                               s("_unpickle")) + pickle.STOP)
    _write_pickle(tmp_path / "getattr_bad.pkl", proto(4) + call(sglob("builtins", "getattr"),
                                                                sglob("collections", "OrderedDict"), s("fromkeys"))
                  + pickle.STOP)
    result = _scan(tmp_path)
    assert not blocking(ours(result, "latin1.pkl"))
    assert not blocking(ours(result, "getattr_ok.pkl"))
    assert blocking(ours(result, "computed.pkl"))
    bad = only(result, "pickle.getattr_not_allowed")
    assert bad.file == "getattr_bad.pkl" and bad.severity == "critical" and "fromkeys" in bad.message


def test_protocol2_import_mapping_is_applied(tmp_path):
    _write_pickle(tmp_path / "m.pkl", proto(2) + call(glob("copy_reg", "_reconstructor"), glob("__builtin__", "set"),
                                                      glob("__builtin__", "object"), pickle.NONE) + pickle.STOP)
    _write_pickle(tmp_path / "c.pkl", proto(2) + glob("commands", "getoutput") + pickle.STOP)
    result = _scan(tmp_path)
    assert not blocking(ours(result, "m.pkl"))
    finding = only(result, "pickle.global_not_allowed")
    assert finding.file == "c.pkl" and finding.severity == "critical"
    assert "subprocess.getoutput" in finding.message and "commands.getoutput" in finding.message


def test_extension_registry_and_memo_tricks(tmp_path):
    _write_pickle(tmp_path / "ext.pkl", proto(2) + pickle.EXT1 + b"\x07" + pickle.STOP)
    # A GET of a memo slot never stored: the real unpickler raises, and so the stream is unparseable.
    _write_pickle(tmp_path / "memo.pkl", proto(4) + pickle.BINGET + b"\x05" + pickle.STOP)
    result = _scan(tmp_path)
    assert only(result, "pickle.extension_registry").severity == "high"
    assert only(result, "pickle.unparseable").file == "memo.pkl"


def test_broken_pickles_block_when_the_prefix_imports_and_unknown_binaries_are_ignored(tmp_path):
    import random

    (tmp_path / "garbage.pkl").write_bytes(b"\x00\x01\x02 not a pickle")
    (tmp_path / "idl.sav").write_bytes(b"SR\x00\x04\x00\x00\x00\x00")  # IDL save file, not a pickle
    (tmp_path / "cut.pkl").write_bytes(proto(4) + sglob("collections", "OrderedDict") + pickle.EMPTY_TUPLE)
    (tmp_path / "weights.bin").write_bytes(random.Random(0).randbytes(1 << 16))
    (tmp_path / "notes.txt").write_text("cos\nsystem\n(S'hi'\ntR.")  # text files are not sniffed as pickles
    result = _scan(tmp_path)
    unparseable = {f.file: f.severity for f in result.findings if f.code == "pickle.unparseable"}
    assert unparseable == {"garbage.pkl": "medium", "idl.sav": "medium", "cut.pkl": "high"}
    assert not ours(result, "weights.bin") and not ours(result, "notes.txt")


def test_random_binaries_never_look_like_pickles(tmp_path):
    import random

    rng = random.Random(1)
    for i in range(200):
        (tmp_path / f"blob{i}.data").write_bytes(rng.randbytes(rng.randint(1, 4096)))
    result = _scan(tmp_path)
    assert not [f for f in result.findings if f.severity != "info"]


def test_renamed_protocol0_pickle_is_found_by_content(tmp_path, marker):
    (tmp_path / "weights.data0").write_bytes(b"cposix\nsystem\n(S'" + f"touch {marker}".encode() + b"'\ntR")
    result = _scan(tmp_path)
    assert codes(blocking(ours(result))) >= {"pickle.global_not_allowed", "pickle.unparseable"}


def test_trailing_bytes_after_stop_are_only_info(tmp_path):
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4) + b"\x00" * 64)
    result = _scan(tmp_path)
    assert not result.blocked
    assert only(result, "pickle.trailing_data").severity == "info"


def test_nested_pickle_in_bytes_is_scanned(tmp_path, marker):
    inner = pickle.dumps(Evil(marker), protocol=4)
    outer = proto(4) + pickle.BINBYTES + struct.pack("<I", len(inner)) + inner + pickle.STOP
    (tmp_path / "model.pkl").write_bytes(outer)
    result = _scan(tmp_path)
    finding = only(result, "pickle.global_not_allowed")
    assert "embedded as bytes" in finding.message and finding.severity == "critical"


def test_torch_helpers_need_the_pytorch_flavor(tmp_path):
    body = proto(2) + call(glob("torch._utils", "_rebuild_tensor_v2"), pickle.NONE, pickle.BININT1 + b"\x00") + \
        pickle.STOP
    (tmp_path / "data.pkl").write_bytes(body)
    assert _scan(tmp_path).blocked
    assert not _scan(tmp_path, flavor_hint="pytorch").blocked


def test_joblib_file_read_as_plain_pickle_cannot_hide_a_payload_in_padding(tmp_path, marker):
    """joblib skips `padding` bytes after an array placeholder; pickle.load reads them as opcodes."""
    payload = b"posix\nsystem\n(S'" + f"touch {marker}".encode() + b"'\ntR."
    pad = b"c" + payload  # the padding-length byte is 'c' (99): joblib skips 99 bytes, pickle.load sees GLOBAL
    pad = pad + b"\xff" * (1 + 99 - len(pad))
    state = (pickle.EMPTY_DICT + pickle.MARK + s("subclass") + sglob("numpy", "ndarray") + s("shape")
             + pickle.BININT1 + b"\x02" + pickle.TUPLE1 + s("order") + s("C") + s("dtype")
             + call(sglob("numpy", "dtype"), s("u1"), pickle.NEWFALSE, pickle.NEWTRUE)
             + pickle.MARK + pickle.BININT1 + b"\x03" + s("|") + pickle.NONE * 3 + pickle.BININT + struct.pack("<i", -1)
             + pickle.BININT + struct.pack("<i", -1) + pickle.BININT1 + b"\x00" + pickle.TUPLE + pickle.BUILD
             + s("allow_mmap") + pickle.NEWFALSE + s("numpy_array_alignment_bytes") + pickle.BININT1 + b"\x10"
             + pickle.SETITEMS)
    body = (proto(4) + sglob("joblib.numpy_pickle", "NumpyArrayWrapper") + pickle.EMPTY_TUPLE + pickle.NEWOBJ
            + state + pickle.BUILD + pad + b"\x01\x02" + pickle.STOP)
    (tmp_path / "model.joblib").write_bytes(body)
    result = _scan(tmp_path)
    finding = only(result, "pickle.global_not_allowed")
    assert "posix.system" in finding.message and "plain pickle.load" in finding.message
    assert finding.severity == "critical"


def test_mlflow_declared_pickle_is_read_the_way_mlflow_reads_it(tmp_path):
    import joblib
    import numpy as np

    joblib.dump(np.arange(5.0), tmp_path / "model.pkl")  # a joblib file where MLflow will call pickle.load
    (tmp_path / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
                                      "    serialization_format: pickle\n")
    result = _scan(tmp_path)
    assert only(result, "pickle.unparseable").file == "model.pkl"


# -- containers and limits ------------------------------------------------------------------------------------------
def test_zip_bomb_and_gzip_bomb_hit_the_limit(tmp_path):
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.pkl", b"\x00" * (4 * 1024 * 1024))
    (tmp_path / "bomb.pkl.gz").write_bytes(gzip.compress(b"\x00" * (4 * 1024 * 1024)))
    result = _scan(tmp_path, limits=ScanLimits(max_member_bytes=1024 * 1024))
    files = {f.file for f in result.findings if f.code == "archive.too_large" and f.severity == "high"}
    assert "bomb.zip!zeros.pkl" in files
    assert any(f.startswith("bomb.pkl.gz") for f in files)


def test_archive_depth_limit(tmp_path):
    data = pickle.dumps([1, 2], protocol=4)
    for level in range(4):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{level}.zip" if level else "x.pkl", data)
        data = buf.getvalue()
    (tmp_path / "nested.zip").write_bytes(data)
    result = _scan(tmp_path, limits=ScanLimits(max_archive_depth=2))
    assert only(result, "archive.too_deep").severity == "high"
    assert "nested.zip!level3.zip!level2.zip" in {f.file for f in result.findings if f.code == "archive.too_deep"}


def test_zip_path_traversal_and_duplicate_members(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("../../evil.txt", "x")
        zf.writestr("data.pkl", pickle.dumps(1))
        with pytest.warns(UserWarning):
            zf.writestr("data.pkl", pickle.dumps(2))
    result = _scan(tmp_path)
    assert only(result, "archive.path_traversal").file == "a.zip!../../evil.txt"
    assert only(result, "archive.duplicate_member").severity == "high"


def test_tar_links_are_refused(tmp_path):
    with tarfile.open(tmp_path / "m.tar", "w") as tf:
        info = tarfile.TarInfo("model.pkl")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    result = _scan(tmp_path)
    assert only(result, "archive.link").severity == "high"


def test_symlinks_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pkl").write_bytes(pickle.dumps(1))
    model = tmp_path / "model"
    model.mkdir()
    (model / "real.pkl").write_bytes(pickle.dumps(2))
    os.symlink(outside / "secret.pkl", model / "escape.pkl")
    os.symlink(model / "real.pkl", model / "alias.pkl")
    result = scan_directory(model, run_modelscan=False)
    assert only(result, "file.symlink_outside").file == "escape.pkl"
    assert only(result, "file.symlink").severity == "low"


def test_7z_is_reported_but_not_blocking(tmp_path):
    (tmp_path / "weights.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 32)
    result = _scan(tmp_path)
    assert only(result, "archive.unsupported").severity == "medium"
    assert not result.blocked


def test_deadline(tmp_path):
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(1))
    result = _scan(tmp_path, limits=ScanLimits(deadline_seconds=0))
    assert only(result, "scan.deadline").severity == "high"


def test_npy_structured_dtype_is_not_mistaken_for_objects(tmp_path):
    import numpy as np

    np.save(tmp_path / "rec.npy", np.zeros(3, dtype=[("Orders", "<f8"), ("Open", "<i4")]))
    result = _scan(tmp_path)
    assert not [f for f in result.findings if f.code.startswith(("pickle.", "numpy."))]


# -- other formats --------------------------------------------------------------------------------------------------
def test_mlmodel_checks(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: my_company.loader\n    model_code_path: agent.py\n"
        "    data: ../../etc\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "MLmodel").write_text("flavors: [unclosed\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "helper.py").write_text("print('hi')\n")
    result = _scan(tmp_path)
    assert only(result, "mlmodel.custom_loader_module").severity == "medium"
    assert only(result, "mlmodel.model_code").severity == "high"
    assert only(result, "mlmodel.path_outside").severity == "high"
    assert only(result, "mlmodel.unparseable").file == "b/MLmodel"
    assert only(result, "file.python_code").severity == "medium"


def test_environment_files_with_other_package_sources(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "scikit-learn==1.9.1\n--extra-index-url http://pypi.attacker.invalid/simple\n"
        "git+https://example.invalid/evil.git\n")
    (tmp_path / "conda.yaml").write_text("dependencies:\n- python=3.11\n- pip:\n  - -i http://x.invalid/simple\n")
    result = _scan(tmp_path)
    assert {(f.file, f.code) for f in result.findings if f.severity == "medium"} >= {
        ("requirements.txt", "environment.package_source"), ("requirements.txt", "environment.direct_reference"),
        ("conda.yaml", "environment.package_source")}
    assert not result.blocked


def test_skops_schema_types_are_checked(tmp_path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    sio.dump(LogisticRegression(), tmp_path / "ok.skops")
    bad = tmp_path / "bad.skops"
    with zipfile.ZipFile(tmp_path / "ok.skops") as src, zipfile.ZipFile(bad, "w") as dst:
        schema = json.loads(src.read("schema.json"))
        schema["__module__"], schema["__class__"] = "sklearn.utils._testing", "TempMemmap"
        dst.writestr("schema.json", json.dumps(schema))
    result = _scan(tmp_path)
    assert not blocking(ours(result, "ok.skops"))
    finding = only(result, "skops.type_not_allowed")
    assert finding.file == "bad.skops!schema.json" and "sklearn.utils._testing.TempMemmap" in finding.message


def test_safetensors_header_is_validated(tmp_path):
    def safetensors(header: dict, data: bytes) -> bytes:
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + data

    (tmp_path / "ok.safetensors").write_bytes(
        safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 8))
    (tmp_path / "bad.safetensors").write_bytes(
        safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}, b"\x00" * 8))
    result = _scan(tmp_path)
    assert only(result, "safetensors.ok").file == "ok.safetensors"
    assert only(result, "safetensors.invalid").file == "bad.safetensors"


def _pb_field(number: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_onnx_custom_domain_and_external_data(tmp_path):
    node = _pb_field(7, b"com.attacker.ops")
    entry = _pb_field(1, b"location") + _pb_field(2, b"../../../etc/shadow")
    tensor = _pb_field(13, entry)
    graph = _pb_field(1, node) + _pb_field(5, tensor)
    (tmp_path / "model.onnx").write_bytes(_pb_field(7, graph))
    result = _scan(tmp_path)
    assert only(result, "onnx.custom_domain").severity == "medium"
    assert only(result, "onnx.external_data_outside").severity == "high"


def test_keras_lambda_layer(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as zf:
        zf.writestr("config.json", json.dumps({"config": {"layers": [{"class_name": "Lambda", "config": {}}]}}))
        zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    result = _scan(tmp_path)
    assert only(result, "keras.lambda_layer").severity == "high"


# -- modelscan wiring -----------------------------------------------------------------------------------------------
def test_modelscan_report_mapping(tmp_path):
    report = {"issues": [{"module": "posix", "operator": "system", "source": "sub/model.pkl", "scanner": "pickle",
                          "severity": "CRITICAL"}],
              "errors": [{"description": "Parsing error", "source": "x.npz:a.npy"}]}
    findings = scanning._map_modelscan_report(report, tmp_path)
    assert findings[0] == Finding("critical", "modelscan", "sub/model.pkl", "modelscan.unsafe_operator",
                                  "modelscan: unsafe operator posix.system (pickle)")
    assert findings[1].file == "x.npz!a.npy" and findings[1].severity == "low"


def test_modelscan_missing_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(scanning, "modelscan_version", lambda: None)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(1))
    result = scan_directory(tmp_path)
    assert only(result, "scanner.unavailable").severity == "medium"
    assert scanning.MODELSCAN_NAME not in result.scanners


def test_modelscan_finds_what_it_knows(tmp_path, marker):
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Evil(marker), protocol=4))
    version, findings = scanning.run_modelscan_subprocess(tmp_path)
    assert version == scanning.modelscan_version()
    assert [f.code for f in findings] == ["modelscan.unsafe_operator"]
    assert findings[0].file == "model.pkl" and findings[0].severity == "critical"


# -- the allowlist itself -------------------------------------------------------------------------------------------
def test_allowlist_names_classes_where_they_are_defined_not_where_re_exported():
    from apps.registry import pickle_allowlist as allow

    families = allow.families_for(set())
    assert allow.classify("sklearn.linear_model._logistic", "LogisticRegression", tier="call", families=families).allowed
    assert allow.classify("sklearn.tree._tree", "Tree", tier="call", families=families).allowed
    # types.MethodType and pathlib.Path, imported into scikit-learn modules: a prefix rule would let them through.
    for module, name in (("sklearn.utils._available_if", "MethodType"), ("sklearn.utils.discovery", "Path"),
                         ("sklearn.tree._export", "StringIO")):
        verdict = allow.classify(module, name, tier="call", families=families)
        assert not verdict.allowed and verdict.severity == "high", (module, name)


def test_allowlist_tiers_and_families():
    from apps.registry import pickle_allowlist as allow

    tabular = allow.families_for({"sklearn"})
    assert allow.classify("numpy", "log1p", tier="reference", families=tabular).allowed
    assert not allow.classify("numpy", "log1p", tier="call", families=tabular).allowed
    assert not allow.classify("numpy", "load", tier="reference", families=tabular).allowed
    assert allow.classify("sklearn.metrics._ranking", "roc_auc_score", tier="reference", families=tabular).allowed
    assert not allow.classify("torch._utils", "_rebuild_tensor_v2", tier="call", families=tabular).allowed
    assert allow.classify("torch._utils", "_rebuild_tensor_v2", tier="call",
                          families=allow.families_for({"pytorch"})).allowed
    assert not allow.classify("torch.storage", "_load_from_bytes", tier="call",
                              families=allow.families_for({"pytorch"})).allowed
    guarded = allow.classify("builtins", "getattr", tier="call", families=tabular)
    assert not guarded.allowed and guarded.severity == "critical"
    assert allow.classify("pkgutil", "resolve_name", tier="call", families=tabular).severity == "critical"
    assert allow.classify("colorsys", "hls_to_rgb", tier="call", families=tabular).severity == "high"


def test_python_in_a_code_directory_is_code_that_runs(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "numpy.py").write_text("raise SystemExit\n")
    result = _scan(tmp_path)
    assert only(result, "file.python_code").severity == "high"
