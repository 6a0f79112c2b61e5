"""Pin the vendored htmx + htmx SSE extension files against static/vendor/VERSIONS.txt.

VERSIONS.txt format (the sha256 lines are `sha256sum` output, so
`cd static/vendor && sha256sum -c VERSIONS.txt` also works, ignoring the two name lines):

    htmx.org 2.0.N
    htmx-ext-sse 2.2.N
    <sha256>  htmx.min.js
    <sha256>  htmx-ext-sse.min.js
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR_DIR = Path(__file__).resolve().parent.parent / "static" / "vendor"
HTMX_FILE = VENDOR_DIR / "htmx.min.js"
SSE_FILE = VENDOR_DIR / "htmx-ext-sse.min.js"
VERSIONS_FILE = VENDOR_DIR / "VERSIONS.txt"

# The htmx-ext-sse dist files (sse.js / sse.min.js / sse.esm.js) carry NO version string,
# so the extension's version can only be pinned by content: known sha256 of the npm
# package's dist/sse.min.js for each vendored release.
KNOWN_SSE_MIN_SHA256: dict[str, str] = {
    "2.2.4": "98a46496de0c3605fbffdce9167ba427bdd9553184f83f149c261891a92c0136",
}

_SHA_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")
_HTMX_VERSION = re.compile(r'version:"(\d+\.\d+\.\d+)"')


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_versions() -> tuple[dict[str, str], dict[str, str]]:
    """Return ({package: version}, {filename: sha256}) parsed from VERSIONS.txt."""
    versions: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SHA_LINE.match(line)
        if match:
            hashes[match.group(2)] = match.group(1)
            continue
        name, _, version = line.partition(" ")
        versions[name] = version.strip()
    return versions, hashes


def test_vendored_files_exist() -> None:
    for path in (HTMX_FILE, SSE_FILE, VERSIONS_FILE):
        assert path.is_file(), f"missing {path}"


def test_htmx_version_string_matches_versions_txt() -> None:
    versions, _ = _read_versions()
    declared = versions.get("htmx.org")
    assert declared is not None, "VERSIONS.txt has no 'htmx.org' line"
    assert declared.startswith("2.0."), declared

    found = set(_HTMX_VERSION.findall(HTMX_FILE.read_text(encoding="utf-8")))
    assert found == {declared}, f"htmx.min.js version markers {found} != VERSIONS.txt {declared}"


def test_sha256_matches_versions_txt() -> None:
    _, hashes = _read_versions()
    for path in (HTMX_FILE, SSE_FILE):
        assert path.name in hashes, f"VERSIONS.txt has no sha256 for {path.name}"
        assert _sha256(path) == hashes[path.name], f"sha256 mismatch for {path.name}"


def test_sse_extension_is_2_2_x() -> None:
    versions, _ = _read_versions()
    declared = versions.get("htmx-ext-sse")
    assert declared is not None, "VERSIONS.txt has no 'htmx-ext-sse' line"
    assert declared.startswith("2.2."), declared

    text = SSE_FILE.read_text(encoding="utf-8")
    # Sanity: it really is the htmx 2 SSE extension (no version marker exists in the file).
    assert 'htmx.defineExtension("sse"' in text
    assert "htmx:sseBeforeMessage" in text

    # Version pin by content hash, since the file carries no version string.
    assert declared in KNOWN_SSE_MIN_SHA256, f"unknown htmx-ext-sse version {declared}; add its sha256"
    assert _sha256(SSE_FILE) == KNOWN_SSE_MIN_SHA256[declared]
