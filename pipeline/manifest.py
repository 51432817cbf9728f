"""Manifests: every file of a directory with its size and sha256, optionally signed.

Checkpoints (``pipeline/checkpoint.py``) and exports (``pipeline/export.py``) both end
with a manifest written last, and both are checked against it before a single byte of
them is deserialised: DCP's ``.metadata`` is a pickle, so an unchecked checkpoint is
code execution for whoever can write to the work directory.

Signing: with ``$PROTOREC_SIGNING_KEY`` set, writers add ``"hmac"``, an HMAC-SHA256 of the
manifest's canonical JSON (sorted keys, no spaces, without the ``hmac`` field itself), and
readers refuse a manifest that is unsigned or whose HMAC differs. So a consistent forgery
(a file and its sha256 in the manifest both edited) is refused too, as long as the key is
not readable by whoever can write the work directory. Without the key, manifests are
written unsigned and a signature present is not checked (there is nothing to check it
with).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.bin").write_bytes(b"abc")
>>> m = {"files": file_entries(d)}
>>> m["files"]["a.bin"]["bytes"]
3
>>> verify_files(d, m, "manifest.json")
>>> _ = (d / "a.bin").write_bytes(b"abd")
>>> try:
...     verify_files(d, m, "manifest.json")
... except ManifestError as exc:
...     print(str(exc).replace(str(d), "D"))
D/a.bin: sha256 differs from manifest.json
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

#: Environment variable holding the signing key (any string; its UTF-8 bytes are the key).
SIGNING_KEY_ENV = "PROTOREC_SIGNING_KEY"
HMAC_FIELD = "hmac"


class ManifestError(RuntimeError):
    """A directory does not match its manifest, or the manifest's signature is wrong."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(directory: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes": n, "sha256": hex}}`` of every file under ``directory``.

    Hidden files (DCP's ``.metadata``) are included; ``exclude`` names relative paths
    left out (the manifest itself).
    """
    directory = Path(directory)
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel not in exclude:
            out[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != HMAC_FIELD}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def signing_key() -> bytes | None:
    """The key from ``$PROTOREC_SIGNING_KEY``, or None when unset or empty."""
    key = os.environ.get(SIGNING_KEY_ENV)
    return key.encode() if key else None


def sign(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its HMAC added when a signing key is set (unchanged otherwise)."""
    key = signing_key()
    if key is None:
        return {k: v for k, v in manifest.items() if k != HMAC_FIELD}
    digest = hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
    return {**manifest, HMAC_FIELD: digest}


def check_signature(manifest: dict[str, Any], where: str) -> None:
    """With a signing key set, refuse an unsigned manifest or one whose HMAC differs."""
    key = signing_key()
    if key is None:
        return
    given = manifest.get(HMAC_FIELD)
    if not isinstance(given, str):
        raise ManifestError(f"{where}: unsigned, but {SIGNING_KEY_ENV} is set: refused")
    expected = hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given, expected):
        raise ManifestError(f"{where}: HMAC does not match ({SIGNING_KEY_ENV}): refused")


def verify_files(directory: Path, manifest: dict[str, Any], name: str) -> None:
    """Check every file of ``directory`` against ``manifest["files"]``.

    Refused (:class:`ManifestError`, naming the file): a listed file missing, a size or
    sha256 that differs, or a file present that the manifest does not list (other than
    the manifest ``name`` itself). Sizes are compared first, so a truncated file is
    named as such without reading it.
    """
    directory = Path(directory)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{directory / name}: lists no files: refused")
    for rel, entry in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {name} but missing")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise ManifestError(
                f"{path}: {size} bytes, {name} says {entry.get('bytes')} (truncated or replaced)"
            )
        if sha256_file(path) != entry.get("sha256"):
            raise ManifestError(f"{path}: sha256 differs from {name}")
    listed = set(files) | {name}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.relative_to(directory).as_posix() not in listed:
            raise ManifestError(f"{path}: not listed in {name}: refused")


def verify(directory: Path, manifest: dict[str, Any], name: str) -> None:
    """Check the signature (when a key is set), then every file.

    :func:`check_signature`, then :func:`verify_files`.
    """
    check_signature(manifest, str(Path(directory) / name))
    verify_files(directory, manifest, name)
