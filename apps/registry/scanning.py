"""Static security scan of a model version's artifacts, before anything loads them.

``scan_directory(path)`` walks every file of a downloaded MLflow artifact tree (and the members of the zip, tar
and compressed containers inside it, with limits against bombs), finds every pickle stream by its content, and
reads its opcodes with :func:`pickletools.genops` without ever unpickling. A small symbolic pickle machine
follows the stack and the memo, so every ``GLOBAL``/``STACK_GLOBAL``/``INST`` is resolved to the name the
real unpickler would import (including memo indirection and the protocol-2 ``_compat_pickle`` renames, where
``commands`` becomes ``subprocess``), and it knows how each global is *used*: called (``REDUCE``, ``NEWOBJ``,
``OBJ``, ``INST``, an argument of a call), only referenced, or abused as the target of ``BUILD``/``SETITEM``.
Each name is checked against :mod:`apps.registry.pickle_allowlist`; anything else is a finding that names it.

Alongside it runs a maintained blocklist scanner (modelscan, in a subprocess with a time and memory limit) whose
issues are mapped into findings, and checks of the non-pickle formats MLflow writes or loads: skops
``schema.json`` (MLflow 3.17's default for scikit-learn), ``MLmodel`` (loader modules, code paths, models from
code), the environment files the model server will ``pip install``, safetensors and ONNX headers, Keras
``Lambda`` layers.

Severities: ``critical`` (a known code-execution primitive), ``high`` (cannot be shown safe: unknown global,
unresolvable name, malformed stream that ``pickle.load`` would still execute up to the error, content too large
or too deep to inspect), ``medium`` (needs a human look: custom loader module, package index options, formats
we cannot open), ``low``/``info`` (context). A result with any critical or high finding is ``blocked``.
"""
from __future__ import annotations

import _compat_pickle
import ast
import bz2
import gc
import io
import itertools
import json
import logging
import lzma
import os
import pickletools
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import yaml

from apps.registry import pickle_allowlist as allow

logger = logging.getLogger(__name__)

SCANNER_NAME = "modelplane-allowlist"
SCANNER_VERSION = f"1.0 (allowlist {allow.ALLOWLIST_VERSION})"
MODELSCAN_NAME = "modelscan"

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
BLOCKING = frozenset({"high", "critical"})


# =================================================================================================================
# Results
# =================================================================================================================
@dataclass(frozen=True)
class Finding:
    """One problem (or one fact, at info) about one file of the artifacts."""

    severity: str
    scanner: str
    file: str  # relative POSIX path; archive members as "outer.zip!inner/member"
    code: str  # short stable id, e.g. "pickle.global_not_allowed"
    message: str
    offset: int | None = None  # byte offset in the (decompressed) file, where it applies

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanResult:
    """Everything one scan found, which files it read and which scanners (with versions) took part."""

    findings: list[Finding] = field(default_factory=list)
    files_scanned: int = 0
    scanners: dict[str, str] = field(default_factory=dict)
    duration_seconds: float = 0.0

    @property
    def max_severity(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=SEVERITY_RANK.__getitem__)

    @property
    def blocked(self) -> bool:
        return any(f.severity in BLOCKING for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "files_scanned": self.files_scanned,
            "scanners": dict(self.scanners),
            "max_severity": self.max_severity,
            "blocked": self.blocked,
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep a hostile artifact from exhausting the worker (zip bombs, deep nesting, endless scans).

    Content that cannot be inspected within them is a *high* finding: a loader would still read it.
    """

    max_archive_depth: int = 4
    max_archive_members: int = 20_000
    max_member_bytes: int = 8 * 1024**3  # one extracted/decompressed member
    max_total_extracted_bytes: int = 32 * 1024**3  # all extraction of one scan
    max_nested_pickle_bytes: int = 256 * 1024**2  # pickles embedded as bytes constants
    max_text_bytes: int = 8 * 1024**2  # MLmodel, requirements, schema.json, config.json
    max_line_bytes: int = 512 * 1024**2  # one protocol-0 text argument
    max_memo_entries: int = 50_000_000
    max_streams_per_file: int = 64
    deadline_seconds: float = 3600.0
    modelscan_timeout_seconds: float = 1800.0
    modelscan_memory_bytes: int = 8 * 1024**3


DEFAULT_LIMITS = ScanLimits()


def scan_directory(
    path: Path,
    *,
    flavor_hint: str | None = None,
    limits: ScanLimits | None = None,
    run_modelscan: bool = True,
) -> ScanResult:
    """Scan every file under ``path`` (an MLflow model version's downloaded artifacts) without loading any.

    ``flavor_hint`` (an MLflow flavour name such as ``"sklearn"`` or ``"pytorch"``) widens the allowlist to that
    flavour's reconstruction helpers; the flavours declared by ``MLmodel`` files are added to it.
    """
    started = time.monotonic()
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(root)
    scan = _Scan(root, flavor_hint=flavor_hint, limits=limits or DEFAULT_LIMITS)
    try:
        scan.run()
    finally:
        scan.close()
    result = ScanResult(findings=scan.sorted_findings(), files_scanned=scan.files_scanned,
                        scanners={SCANNER_NAME: SCANNER_VERSION})
    if run_modelscan:
        version, findings = run_modelscan_subprocess(root, limits or DEFAULT_LIMITS)
        if version:
            result.scanners[MODELSCAN_NAME] = version
        result.findings.extend(_reconcile_modelscan(findings, scan.validated_guarded))
    result.duration_seconds = time.monotonic() - started
    return result


# =================================================================================================================
# The walk
# =================================================================================================================
PICKLE_EXTENSIONS = frozenset({".pkl", ".pickle", ".pk", ".p", ".joblib", ".jbl", ".dill", ".cloudpickle", ".sav"})
TEXT_EXTENSIONS = frozenset({".py", ".md", ".txt", ".yaml", ".yml", ".json", ".csv", ".tsv", ".html", ".cfg",
                             ".toml", ".ini", ".rst", ".xml", ".svg", ".js", ".css", ".ipynb", ".sh"})
COMPRESSION_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".lzma", ".z", ".zst", ".lz4"})
PYTHON_CODE_EXTENSIONS = frozenset({".py", ".pyc", ".pyo", ".pyw", ".so", ".pyd"})
REQUIREMENTS_NAMES = frozenset({"requirements.txt", "conda.yaml", "python_env.yaml"})


@dataclass
class _Blob:
    """One file to scan: on disk, or extracted from a container into the scan's private temp dir."""

    label: str
    path: Path
    depth: int = 0
    strict_pickle: bool = False  # declared or named as a pickle: a malformed stream is a finding

    @property
    def name(self) -> str:
        return PurePosixPath(self.label.split("!")[-1]).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()


class _ScanAborted(Exception):
    pass


class _Scan:
    def __init__(self, root: Path, *, flavor_hint: str | None, limits: ScanLimits):
        self.root = root
        self.limits = limits
        self.deadline = time.monotonic() + limits.deadline_seconds
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str, str]] = set()
        self.files_scanned = 0
        self.extracted_bytes = 0
        self.flavors: set[str] = {flavor_hint} if flavor_hint else set()
        self.declared_pickles: set[str] = set()
        # Files MLmodel says are read with pickle.load/cloudpickle.load: read them exactly that way, no joblib.
        self.plain_pickles: set[str] = set()
        self.code_dirs: set[str] = set()
        # Per file, the guarded globals (builtins.getattr...) whose every use the pickle machine validated.
        self.validated_guarded: dict[str, set[str]] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="modelplane-scan-")
        self._tmp_counter = 0
        self.families: frozenset[str] = allow.families_for(set())

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def add(self, severity: str, code: str, file: str, message: str, offset: int | None = None,
            scanner: str = SCANNER_NAME) -> None:
        key = (file, code, message)
        if key in self._seen:
            return
        self._seen.add(key)
        self.findings.append(Finding(severity, scanner, file, code, message, offset))

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.file, f.code, f.offset or 0))

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise _ScanAborted("deadline")

    def close(self) -> None:
        self._tmp.cleanup()

    def temp_path(self) -> Path:
        self._tmp_counter += 1
        return Path(self._tmp.name) / f"m{self._tmp_counter}"

    # -- top level -----------------------------------------------------------------------------------------------
    def run(self) -> None:
        files = self._walk_disk()
        for rel, full in files:
            if PurePosixPath(rel).name == "MLmodel":
                self._check_mlmodel(rel, full)
        self.families = allow.families_for(self.flavors)
        try:
            for rel, full in files:
                blob = _Blob(label=rel, path=full, strict_pickle=self._strict_by_name(rel))
                self.scan_blob(blob)
        except _ScanAborted:
            self.add("high", "scan.deadline", ".", f"scan stopped after {self.limits.deadline_seconds:.0f}s; the "
                     "files not reached are unverified")

    def _walk_disk(self) -> list[tuple[str, Path]]:
        """Regular files under the root, sorted; links and special files become findings, never followed."""
        out: list[tuple[str, Path]] = []
        if self.root.is_file():
            return [(self.root.name, self.root)]
        root_real = os.path.realpath(self.root)
        stack = [self.root]
        while stack:
            current = stack.pop()
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as exc:
                self.add("high", "file.unreadable", self._rel(Path(current)), f"cannot list directory: {exc}")
                continue
            for entry in entries:
                full = Path(entry.path)
                rel = self._rel(full)
                if entry.is_symlink():
                    target = os.path.realpath(full)
                    inside = target == root_real or target.startswith(root_real + os.sep)
                    if inside:
                        self.add("low", "file.symlink", rel, f"symbolic link to {os.path.relpath(target, root_real)} "
                                 "(not followed; its target is scanned where it lies)")
                    else:
                        self.add("high", "file.symlink_outside", rel,
                                 "symbolic link pointing outside the artifact directory: a loader following it "
                                 "would read a file the scan cannot vouch for")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(full)
                elif entry.is_file(follow_symlinks=False):
                    out.append((rel, full))
                else:
                    self.add("medium", "file.special", rel, "special file (device, FIFO or socket) was not read")
        out.sort()
        return out

    def _rel(self, full: Path) -> str:
        try:
            return full.relative_to(self.root).as_posix() or full.name
        except ValueError:
            return full.name

    def _strict_by_name(self, label: str) -> bool:
        name = PurePosixPath(label.split("!")[-1])
        suffixes = [s.lower() for s in name.suffixes]
        while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
            suffixes.pop()
        return label in self.declared_pickles or bool(suffixes and suffixes[-1] in PICKLE_EXTENSIONS)

    # -- one file ------------------------------------------------------------------------------------------------
    def scan_blob(self, blob: _Blob) -> None:
        self.check_deadline()
        self.files_scanned += 1
        try:
            size = blob.path.stat().st_size
            with open(blob.path, "rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            self.add("high", "file.unreadable", blob.label, f"cannot read file: {exc}")
            return
        container = False
        if head.startswith(b"\x93NUMPY"):
            container = True
            self._scan_npy(blob, size)
        elif head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08") or (size > 22 and self._is_zip(blob)):
            # A zip end record can also turn up by chance inside array data: only an archive that opens counts.
            container = self._scan_zip(blob, head)
        elif _compression_of(head):
            container = self._scan_compressed(blob, _compression_of(head), head)
        elif head.startswith((b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07")):
            container = True
            self.add("medium", "archive.unsupported", blob.label,
                     "7z/RAR archive: its members cannot be inspected (nothing in MLflow loads it without custom "
                     "code)")
        elif len(head) > 262 and head[257:262] == b"ustar":
            container = True
            self._scan_tar(blob)
        elif _looks_like_safetensors(head, size):
            container = True
            self._check_safetensors(blob, size)

        name = blob.name
        suffix = blob.suffix
        if name in REQUIREMENTS_NAMES:
            self._check_requirements(blob)
        if suffix in PYTHON_CODE_EXTENSIONS:
            self._check_python_file(blob)
        if suffix == ".onnx":
            self._check_onnx(blob, size)
        if suffix in (".h5", ".hdf5", ".keras") and not container:
            self._check_h5_lambda(blob)

        # Pickle: by its protocol header whatever the name, or by name/declaration when no container matched,
        # or (loosely) any other non-text file, so a renamed protocol-0 pickle is still read.
        has_proto_header = len(head) >= 2 and head[0] == 0x80 and head[1] <= 5
        if has_proto_header:
            self._scan_pickle(blob, strict=True)
        elif not container:
            if blob.strict_pickle:
                self._scan_pickle(blob, strict=True)
            elif head and suffix not in TEXT_EXTENSIONS and name != "MLmodel" and name not in REQUIREMENTS_NAMES \
                    and head[:1] in _OPCODE_BYTES:
                self._scan_pickle(blob, strict=False)

    @staticmethod
    def _is_zip(blob: _Blob) -> bool:
        try:
            return zipfile.is_zipfile(blob.path)
        except OSError:
            return False

    # -- containers ----------------------------------------------------------------------------------------------
    def _child(self, parent: _Blob, member: str, path: Path, strict: bool | None = None) -> _Blob:
        label = f"{parent.label}!{member}"
        return _Blob(label=label, path=path, depth=parent.depth + 1,
                     strict_pickle=self._strict_by_name(label) if strict is None else strict)

    def _budget(self, label: str, size: int | None) -> bool:
        if size is not None and size > self.limits.max_member_bytes:
            self.add("high", "archive.too_large", label, f"member of {size} bytes exceeds the "
                     f"{self.limits.max_member_bytes}-byte inspection limit and was not scanned")
            return False
        if self.extracted_bytes + (size or 0) > self.limits.max_total_extracted_bytes:
            self.add("high", "archive.budget_exceeded", label,
                     "extraction budget of this scan exhausted (possible archive bomb); member not scanned")
            return False
        return True

    def _copy_bounded(self, src: IO[bytes], dst: Path, label: str) -> bool:
        """Copy at most the member limit; False (with a finding) when the stream is larger (bomb)."""
        limit = min(self.limits.max_member_bytes, self.limits.max_total_extracted_bytes - self.extracted_bytes)
        written = 0
        with open(dst, "wb") as out:
            while True:
                chunk = src.read(1024 * 1024)
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    self.add("high", "archive.too_large", label,
                             f"decompresses past the {limit}-byte limit (archive bomb?); not fully scanned")
                    self.extracted_bytes += written
                    return False
                out.write(chunk)
                if written % (64 * 1024 * 1024) < 1024 * 1024:
                    self.check_deadline()
        self.extracted_bytes += written
        return True

    def _scan_zip(self, blob: _Blob, head: bytes) -> bool:
        """Scan the members; False when this is not a zip after all."""
        if blob.depth >= self.limits.max_archive_depth:
            self.add("high", "archive.too_deep", blob.label, "archive nested deeper than "
                     f"{self.limits.max_archive_depth} levels was not opened")
            return True
        try:
            zf = zipfile.ZipFile(blob.path)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
            if head.startswith(b"PK"):
                self.add("high", "archive.unreadable", blob.label, f"zip archive cannot be read ({exc}); loaders "
                         "such as torch.load parse zips more leniently, so its content is unverified")
                return True
            return False
        with zf:
            infos = zf.infolist()
            if len(infos) > self.limits.max_archive_members:
                self.add("high", "archive.too_many_members", blob.label, f"{len(infos)} members; only the first "
                         f"{self.limits.max_archive_members} were scanned")
                infos = infos[: self.limits.max_archive_members]
            names = [i.filename for i in infos]
            dupes = sorted({n for n in names if names.count(n) > 1}) if len(names) != len(set(names)) else []
            for dup in dupes:
                self.add("high", "archive.duplicate_member", f"{blob.label}!{dup}",
                         "member name appears more than once: different readers pick different copies")
            for info in infos:
                self._check_member_name(blob, info.filename)
                if info.is_dir():
                    continue
                member_label = f"{blob.label}!{info.filename}"
                if info.flag_bits & 0x1:
                    self.add("medium", "archive.encrypted", member_label,
                             "encrypted zip member cannot be inspected")
                    continue
                if not self._budget(member_label, info.file_size):
                    continue
                dst = self.temp_path()
                ok = self._extract_zip_member(zf, info, dst, member_label)
                if ok:
                    self.scan_blob(self._child(blob, info.filename, dst))
                dst.unlink(missing_ok=True)
            if "schema.json" in names:
                self._check_skops(blob, zf)
            if blob.suffix == ".keras" or "config.json" in names and any(n.endswith(".weights.h5") for n in names):
                self._check_keras_config(blob, zf)
        return True

    def _extract_zip_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: Path, label: str) -> bool:
        try:
            with zf.open(info) as src:
                return self._copy_bounded(src, dst, label)
        except zipfile.BadZipFile as exc:
            if "CRC" not in str(exc):
                self.add("high", "archive.unreadable_member", label, f"zip member cannot be read ({exc}); other "
                         "readers may still load it, so it is unverified")
                return False
        except (OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
            self.add("high", "archive.unreadable_member", label, f"zip member cannot be read ({exc}); other "
                     "readers may still load it, so it is unverified")
            return False
        # A CRC mismatch: PyTorch's reader does not check CRCs (published scanner bypass), so scan the bytes anyway.
        self.add("high", "archive.bad_crc", label, "zip member fails its CRC check: corrupted or crafted to make "
                 "CRC-checking scanners give up while torch.load still reads it")
        with zf.open(info) as src:
            src._expected_crc = None
            return self._copy_bounded(src, dst, label)

    def _check_member_name(self, blob: _Blob, name: str) -> None:
        posix = name.replace("\\", "/")
        if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in PurePosixPath(posix).parts:
            self.add("high", "archive.path_traversal", f"{blob.label}!{name}",
                     "member path is absolute or climbs out of the archive ('..'): extracting it writes outside "
                     "the target directory")

    def _scan_tar(self, blob: _Blob) -> None:
        if blob.depth >= self.limits.max_archive_depth:
            self.add("high", "archive.too_deep", blob.label, "archive nested too deep was not opened")
            return
        try:
            tf = tarfile.open(blob.path, mode="r:")  # noqa: SIM115 - closed by the with-block below
        except (tarfile.TarError, OSError) as exc:
            self.add("high", "archive.unreadable", blob.label, f"tar archive cannot be read ({exc})")
            return
        count = 0
        with tf:
            try:
                for member in tf:
                    count += 1
                    if count > self.limits.max_archive_members:
                        self.add("high", "archive.too_many_members", blob.label, "too many tar members; rest unscanned")
                        break
                    self._check_member_name(blob, member.name)
                    label = f"{blob.label}!{member.name}"
                    if member.issym() or member.islnk():
                        self.add("high", "archive.link", label, f"tar member is a link to {member.linkname!r}: "
                                 "extracting it can overwrite or expose files outside the model")
                        continue
                    if member.isdir():
                        continue
                    if not member.isfile():
                        self.add("medium", "archive.special_member", label, "device or FIFO member not read")
                        continue
                    if not self._budget(label, member.size):
                        continue
                    src = tf.extractfile(member)
                    if src is None:
                        continue
                    dst = self.temp_path()
                    if self._copy_bounded(src, dst, label):
                        self.scan_blob(self._child(blob, member.name, dst))
                    dst.unlink(missing_ok=True)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
                self.add("high", "archive.unreadable", blob.label, f"tar archive is corrupt ({exc}); rest unscanned")

    def _scan_compressed(self, blob: _Blob, kind: str, head: bytes) -> bool:
        """Decompress (bounded) and scan the content; False when a weak magic (zlib, raw lzma) was a false match."""
        label = f"{blob.label}!<{kind}>"
        if blob.depth >= self.limits.max_archive_depth:
            self.add("high", "archive.too_deep", blob.label, "compressed stream nested too deep was not opened")
            return True
        opener = _decompressor(kind)
        if opener is None:
            self.add("medium", "archive.unsupported", blob.label, f"{kind}-compressed content cannot be "
                     "decompressed here (module not installed), so it is not inspected")
            return True
        if not self._budget(label, None):
            return True
        dst = self.temp_path()
        try:
            with open(blob.path, "rb") as raw, opener(raw) as src:
                ok = self._copy_bounded(src, dst, label)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            dst.unlink(missing_ok=True)
            if blob.strict_pickle or kind not in ("zlib", "lzma-alone"):
                self.add("high" if blob.strict_pickle else "medium", "archive.corrupt", blob.label,
                         f"{kind} stream cannot be decompressed ({exc})")
                return True
            return False
        if ok:
            inner_strict = blob.strict_pickle or self._strict_by_name(blob.label)
            self.scan_blob(_Blob(label=label, path=dst, depth=blob.depth + 1, strict_pickle=inner_strict))
        dst.unlink(missing_ok=True)
        return True

    # -- numpy -------------------------------------------------------------------------------------------------
    def _scan_npy(self, blob: _Blob, size: int) -> None:
        """``.npy``: an object dtype means the data is a pickle (numpy.load(allow_pickle=True) unpickles it)."""
        try:
            with open(blob.path, "rb") as fh:
                fh.read(6)
                major, _minor = fh.read(2)
                hlen_size = 2 if major == 1 else 4
                (hlen,) = struct.unpack("<H" if hlen_size == 2 else "<I", fh.read(hlen_size))
                if hlen > 1_000_000:
                    raise ValueError("header too long")
                header = ast.literal_eval(fh.read(hlen).decode("latin-1"))
                offset = fh.tell()
            descr = header["descr"]
        except Exception as exc:  # noqa: BLE001 - any malformed header is the same finding
            self.add("medium", "numpy.bad_header", blob.label, f".npy header cannot be parsed ({exc})")
            return
        if _descr_has_object(descr):
            self.add("info", "numpy.object_array", blob.label,
                     "object-dtype .npy: its data is a pickle, loadable only with allow_pickle=True; scanned")
            _PickleFileScanner(self, blob, strict=True, start=offset).run()

    # -- pickles -----------------------------------------------------------------------------------------------
    def _scan_pickle(self, blob: _Blob, *, strict: bool) -> None:
        _PickleFileScanner(self, blob, strict=strict).run()

    # -- MLmodel -----------------------------------------------------------------------------------------------
    def _check_mlmodel(self, rel: str, full: Path) -> None:
        base = PurePosixPath(rel).parent
        try:
            if full.stat().st_size > self.limits.max_text_bytes:
                raise ValueError("file too large")
            doc = yaml.safe_load(full.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise TypeError("not a mapping")
        except Exception as exc:  # noqa: BLE001
            self.add("medium", "mlmodel.unparseable", rel, f"MLmodel cannot be parsed as YAML ({exc})")
            return
        flavors = doc.get("flavors") or {}
        if not isinstance(flavors, dict):
            self.add("medium", "mlmodel.unparseable", rel, "MLmodel 'flavors' is not a mapping")
            return
        self.flavors.update(str(k) for k in flavors)

        def resolve(value: Any, what: str) -> str | None:
            if not isinstance(value, str) or not value:
                return None
            p = PurePosixPath(value.replace("\\", "/"))
            if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", value):
                self.add("high", "mlmodel.path_outside", rel, f"{what} {value!r} points outside the model directory")
                return None
            return (base / p).as_posix() if str(base) != "." else p.as_posix()

        pyfunc = flavors.get("python_function") or {}
        if isinstance(pyfunc, dict):
            loader = pyfunc.get("loader_module")
            if loader and not str(loader).startswith("mlflow."):
                self.add("medium", "mlmodel.custom_loader_module", rel,
                         f"python_function loader_module {loader!r} is not an MLflow module: the model server "
                         "imports and runs it")
            if pyfunc.get("model_code_path"):
                self.add("high", "mlmodel.model_code", rel,
                         f"model from code: {pyfunc.get('model_code_path')!r} is a Python file executed to build the "
                         "model")
            python_model = resolve(pyfunc.get("python_model"), "python_model")
            if python_model:
                self.declared_pickles.add(python_model)
                self.plain_pickles.add(python_model)
                self.add("medium", "mlmodel.custom_pyfunc", rel,
                         "custom pyfunc model: python_model is a cloudpickle of user code")
        for flavor_name, conf in flavors.items():
            if not isinstance(conf, dict):
                continue
            for key in ("model_path", "pickled_model", "data", "model_data", "model_file"):
                target = resolve(conf.get(key), f"{flavor_name}.{key}")
                if target and str(conf.get("serialization_format", "")).lower() in ("pickle", "cloudpickle"):
                    self.declared_pickles.add(target)
                    self.plain_pickles.add(target)
                elif target and key == "pickled_model" and not target.endswith(".skops"):
                    self.declared_pickles.add(target)
            code = conf.get("code")
            code_dir = resolve(code, f"{flavor_name}.code")
            if code_dir:
                self.code_dirs.add(code_dir)
                code_full = self.root / code_dir
                py_files = [p for p in code_full.rglob("*") if p.suffix.lower() in PYTHON_CODE_EXTENSIONS] \
                    if code_full.is_dir() else []
                if py_files:
                    self.add("high", "mlmodel.code_path", rel,
                             f"{flavor_name}.code {code!r} holds {len(py_files)} Python file(s), put first on sys.path "
                             "when the model loads (they run, and can shadow any import)")
                else:
                    self.add("medium", "mlmodel.code_path", rel, f"{flavor_name}.code declares a code path {code!r}")
            trusted = conf.get("skops_trusted_types")
            if trusted:
                self._check_skops_trusted(rel, trusted)

    def _check_skops_trusted(self, rel: str, trusted: Any) -> None:
        """MLflow passes ``skops_trusted_types`` to skops.io.load: extra types skops will build without asking."""
        names = [str(t) for t in trusted] if isinstance(trusted, list) else [str(trusted)]
        families = allow.families_for(self.flavors)
        outside = []
        for name in names:
            module, _, cls = name.rpartition(".")
            if not module or not allow.classify(module, cls, tier="call", families=families).allowed:
                outside.append(name)
        if outside:
            self.add("medium", "mlmodel.skops_trusted_types", rel,
                     f"the model tells skops to trust types that are not on the allowlist: {outside!r}")
        else:
            self.add("info", "mlmodel.skops_trusted_types", rel,
                     f"the model tells skops to trust {names!r} (all on the allowlist; e.g. sklearn's Tree, whose "
                     "node arrays scikit-learn does not bounds-check)")

    # -- environment files ---------------------------------------------------------------------------------------
    def _check_requirements(self, blob: _Blob) -> None:
        text = self._read_text(blob)
        if text is None:
            return
        lines: list[str] = []
        if blob.name == "requirements.txt":
            lines = text.splitlines()
        else:
            try:
                doc = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                self.add("low", "environment.unparseable", blob.label, f"cannot parse ({exc})")
                return
            for dep in (doc.get("dependencies") or []) + (doc.get("build_dependencies") or []):
                if isinstance(dep, dict):
                    lines.extend(str(x) for x in (dep.get("pip") or []))
                else:
                    lines.append(str(dep))
        for raw in lines:
            line = raw.split(" #")[0].strip()
            if not line or line.startswith("#"):
                continue
            lowered = line.lower()
            if re.match(r"^(-i|--index-url|--extra-index-url|-f|--find-links|--trusted-host|--pre)\b", lowered):
                self.add("medium", "environment.package_source", blob.label,
                         f"{line!r}: the model server's environment would install from a non-default package source")
            elif re.match(r"^(-e|--editable)\b", lowered) or "://" in lowered or lowered.startswith(
                    ("git+", "hg+", "svn+", "bzr+", "./", "../", "/", "file:")):
                self.add("medium", "environment.direct_reference", blob.label,
                         f"{line!r}: installs code from a URL, VCS or local path instead of a pinned package")
            elif lowered.startswith(("-r", "-c", "--requirement", "--constraint")):
                self.add("low", "environment.include", blob.label, f"{line!r}: includes another requirements file")

    def _check_python_file(self, blob: _Blob) -> None:
        in_code_dir = any(blob.label == d or blob.label.startswith(d.rstrip("/") + "/") for d in self.code_dirs)
        if in_code_dir:
            return  # reported once, on MLmodel, as mlmodel.code_path
        if "code" in PurePosixPath(blob.label.split("!")[0]).parts[:-1]:
            self.add("high", "file.python_code", blob.label,
                     "Python code in a code/ directory, MLflow's place for code_paths that go on sys.path when the "
                     "model loads: it is code that will run")
            return
        self.add("medium", "file.python_code", blob.label,
                 "Python code among the model artifacts: nothing runs it unless MLmodel declares a code path, loader "
                 "module or model-from-code, but a reviewer should know it is there")

    def _read_text(self, blob: _Blob) -> str | None:
        try:
            if blob.path.stat().st_size > self.limits.max_text_bytes:
                self.add("low", "file.too_large_to_read", blob.label, "text file too large to check")
                return None
            return blob.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.add("medium", "file.unreadable", blob.label, f"cannot read ({exc})")
            return None

    # -- skops ---------------------------------------------------------------------------------------------------
    def _check_skops(self, blob: _Blob, zf: zipfile.ZipFile) -> None:
        """skops rebuilds objects from ``schema.json``: every node names a type that is imported and built."""
        try:
            info = zf.getinfo("schema.json")
            if info.file_size > self.limits.max_text_bytes * 8:
                raise ValueError("schema.json too large")
            schema = json.loads(zf.read(info))
        except Exception as exc:  # noqa: BLE001
            self.add("high", "skops.unparseable", f"{blob.label}!schema.json", f"skops schema cannot be read ({exc})")
            return
        _SkopsChecker(self, f"{blob.label}!schema.json", set(zf.namelist())).check(schema)

    # -- other formats -------------------------------------------------------------------------------------------
    def _check_keras_config(self, blob: _Blob, zf: zipfile.ZipFile) -> None:
        try:
            config = zf.read("config.json")[: self.limits.max_text_bytes]
        except KeyError:
            return
        if re.search(rb'"class_name"\s*:\s*"Lambda"', config):
            self.add("high", "keras.lambda_layer", f"{blob.label}!config.json",
                     "Keras Lambda layer: it carries a Python function (marshalled bytecode) that runs when the model "
                     "is used")

    def _check_h5_lambda(self, blob: _Blob) -> None:
        try:
            with open(blob.path, "rb") as fh:
                data = fh.read(64 * 1024 * 1024)
        except OSError:
            return
        if re.search(rb'"class_name"\s*:\s*"Lambda"', data):
            self.add("high", "keras.lambda_layer", blob.label,
                     "Keras Lambda layer in the HDF5 model config: it carries Python bytecode that runs")

    def _check_safetensors(self, blob: _Blob, size: int) -> None:
        try:
            with open(blob.path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            data_size = size - 8 - n
            spans = []
            for name, entry in header.items():
                if name == "__metadata__":
                    if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                        raise ValueError("__metadata__ must map strings to strings")
                    continue
                begin, end = entry["data_offsets"]
                if not (0 <= begin <= end <= data_size):
                    raise ValueError(f"tensor {name!r} lies outside the file")
                spans.append((begin, end))
            spans.sort()
            for (_b1, e1), (b2, _e2) in itertools.pairwise(spans):
                if b2 < e1:
                    raise ValueError("tensors overlap")
        except Exception as exc:  # noqa: BLE001
            self.add("medium", "safetensors.invalid", blob.label, f"safetensors header is invalid ({exc})")
            return
        self.add("info", "safetensors.ok", blob.label, f"safetensors with {len(spans)} tensors (no code by design)")

    def _check_onnx(self, blob: _Blob, size: int) -> None:
        if size > min(self.limits.max_member_bytes, 2 * 1024**3):
            self.add("low", "onnx.not_inspected", blob.label, "ONNX file too large to walk; custom domains and "
                     "external data paths unchecked")
            return
        try:
            problems = _onnx_problems(memoryview(blob.path.read_bytes()))
        except Exception as exc:  # noqa: BLE001
            self.add("low", "onnx.unparseable", blob.label, f"ONNX protobuf could not be walked ({exc})")
            return
        for severity, code, message in problems:
            self.add(severity, code, blob.label, message)


# =================================================================================================================
# Pickle: a symbolic machine over pickletools.genops
# =================================================================================================================
_OPCODE_BYTES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE8"})
_BYTES_OPS = frozenset({"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"})
_NUMBER_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
                         "NONE", "NEWTRUE", "NEWFALSE"})
_CODE_OPS = frozenset({"GLOBAL", "STACK_GLOBAL", "INST", "REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD", "EXT1",
                       "EXT2", "EXT4"})
_KEEP_ITEMS = 64


class _Sym:
    __slots__ = ()


class _Global(_Sym):
    __slots__ = ("module", "name", "offset", "raw", "uses")

    def __init__(self, module: str, name: str, raw: str, offset: int):
        self.module, self.name, self.raw, self.offset = module, name, raw, offset
        self.uses: set[str] = set()

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


class _Unresolved(_Sym):
    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why


class _Str(_Sym):
    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value


class _Num(_Sym):
    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class _Bytes(_Sym):
    __slots__ = ()


class _Tuple(_Sym):
    __slots__ = ("items",)

    def __init__(self, items: list[_Sym] | None):
        self.items = items if items is None or len(items) <= _KEEP_ITEMS else None


class _List(_Sym):
    __slots__ = ()


class _Set(_Sym):
    __slots__ = ()


class _Dict(_Sym):
    __slots__ = ("items",)

    def __init__(self, items: dict[str, _Sym] | None = None):
        self.items: dict[str, _Sym] | None = items if items is not None else {}

    def set(self, key: _Sym, value: _Sym) -> None:
        if self.items is None:
            return
        if isinstance(key, _Str) and len(self.items) < _KEEP_ITEMS:
            self.items[key.value] = value
        else:
            self.items = None


class _Call(_Sym):
    """The object a call returned (an instance, usually)."""

    __slots__ = ("args", "callee", "state")

    def __init__(self, callee: _Sym, args: _Sym):
        self.callee, self.args, self.state = callee, args, None


class _Method(_Sym):
    """A bound method of an allowed instance (validated getattr); calling it while loading is not allowed."""

    __slots__ = ("attr", "owner")

    def __init__(self, owner: _Sym, attr: str):
        self.owner, self.attr = owner, attr


class _Other(_Sym):
    __slots__ = ()


_OTHER = _Other()
_MARK = object()


class _PickleError(Exception):
    """The real unpickler would raise here (or we cannot follow the stream)."""

    def __init__(self, message: str, offset: int | None):
        super().__init__(message)
        self.offset = offset


class _BoundedReader:
    """A read-only view of a file that never lets a length field make us allocate past the end of the file.

    It keeps its own position (pickletools calls ``read``/``tell`` for every opcode).
    """

    def __init__(self, fh: IO[bytes], size: int, max_line: int):
        self._fh, self._size, self._max_line = fh, size, max_line
        self._pos = fh.tell()

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = self._fh.seek(pos, whence)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        remaining = self._size - self._pos
        if n is None or n < 0 or n > remaining:
            n = max(0, remaining)
        data = self._fh.read(n)
        self._pos += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = self._max_line if limit is None or limit < 0 else min(limit, self._max_line)
        data = self._fh.readline(limit)
        self._pos += len(data)
        return data


class _PickleFileScanner:
    """All pickle streams of one file (plain pickle, joblib, legacy torch, object .npy)."""

    def __init__(self, scan: _Scan, blob: _Blob, *, strict: bool, start: int = 0):
        self.scan, self.blob, self.strict, self.start = scan, blob, strict, start
        # joblib.load reads array bytes that follow a NumpyArrayWrapper itself; pickle.load would read them as
        # opcodes. A file MLmodel declares as a plain pickle is read only the plain way.
        self.joblib_aware = blob.label not in scan.plain_pickles
        self.label = blob.label
        self.pending: list[tuple[str, str, str, int | None]] = []
        self.reported_keys: set[tuple[str, str]] = set()
        self.globals_seen: set[str] = set()
        self.validated: set[str] = set()
        self.joblib_wrappers = 0

    def report(self, severity: str, code: str, message: str, offset: int | None = None, *,
               quiet: bool = False) -> None:
        key = (code, message.split(" ", 1)[0])
        if quiet and key in self.reported_keys:
            return  # the joblib-aware pass already reported this global
        self.reported_keys.add(key)
        self.pending.append((severity, code, message, offset))

    def run(self) -> None:
        # The symbols form no reference cycles; with millions of them alive in the memo the cyclic collector's
        # full passes would make a large pickle quadratic to scan.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            with warnings.catch_warnings():
                # pickletools escape-decodes protocol-0 strings; odd bytes there only warn.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._run()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> None:
        try:
            size = self.blob.path.stat().st_size
            with open(self.blob.path, "rb") as raw:
                reader = _BoundedReader(raw, size, self.scan.limits.max_line_bytes)
                is_pickle = self._run_streams(reader, size)
                if is_pickle and self.joblib_wrappers:
                    self._plain_pickle_pass(reader)
        except OSError as exc:
            self.scan.add("high", "file.unreadable", self.label, f"cannot read ({exc})")
            return
        if not is_pickle:
            return
        if self.validated:
            self.scan.validated_guarded.setdefault(self.label, set()).update(self.validated)
        for severity, code, message, offset in self.pending:
            self.scan.add(severity, code, self.label, message, offset)
        if not any(sev in BLOCKING for sev, *_ in self.pending):
            self.scan.add("info", "pickle.scanned", self.label,
                          f"pickle: {len(self.globals_seen)} distinct globals, all on the allowlist"
                          + (f"; {self.joblib_wrappers} joblib array(s)" if self.joblib_wrappers else ""))

    def _run_streams(self, reader: _BoundedReader, size: int) -> bool:
        pos = self.start
        index = 0
        while pos < size:
            reader.seek(pos)
            if index > 0:
                first = reader.read(1)
                reader.seek(pos)
                if first not in _OPCODE_BYTES:
                    self.report("info", "pickle.trailing_data", f"{size - pos} bytes after the last pickle stream "
                                "(array or storage data; pickle.load does not read them)", pos)
                    break
            if index >= self.scan.limits.max_streams_per_file:
                self.report("medium", "pickle.too_many_streams", "more pickle streams than the limit; rest unscanned",
                            pos)
                break
            vm = _PickleVM(self, reader, stream_index=index, joblib_aware=self.joblib_aware)
            ok, end, error = vm.run()
            if index == 0 and not self.strict and not vm.looks_like_pickle():
                # Content-sniffed file: without a named global that is then called it is not a pickle worth the
                # name (and one without any import runs no code); random bytes often parse for a few opcodes.
                return False
            if not ok:
                if vm.code_ops and (index == 0 or vm.looks_like_pickle()):
                    self.report("high", "pickle.unparseable",
                                f"pickle stream breaks at byte {error.offset}: {error}. pickle.load executes every "
                                "opcode before that point (here including imports or calls), so a broken stream "
                                "cannot be shown safe", error.offset)
                elif index == 0:
                    # Nothing before the break imports or calls anything: pickle.load would only have built plain
                    # values before failing (e.g. an IDL/SPSS ".sav" file, not a pickle at all).
                    self.report("medium", "pickle.unparseable",
                                f"declared or named as a pickle but malformed at byte {error.offset}: {error}; "
                                "nothing before that point imports or calls code", error.offset)
                else:
                    self.report("info", "pickle.trailing_data",
                                f"{size - pos} trailing bytes that are not a pickle stream", pos)
                break
            pos = end
            index += 1
        return True

    def _plain_pickle_pass(self, reader: _BoundedReader) -> None:
        """Read a joblib file as plain ``pickle.load`` would: bytes joblib treats as array data are opcodes to it.

        A genuine joblib file breaks at the first padding byte (not an opcode) or, after an object array, reads the
        nested stream with a shared memo and produces nonsense names; so this pass reports only what is critical
        by name (a known code-execution primitive) or an attribute-access trick, never "unknown".
        """
        reader.seek(self.start)
        vm = _PickleVM(self, reader, stream_index=0, joblib_aware=False, quiet=True)
        vm.run()


class _PickleVM:
    """One pickle stream, simulated on symbols. Mirrors ``pickle._Unpickler``'s stack, marks, memo and proto."""

    def __init__(self, owner: _PickleFileScanner, reader: _BoundedReader, *, stream_index: int,
                 joblib_aware: bool, quiet: bool = False, depth: int = 0):
        self.owner, self.reader = owner, reader
        self.stream_index, self.joblib_aware, self.quiet, self.depth = stream_index, joblib_aware, quiet, depth
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.globals: list[_Global] = []
        self.code_ops = 0
        self.called_code = False
        self.ops = 0
        self.persid_reported = False
        self.limits = owner.scan.limits

    # -- reporting -----------------------------------------------------------------------------------------------
    def report(self, severity: str, code: str, message: str, offset: int | None) -> None:
        if self.quiet and (severity != "critical" or code not in (
                "pickle.global_not_allowed", "pickle.build_on_global", "pickle.getattr_not_allowed",
                "pickle.mutates_global")):
            return
        if self.stream_index or self.depth:
            message = f"{message} [stream {self.stream_index}{', nested' if self.depth else ''}]"
        if self.quiet:
            message = f"{message} [as plain pickle.load reads the joblib file]"
        self.owner.report(severity, code, message, offset, quiet=self.quiet)

    def looks_like_pickle(self) -> bool:
        """For content-sniffed files: a valid global that was then called is a pickle, not text noise."""
        return self.called_code and any(allow.DOTTED_IDENTIFIER.match(g.module) and
                                        allow.DOTTED_IDENTIFIER.match(g.name) for g in self.globals)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> tuple[bool, int, _PickleError | None]:
        error: _PickleError | None = None
        ok = False
        end = self.reader.tell()
        pos: int | None = end
        try:
            for op, arg, pos in pickletools.genops(self.reader):
                self.ops += 1
                if self.ops % 200_000 == 0:
                    self.owner.scan.check_deadline()
                handler = _HANDLERS.get(op.name)
                if handler is None:
                    raise _PickleError(f"opcode {op.name} is not understood by the scanner", pos)
                if op.name in _CODE_OPS:
                    self.code_ops += 1
                handler(self, arg, pos)
                if op.name == "STOP":
                    ok = True
                    break
            end = self.reader.tell()
            if not ok:
                raise _PickleError("stream ended without STOP", end)
        except _PickleError as exc:
            error = exc
        except (ValueError, EOFError, struct.error, UnicodeDecodeError, IndexError, KeyError, OverflowError) as exc:
            error = _PickleError(str(exc) or type(exc).__name__, self.reader.tell())
        self._finalize()
        return ok, end, error

    # -- stack helpers -------------------------------------------------------------------------------------------
    def pop(self, pos: int) -> Any:
        if not self.stack:
            raise _PickleError("stack underflow (the real unpickler raises here)", pos)
        return self.stack.pop()

    def top(self, pos: int) -> Any:
        if not self.stack:
            raise _PickleError("stack underflow (the real unpickler raises here)", pos)
        return self.stack[-1]

    def pop_mark(self, pos: int) -> list[Any]:
        if not self.metastack:
            raise _PickleError("no MARK on the stack (the real unpickler raises here)", pos)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def push(self, value: Any) -> None:
        self.stack.append(value)

    # -- globals -------------------------------------------------------------------------------------------------
    def make_global(self, module: str, name: str, pos: int) -> _Global:
        raw = f"{module}.{name}"
        if self.proto < 3:  # find_class's fix_imports, exactly as pickle.Unpickler applies it
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        g = _Global(module, name, raw, pos)
        self.globals.append(g)
        return g

    def mark_args(self, args: Any) -> None:
        if isinstance(args, _Tuple) and args.items is not None:
            for item in args.items:
                if isinstance(item, _Global):
                    item.uses.add("arg")

    def call(self, callee: Any, args: Any, pos: int, kind: str) -> Any:
        """What REDUCE/NEWOBJ/OBJ/INST do: call ``callee(*args)``."""
        self.called_code = True
        if isinstance(callee, _Global):
            if (callee.module, callee.name) in allow.GUARDED_CALLABLES and kind == "REDUCE":
                return self.guarded_call(callee, args, pos)
            callee.uses.add("call")
            self.mark_args(args)
            return _Call(callee, args)
        self.mark_args(args)
        if isinstance(callee, _Unresolved):
            return _OTHER  # already reported where the name could not be resolved
        what = {
            _Call: "an object an earlier call returned",
            _Method: f"the bound method {getattr(callee, 'attr', '')!r}",
        }.get(type(callee), f"a {type(callee).__name__.strip('_').lower()} value")
        self.report("high", "pickle.dynamic_call",
                    f"{kind} calls {what} instead of a named global: the callable cannot be known statically "
                    "(a getattr/attrgetter chain leads here)", pos)
        return _OTHER

    def guarded_call(self, callee: _Global, args: Any, pos: int) -> Any:
        key = (callee.module, callee.name)
        items = args.items if isinstance(args, _Tuple) else None
        ok, result, detail = False, _OTHER, "arguments are not constants the scanner can check"
        if key == ("_codecs", "encode"):
            if items and len(items) == 2 and isinstance(items[0], _Str) and isinstance(items[1], _Str):
                ok = items[1].value.lower().replace("_", "-") in (
                    "latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "ascii")
                detail = f"encoding {items[1].value!r}"
            result = _Bytes()
        elif key == ("copyreg", "_reconstructor"):
            if items and len(items) == 3 and isinstance(items[0], _Global) and isinstance(items[1], _Global):
                ok = True
                items[0].uses.add("arg")
                items[1].uses.add("arg")
            result = _Call(callee, args)
        elif key == ("builtins", "getattr"):
            if items and len(items) == 2 and isinstance(items[1], _Str):
                owner, attr = items[0], items[1].value
                if isinstance(owner, _Global) and (owner.module, f"{owner.name}.{attr}") in allow.DOTTED_CALLABLES:
                    owner.uses.add("arg")
                    g = _Global(owner.module, f"{owner.name}.{attr}", f"{owner.raw}.{attr}", pos)
                    self.globals.append(g)
                    ok, result = True, g
                elif isinstance(owner, _Call) and isinstance(owner.callee, _Global) \
                        and attr in allow.BOUND_METHOD_NAMES:
                    ok, result = True, _Method(owner, attr)
                owner_desc = owner.dotted if isinstance(owner, _Global) else (
                    f"an instance of {owner.callee.dotted}" if isinstance(owner, _Call)
                    and isinstance(owner.callee, _Global) else "a computed object")
                detail = f"getattr({owner_desc}, {attr!r})"
            if not ok:
                self.report("critical", "pickle.getattr_not_allowed",
                            f"builtins.getattr used to reach an attribute: {detail}. Attribute access from a "
                            "pickle is how blocklists are bypassed (reach os.system through an allowed module)", pos)
                callee.uses.add("validated")
                return _OTHER
        else:  # _ufunc_reconstruct(module, name)
            if items and len(items) == 2 and all(isinstance(i, _Str) for i in items):
                ok = items[0].value in ("numpy", "numpy.core.umath", "numpy._core.umath", "scipy.special",
                                        "scipy.special._ufuncs") and bool(allow.IDENTIFIER.match(items[1].value))
                detail = f"{items[0].value}.{items[1].value}"
        if not ok:
            self.report(allow.danger_severity(callee.module, callee.name), "pickle.global_not_allowed",
                        f"{callee.dotted} called with arguments the scanner cannot validate ({detail})", pos)
        # Reported here with the detail; marking it validated keeps _finalize from reporting it a second time.
        callee.uses.add("validated")
        return result

    # -- end of stream -------------------------------------------------------------------------------------------
    def _finalize(self) -> None:
        """Check every global the stream imported, at the tier its uses need (runs on broken streams too)."""
        groups: dict[tuple[str, str], list[_Global]] = {}
        for g in self.globals:
            groups.setdefault((g.module, g.name), []).append(g)
        families = self.owner.scan.families
        for (module, name), syms in groups.items():
            uses = set().union(*(g.uses for g in syms))
            first = min(g.offset for g in syms)
            raw = syms[0].raw
            shown = f"{module}.{name}" + (f" (written as {raw}, renamed by pickle's protocol-2 import mapping)"
                                          if raw != f"{module}.{name}" else "")
            self.owner.globals_seen.add(f"{module}.{name}")
            if (module, name) in allow.GUARDED_CALLABLES:
                if uses <= {"validated"} and uses:
                    if not self.quiet:
                        self.owner.validated.add(f"{module}.{name}")
                    continue
                verdict = allow.classify(module, name, tier="call", families=families)
                self.report(verdict.severity or "critical", "pickle.global_not_allowed",
                            f"{shown} {verdict.reason}", first)
                continue
            tier = "call" if uses & {"call", "arg", "build", "mutate"} else "reference"
            verdict = allow.classify(module, name, tier=tier, families=families)
            if verdict.allowed:
                continue
            if self.quiet and not (allow.DOTTED_IDENTIFIER.match(module) and allow.DOTTED_IDENTIFIER.match(name)):
                continue  # array bytes read as opcodes produce noise names; pickle.load would fail on them
            usage = "called while loading" if tier == "call" else "referenced"
            self.report(verdict.severity or "high", "pickle.global_not_allowed",
                        f"{shown} {verdict.reason} ({usage}; {len(syms)} occurrence(s))", first)

    # -- joblib ----------------------------------------------------------------------------------------------------
    def joblib_array(self, wrapper: _Call, state: Any, pos: int) -> None:
        """joblib wrote the array's bytes right after this BUILD: skip them, or scan them as a nested pickle."""
        self.owner.joblib_wrappers += 1
        items = state.items if isinstance(state, _Dict) else None
        if not items:
            raise _PickleError("joblib array placeholder with a state the scanner cannot read", pos)
        shape = items.get("shape")
        dtype = items.get("dtype")
        if not (isinstance(shape, _Tuple) and shape.items is not None
                and all(isinstance(x, _Num) and isinstance(x.value, int) and not isinstance(x.value, bool)
                        and x.value >= 0 for x in shape.items)):
            raise _PickleError("joblib array placeholder with a shape that is not constant", pos)
        itemsize, hasobject = _dtype_layout(dtype)
        if itemsize is None:
            raise _PickleError("joblib array placeholder with a dtype the scanner cannot size", pos)
        if hasobject:
            nested = _PickleVM(self.owner, self.reader, stream_index=self.stream_index, joblib_aware=True,
                               depth=self.depth + 1)
            ok, end, error = nested.run()
            if not ok:
                raise _PickleError(f"joblib object array's nested pickle is broken: {error}",
                                   error.offset if error else pos)
            self.reader.seek(end)
            return
        count = 1
        for dim in shape.items:
            count *= dim.value
        start = self.reader.tell()
        skip = count * itemsize
        alignment = items.get("numpy_array_alignment_bytes")
        if isinstance(alignment, _Num) and alignment.value is not None:
            padding = self.reader.read(1)
            if len(padding) != 1:
                raise _PickleError("joblib array data truncated", start)
            skip += padding[0]
        target = self.reader.tell() + skip
        if target > self.reader._size:
            raise _PickleError("joblib array data runs past the end of the file", start)
        self.reader.seek(target)


def _dtype_layout(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize, hasobject) of a symbolic ``numpy.dtype(typestr, align, copy)`` + BUILD state."""
    if not (isinstance(dtype, _Call) and isinstance(dtype.callee, _Global)
            and dtype.callee.name == "dtype" and dtype.callee.module == "numpy"):
        return None, False
    args = dtype.args.items if isinstance(dtype.args, _Tuple) else None
    if not args or not isinstance(args[0], _Str):
        return None, False
    typestr = args[0].value
    state = dtype.state.items if isinstance(dtype.state, _Tuple) else None
    elsize = flags = None
    if state and len(state) > 7:
        elsize = state[5].value if isinstance(state[5], _Num) else None
        flags = state[7].value if isinstance(state[7], _Num) else None
    hasobject = typestr.startswith("O") or bool(isinstance(flags, int) and flags & 1)
    if isinstance(elsize, int) and elsize > 0:
        return elsize, hasobject
    match = re.match(r"^[A-Za-z](\d+)$", typestr)
    return (int(match.group(1)), hasobject) if match else (None, hasobject)


# -- opcode handlers --------------------------------------------------------------------------------------------------
def _h_proto(vm: _PickleVM, arg: int, pos: int) -> None:
    if not 0 <= arg <= 5:
        raise _PickleError(f"unsupported pickle protocol {arg}", pos)
    vm.proto = arg


def _h_noop(vm: _PickleVM, arg: Any, pos: int) -> None:
    return None


def _h_stop(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop(pos)


def _h_mark(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.metastack.append(vm.stack)
    vm.stack = []


def _h_pop(vm: _PickleVM, arg: Any, pos: int) -> None:
    if vm.stack:
        vm.stack.pop()
    else:
        vm.pop_mark(pos)


def _h_pop_mark(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop_mark(pos)


def _h_dup(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(vm.top(pos))


def _h_put(vm: _PickleVM, arg: int, pos: int) -> None:
    if arg < 0:
        raise _PickleError("negative memo index", pos)
    vm.memo[arg] = vm.top(pos)
    if len(vm.memo) > vm.limits.max_memo_entries:
        raise _PickleError("memo larger than the scanner's limit", pos)


def _h_memoize(vm: _PickleVM, arg: Any, pos: int) -> None:
    _h_put(vm, len(vm.memo), pos)


def _h_get(vm: _PickleVM, arg: int, pos: int) -> None:
    if arg not in vm.memo:
        raise _PickleError(f"memo key {arg} was never stored (the real unpickler raises here)", pos)
    vm.push(vm.memo[arg])


def _h_string(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Str(arg if isinstance(arg, str) else bytes(arg).decode("latin-1")))


def _h_bytes(vm: _PickleVM, arg: bytes, pos: int) -> None:
    _maybe_nested_pickle(vm, arg, pos)
    vm.push(_Bytes())


def _h_number(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Num(arg))


def _h_other(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_OTHER)


def _h_empty_tuple(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Tuple([]))


def _h_tuple_n(n: int):
    def handler(vm: _PickleVM, arg: Any, pos: int) -> None:
        if len(vm.stack) < n:
            raise _PickleError("stack underflow (the real unpickler raises here)", pos)
        items = vm.stack[-n:]
        del vm.stack[-n:]
        vm.push(_Tuple(list(items)))
    return handler


def _h_tuple(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Tuple(vm.pop_mark(pos)))


def _h_empty_list(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_List())


def _h_list(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop_mark(pos)
    vm.push(_List())


def _h_empty_dict(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Dict())


def _h_dict(vm: _PickleVM, arg: Any, pos: int) -> None:
    items = vm.pop_mark(pos)
    d = _Dict()
    for i in range(0, len(items) - 1, 2):
        d.set(items[i], items[i + 1])
    vm.push(d)


def _h_empty_set(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.push(_Set())


def _h_frozenset(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop_mark(pos)
    vm.push(_Set())


def _check_mutation_target(vm: _PickleVM, target: Any, op: str, pos: int) -> None:
    if isinstance(target, _Global):
        target.uses.add("mutate")
        vm.report("critical", "pickle.mutates_global",
                  f"{op} modifies {target.dotted} itself (a module-level object), not a value the pickle built", pos)
    elif isinstance(target, (_Str, _Num, _Bytes, _Tuple, _Method)):
        raise _PickleError(f"{op} on a value that cannot be modified (the real unpickler raises here)", pos)


def _h_append(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop(pos)
    _check_mutation_target(vm, vm.top(pos), "APPEND", pos)


def _h_appends(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop_mark(pos)
    _check_mutation_target(vm, vm.top(pos), "APPENDS", pos)


def _h_setitem(vm: _PickleVM, arg: Any, pos: int) -> None:
    value = vm.pop(pos)
    key = vm.pop(pos)
    target = vm.top(pos)
    _check_mutation_target(vm, target, "SETITEM", pos)
    if isinstance(target, _Dict):
        target.set(key, value)


def _h_setitems(vm: _PickleVM, arg: Any, pos: int) -> None:
    items = vm.pop_mark(pos)
    target = vm.top(pos)
    _check_mutation_target(vm, target, "SETITEMS", pos)
    if isinstance(target, _Dict):
        for i in range(0, len(items) - 1, 2):
            target.set(items[i], items[i + 1])


def _h_additems(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop_mark(pos)
    _check_mutation_target(vm, vm.top(pos), "ADDITEMS", pos)


def _split_global_arg(arg: str, pos: int) -> tuple[str, str]:
    module, _, name = arg.partition(" ")
    return module, name


def _h_global(vm: _PickleVM, arg: str, pos: int) -> None:
    module, name = _split_global_arg(arg, pos)
    vm.push(vm.make_global(module, name, pos))


def _h_stack_global(vm: _PickleVM, arg: Any, pos: int) -> None:
    name = vm.pop(pos)
    module = vm.pop(pos)
    if isinstance(module, _Str) and isinstance(name, _Str):
        vm.push(vm.make_global(module.value, name.value, pos))
        return

    def describe(sym: Any) -> str:
        if isinstance(sym, _Str):
            return repr(sym.value)
        if isinstance(sym, _Global):
            return f"the object {sym.dotted} (memo trick)"
        if isinstance(sym, _Call):
            return "the result of a call (computed name)"
        return f"a {type(sym).__name__.strip('_').lower()} value"

    vm.report("high", "pickle.global_unresolvable",
              f"STACK_GLOBAL imports a name that cannot be resolved statically: module {describe(module)}, "
              f"name {describe(name)}", pos)
    vm.push(_Unresolved("stack_global"))


def _h_inst(vm: _PickleVM, arg: str, pos: int) -> None:
    items = vm.pop_mark(pos)
    module, name = _split_global_arg(arg, pos)
    g = vm.make_global(module, name, pos)
    vm.push(vm.call(g, _Tuple(list(items)), pos, "INST"))


def _h_obj(vm: _PickleVM, arg: Any, pos: int) -> None:
    items = vm.pop_mark(pos)
    if not items:
        raise _PickleError("OBJ without a class (the real unpickler raises here)", pos)
    vm.push(vm.call(items[0], _Tuple(list(items[1:])), pos, "OBJ"))


def _h_newobj(vm: _PickleVM, arg: Any, pos: int) -> None:
    args = vm.pop(pos)
    cls = vm.pop(pos)
    vm.push(vm.call(cls, args, pos, "NEWOBJ"))


def _h_newobj_ex(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop(pos)  # kwargs
    args = vm.pop(pos)
    cls = vm.pop(pos)
    vm.push(vm.call(cls, args, pos, "NEWOBJ_EX"))


def _h_reduce(vm: _PickleVM, arg: Any, pos: int) -> None:
    args = vm.pop(pos)
    callee = vm.pop(pos)
    vm.push(vm.call(callee, args, pos, "REDUCE"))


def _h_build(vm: _PickleVM, arg: Any, pos: int) -> None:
    state = vm.pop(pos)
    target = vm.top(pos)
    vm.called_code = True
    if isinstance(target, _Global):
        target.uses.add("build")
        vm.report("critical", "pickle.build_on_global",
                  f"BUILD sets attributes on {target.dotted} itself, not on an instance the pickle created: it "
                  "overwrites module or function attributes while loading (published modelscan bypass)", pos)
        return
    if isinstance(target, _Call):
        target.state = state
        callee = target.callee
        if vm.joblib_aware and isinstance(callee, _Global) and \
                (callee.module, callee.name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
            vm.joblib_array(target, state, pos)
            vm.stack[-1] = _OTHER
        return
    if isinstance(target, (_Str, _Num, _Bytes, _Tuple, _List, _Dict, _Set, _Method)):
        raise _PickleError("BUILD on a value that has no attributes (the real unpickler raises here)", pos)


def _h_ext(vm: _PickleVM, arg: int, pos: int) -> None:
    vm.report("high", "pickle.extension_registry",
              f"EXT opcode imports extension code {arg} from copyreg's registry, which the scanner cannot resolve", pos)
    vm.code_ops += 1
    vm.push(_Unresolved("ext"))


def _h_persid(vm: _PickleVM, arg: Any, pos: int) -> None:
    if not vm.persid_reported:
        vm.persid_reported = True
        vm.report("info", "pickle.persistent_id", "persistent ids: loadable only by a loader with persistent_load "
                  "(PyTorch storages); plain pickle.load rejects them", pos)
    vm.push(_OTHER)


def _h_binpersid(vm: _PickleVM, arg: Any, pos: int) -> None:
    vm.pop(pos)
    _h_persid(vm, arg, pos)


_HANDLERS: dict[str, Any] = {
    "PROTO": _h_proto, "FRAME": _h_noop, "STOP": _h_stop, "MARK": _h_mark, "POP": _h_pop, "POP_MARK": _h_pop_mark,
    "DUP": _h_dup, "PUT": _h_put, "BINPUT": _h_put, "LONG_BINPUT": _h_put, "MEMOIZE": _h_memoize, "GET": _h_get,
    "BINGET": _h_get, "LONG_BINGET": _h_get, "EMPTY_TUPLE": _h_empty_tuple, "TUPLE1": _h_tuple_n(1),
    "TUPLE2": _h_tuple_n(2), "TUPLE3": _h_tuple_n(3), "TUPLE": _h_tuple, "EMPTY_LIST": _h_empty_list,
    "LIST": _h_list, "APPEND": _h_append, "APPENDS": _h_appends, "EMPTY_DICT": _h_empty_dict, "DICT": _h_dict,
    "SETITEM": _h_setitem, "SETITEMS": _h_setitems, "EMPTY_SET": _h_empty_set, "ADDITEMS": _h_additems,
    "FROZENSET": _h_frozenset, "GLOBAL": _h_global, "STACK_GLOBAL": _h_stack_global, "INST": _h_inst,
    "OBJ": _h_obj, "NEWOBJ": _h_newobj, "NEWOBJ_EX": _h_newobj_ex, "REDUCE": _h_reduce, "BUILD": _h_build,
    "EXT1": _h_ext, "EXT2": _h_ext, "EXT4": _h_ext, "PERSID": _h_persid, "BINPERSID": _h_binpersid,
    "NEXT_BUFFER": _h_other, "READONLY_BUFFER": _h_noop,
}
for _name in _STRING_OPS:
    _HANDLERS[_name] = _h_string
for _name in _BYTES_OPS:
    _HANDLERS[_name] = _h_bytes
for _name in _NUMBER_OPS:
    _HANDLERS[_name] = _h_number


def _maybe_nested_pickle(vm: _PickleVM, data: bytes, pos: int) -> None:
    """A bytes constant that is itself a pickle (protocol 2+) is scanned too: something may loads() it."""
    if len(data) < 8 or data[0] != 0x80 or not 2 <= data[1] <= 5 or vm.depth >= 3:
        return
    if len(data) > vm.limits.max_nested_pickle_bytes:
        return
    reader = _BoundedReader(io.BytesIO(data), len(data), vm.limits.max_line_bytes)
    probe = _PickleFileScanner(vm.owner.scan, vm.owner.blob, strict=False)
    nested = _PickleVM(probe, reader, stream_index=0, joblib_aware=False, depth=vm.depth + 1)
    ok, _end, _error = nested.run()
    if not ok and not nested.looks_like_pickle():
        return  # array bytes that merely start like a pickle
    for severity, code, message, _offset in probe.pending:
        vm.owner.report(severity, code, f"{message} [pickle embedded as bytes at byte {pos}]", pos)
    vm.owner.globals_seen |= probe.globals_seen


# =================================================================================================================
# skops
# =================================================================================================================
class _SkopsChecker:
    """Walks a skops ``schema.json``; each node's ``__module__``/``__class__`` is imported and built by skops."""

    CONSTRUCTING = frozenset({"ObjectNode", "DictNode", "ListNode", "SetNode", "TupleNode", "ConstructorFromReduceNode",
                    "LossNode", "TreeNode", "SGDNode", "RandomStateNode", "RandomGeneratorNode", "DTypeNode",
                    "MaskedArrayNode", "NdArrayNode", "SparseMatrixNode", "SliceNode", "DefaultDictNode",
                    "BytesNode", "BytearrayNode", "QuantileForestNode", "CachedNode"})
    REFERENCING = frozenset({"FunctionNode", "TypeNode"})
    KNOWN = CONSTRUCTING | REFERENCING | {"JsonNode", "MethodNode", "PartialNode", "OperatorFuncNode"}
    PRIMITIVES = frozenset({"str", "int", "float", "bool", "NoneType", "list", "dict", "tuple"})

    def __init__(self, scan: _Scan, label: str, members: set[str]):
        self.scan, self.label, self.members = scan, label, members
        self.families = scan.families

    def flag(self, severity: str, code: str, message: str) -> None:
        self.scan.add(severity, code, self.label, message)

    def check(self, schema: Any) -> None:
        stack = [schema]
        nodes = 0
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(node)
                continue
            if not isinstance(node, dict):
                continue
            stack.extend(v for k, v in node.items() if isinstance(v, (dict, list)))
            loader = node.get("__loader__")
            if loader is None:
                continue
            nodes += 1
            module, cls = node.get("__module__"), node.get("__class__")
            if loader not in self.KNOWN:
                self.flag("high", "skops.unknown_node", f"skops node type {loader!r} is unknown to the scanner")
                continue
            if loader == "CachedNode":
                continue
            if not isinstance(module, str) or not isinstance(cls, str):
                self.flag("high", "skops.malformed", f"{loader} without a module/class name")
                continue
            if loader == "JsonNode":
                if module != "builtins" or cls not in self.PRIMITIVES:
                    self.flag("medium", "skops.json_type", f"JSON node claims type {module}.{cls}")
                continue
            if loader == "OperatorFuncNode":
                self.flag("critical", "skops.type_not_allowed",
                          f"operator.{cls}: skops rebuilds operator.attrgetter/itemgetter/methodcaller objects, "
                          "attribute-access gadgets that later reach arbitrary attributes")
                continue
            if loader == "PartialNode":
                self.flag("high", "skops.type_not_allowed",
                          "functools.partial: binds arguments to a function that runs when the model is used")
                continue
            if loader == "MethodNode":
                content = node.get("content") or {}
                func = content.get("func") if isinstance(content, dict) else None
                if not isinstance(func, str) or func not in allow.BOUND_METHOD_NAMES:
                    self.flag("high", "skops.method_not_allowed",
                              f"bound method {module}.{cls}.{func!r} is not one a model needs")
                verdict = allow.classify(module, cls, tier="call", families=self.families)
                if not verdict.allowed:
                    self.flag(verdict.severity or "high", "skops.type_not_allowed", f"{module}.{cls} {verdict.reason}")
                continue
            tier = "reference" if loader in self.REFERENCING else "call"
            verdict = allow.classify(module, cls, tier=tier, families=self.families)
            if not verdict.allowed:
                self.flag(verdict.severity or "high", "skops.type_not_allowed",
                          f"{module}.{cls} ({loader}) {verdict.reason}")
            ref = node.get("file")
            if isinstance(ref, str) and ref not in self.members:
                self.flag("medium", "skops.missing_member", f"node refers to missing archive member {ref!r}")
        if nodes:
            self.flag("info", "skops.scanned", f"skops schema with {nodes} nodes checked against the allowlist")


# =================================================================================================================
# Small format helpers
# =================================================================================================================
def _compression_of(head: bytes) -> str | None:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith(b"\x04\x22\x4d\x18"):
        return "lz4"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0 and head[1] in (0x01, 0x5E, 0x9C,
                                                                                                  0xDA):
        return "zlib"
    if head.startswith(b"\x5d\x00\x00") and len(head) >= 13:
        return "lzma-alone"
    return None


class _ZlibReader(io.RawIOBase):
    """Streaming zlib (joblib's ``compress=True`` format) with bounded output per call (bomb-safe)."""

    def __init__(self, raw: IO[bytes]):
        super().__init__()
        self._raw, self._d, self._buf, self._eof = raw, zlib.decompressobj(), b"", False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 1024 * 1024 if n is None or n < 0 else n
        while len(self._buf) < n and not self._eof:
            data = self._d.unconsumed_tail or self._raw.read(1024 * 1024)
            if not data:
                self._buf += self._d.flush()
                self._eof = True
                break
            self._buf += self._d.decompress(data, 4 * 1024 * 1024)
            if self._d.eof:
                self._eof = True
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _decompressor(kind: str):
    import gzip

    if kind == "gzip":
        return lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")
    if kind == "bz2":
        return lambda raw: bz2.BZ2File(raw, mode="rb")
    if kind == "xz":
        return lambda raw: lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_XZ)
    if kind == "lzma-alone":
        return lambda raw: lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_ALONE)
    if kind == "zlib":
        return _ZlibReader
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            return None
        return lambda raw: zstandard.ZstdDecompressor().stream_reader(raw)
    if kind == "lz4":
        try:
            import lz4.frame
        except ImportError:
            return None
        return lambda raw: lz4.frame.LZ4FrameFile(raw, mode="rb")
    return None


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _descr_has_object(descr: Any) -> bool:
    if isinstance(descr, str):
        return bool(re.match(r"^[<>|=]?O", descr))
    if isinstance(descr, (list, tuple)):
        for item in descr:
            if isinstance(item, (list, tuple)) and len(item) >= 2 and _descr_has_object(item[1]):
                return True
    return False


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(data: memoryview):
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            yield num, wire, value
        elif wire == 1:
            yield num, wire, data[i:i + 8]
            i += 8
        elif wire == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            yield num, wire, data[i:i + n]
            i += n
        elif wire == 5:
            yield num, wire, data[i:i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


_ONNX_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"}


def _onnx_problems(data: memoryview) -> list[tuple[str, str, str]]:
    """Custom-op domains (native code from a custom op library) and external-data paths leaving the model dir."""
    problems: list[tuple[str, str, str]] = []
    domains: set[str] = set()
    locations: set[str] = set()

    def tensor(buf: memoryview) -> None:
        for num, wire, value in _fields(buf):
            if num == 13 and wire == 2:  # external_data: StringStringEntryProto
                entry = {n: bytes(v) for n, w, v in _fields(value) if w == 2}
                if entry.get(1) == b"location":
                    locations.add(entry.get(2, b"").decode("utf-8", "replace"))

    def graph(buf: memoryview, depth: int) -> None:
        if depth > 16:
            raise ValueError("graphs nested too deep")
        for num, wire, value in _fields(buf):
            if wire != 2:
                continue
            if num == 1:  # NodeProto
                for n2, w2, v2 in _fields(value):
                    if n2 == 7 and w2 == 2:
                        domains.add(bytes(v2).decode("utf-8", "replace"))
                    elif n2 == 5 and w2 == 2:  # AttributeProto
                        for n3, w3, v3 in _fields(v2):
                            if n3 == 6 and w3 == 2 or n3 == 11 and w3 == 2:
                                graph(v3, depth + 1)
                            elif n3 == 5 and w3 == 2:
                                tensor(v3)
            elif num == 5:  # initializer
                tensor(value)

    for num, wire, value in _fields(data):
        if num == 7 and wire == 2:
            graph(value, 0)
        elif num == 8 and wire == 2:  # opset_import
            for n2, w2, v2 in _fields(value):
                if n2 == 1 and w2 == 2:
                    domains.add(bytes(v2).decode("utf-8", "replace"))
    for domain in sorted(domains - _ONNX_STANDARD_DOMAINS):
        problems.append(("medium", "onnx.custom_domain", (f"operator domain {domain!r} is not standard ONNX: "
                                                          "running the model needs a custom-op library (native code)")))
    for location in sorted(locations):
        p = PurePosixPath(location.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts:
            problems.append(("high", "onnx.external_data_outside", (f"external tensor data at {location!r} lies "
                                                                    "outside the model directory (reads arbitrary files)")))
        else:
            problems.append(("info", "onnx.external_data", f"external tensor data in {location!r}"))
    return problems


# =================================================================================================================
# modelscan, the maintained blocklist scanner, in a subprocess
# =================================================================================================================
_MODELSCAN_BOOT = (
    "import resource, sys\n"
    "limit = int(sys.argv.pop(1))\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "from modelscan.cli import main\n"
    "sys.argv[0] = 'modelscan'\n"
    "main()\n"
)
_MODELSCAN_SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MEDIUM": "medium", "LOW": "low"}


def modelscan_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("modelscan")
    except Exception:  # noqa: BLE001
        return None


def run_modelscan_subprocess(root: Path, limits: ScanLimits = DEFAULT_LIMITS) -> tuple[str | None, list[Finding]]:
    """Run modelscan's CLI on ``root`` with JSON output; map its issues (and its errors, at low) into findings.

    A separate process with an address-space limit and a timeout: modelscan never unpickles either, but a hostile
    file must not be able to take the worker down through it.
    """
    version = modelscan_version()
    if version is None:
        return None, [Finding("medium", MODELSCAN_NAME, ".", "scanner.unavailable",
                              "modelscan is not installed; only the allowlist scan ran")]
    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="modelscan-") as workdir:
        out = Path(workdir) / "report.json"
        cmd = [sys.executable, "-c", _MODELSCAN_BOOT, str(limits.modelscan_memory_bytes), "-p", str(root),
               "-r", "json", "-o", str(out), "-l", "ERROR"]
        try:
            proc = subprocess.run(cmd, cwd=workdir, capture_output=True, timeout=limits.modelscan_timeout_seconds,
                                  check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except subprocess.TimeoutExpired:
            return version, [Finding("medium", MODELSCAN_NAME, ".", "scanner.timeout",
                                     f"modelscan did not finish within {limits.modelscan_timeout_seconds:.0f}s")]
        try:
            report = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace")[-300:]
            return version, [Finding("medium", MODELSCAN_NAME, ".", "scanner.failed",
                                     f"modelscan exited {proc.returncode} without a report: {tail}")]
    return version, _map_modelscan_report(report, root)


def _modelscan_path(source: str, root: Path) -> str:
    source = str(source or ".")
    if os.path.isabs(source.split(":")[0]):
        try:
            source = str(Path(source).relative_to(root)) if ":" not in source else \
                str(Path(source.split(":")[0]).relative_to(root)) + ":" + source.split(":", 1)[1]
        except ValueError:
            pass
    return source.replace(":", "!", 1)


def _reconcile_modelscan(findings: list[Finding], validated: dict[str, set[str]]) -> list[Finding]:
    """Keep modelscan's verdicts, except where it flags a name (``builtins.getattr``) whose every use in that file
    the allowlist scan validated, e.g. pandas' ``getattr(zoneinfo.ZoneInfo, "_unpickle")`` for zone-aware
    timestamps: a blocklist cannot tell that use from an attack, the argument check can."""
    out = []
    for f in findings:
        if f.code == "modelscan.unsafe_operator":
            name = f.message.split("unsafe operator ", 1)[-1].split(" ", 1)[0]
            module, _, attr = name.rpartition(".")
            if (module, attr) in _compat_pickle.NAME_MAPPING:
                module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            if f"{module}.{attr}" in validated.get(f.file, ()):
                f = Finding("low", f.scanner, f.file, f.code, f"{f.message}; every use of it in this file was "
                            "validated by the allowlist scan (a known-safe form), so it does not block", f.offset)
        out.append(f)
    return out


def _map_modelscan_report(report: dict[str, Any], root: Path) -> list[Finding]:
    findings: list[Finding] = []
    for issue in report.get("issues") or []:
        severity = _MODELSCAN_SEVERITY.get(str(issue.get("severity", "")).upper(), "high")
        module, operator = issue.get("module", "?"), issue.get("operator", "?")
        findings.append(Finding(severity, MODELSCAN_NAME, _modelscan_path(issue.get("source"), root),
                                "modelscan.unsafe_operator",
                                f"modelscan: unsafe operator {module}.{operator} ({issue.get('scanner', '')})"))
    for error in report.get("errors") or []:
        findings.append(Finding("low", MODELSCAN_NAME, _modelscan_path(error.get("source", "."), root),
                                "modelscan.error",
                                f"modelscan could not scan this: {str(error.get('description', ''))[:300]}"))
    return findings
