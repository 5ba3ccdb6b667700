"""Find, verify and (where the machine has internet) download the public source files.

The manifest ``datasets/sources.json`` names each source's upstream repository, commit,
licence and, per file, its sha256 and upstream URL.  Files are read from the data directory
(``RXT_DATA_DIR``, else ``../shared/datasets`` beside the checkout); nothing is committed.

    >>> from training.sources import source_file
    >>> path = source_file("symptom2disease", "Symptom2Disease.csv")
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from serving.settings import PROJECT_ROOT, Settings, get_settings

MANIFEST_PATH = PROJECT_ROOT / "datasets" / "sources.json"


class DataSourceError(RuntimeError):
    """A source file is missing, unknown or does not match its recorded sha256."""


@dataclass(frozen=True)
class SourceFile:
    source: str
    name: str
    path: Path
    sha256: str
    url: str | None


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads(MANIFEST_PATH.read_text())["sources"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_verified: dict[tuple[Path, float, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, mtime, size) so repeated loads stay cheap."""
    stat = path.stat()
    key = (path.resolve(), stat.st_mtime, stat.st_size)
    if key not in _verified:
        _verified[key] = _sha256(path)
    return _verified[key]


def describe(source: str, name: str, settings: Settings | None = None) -> SourceFile:
    sources = manifest()
    if source not in sources:
        raise DataSourceError(f"unknown data source {source!r}; known: {sorted(sources)}")
    entry = sources[source]
    if name not in entry["files"]:
        raise DataSourceError(
            f"source {source!r} has no file {name!r} in the manifest; files: {sorted(entry['files'])}"
        )
    settings = settings or get_settings()
    path = settings.resolved_data_dir() / entry["folder"] / name
    meta = entry["files"][name]
    return SourceFile(source, name, path, meta["sha256"], meta.get("url"))


def source_file(source: str, name: str, settings: Settings | None = None, verify: bool = True) -> Path:
    """Path of a verified source file; downloads it first when allowed and missing."""
    settings = settings or get_settings()
    info = describe(source, name, settings)
    if not info.path.exists():
        if settings.allow_download and info.url:
            _download(info)
        else:
            how = (
                f"set RXT_ALLOW_DOWNLOAD=1 to fetch it from {info.url}"
                if info.url
                else "it has no upstream URL (derived file); see datasets/DATA_CARD.md for how it was made"
            )
            raise DataSourceError(
                f"data file missing: {info.path} (source {source!r}). Set RXT_DATA_DIR to the folder "
                f"holding the datasets, or {how}."
            )
    if verify:
        actual = file_sha256(info.path)
        if actual != info.sha256:
            raise DataSourceError(
                f"data file {info.path} is corrupt or a different version: sha256 {actual} "
                f"!= {info.sha256} recorded in datasets/sources.json"
            )
    return info.path


def _download(info: SourceFile) -> None:
    info.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = info.path.with_suffix(info.path.suffix + ".part")
    with urllib.request.urlopen(info.url, timeout=60) as resp, tmp.open("wb") as out:  # noqa: S310
        while block := resp.read(1 << 20):
            out.write(block)
    if _sha256(tmp) != info.sha256:
        tmp.unlink()
        raise DataSourceError(f"downloaded {info.url} does not match the recorded sha256")
    tmp.replace(info.path)


def verify_all(settings: Settings | None = None) -> dict[str, str]:
    """Check every manifest file; returns {"source/file": "ok" | error text}."""
    report = {}
    for source, entry in manifest().items():
        for name in entry["files"]:
            try:
                source_file(source, name, settings)
                report[f"{source}/{name}"] = "ok"
            except DataSourceError as exc:
                report[f"{source}/{name}"] = str(exc)
    return report


def hashes_for(files: list[tuple[str, str]]) -> dict[str, str]:
    """{"source/file": sha256} for logging which data a run used."""
    return {f"{s}/{n}": describe(s, n).sha256 for s, n in files}
