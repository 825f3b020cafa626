"""The artifact: one ``.tar`` holding a compiled model, its reference ONNX and ``metadata.json``.

``metadata.json`` records the model, its inputs and outputs, the target, the versions that built it, the
command that made it and the sha256 of every other member. Opening an artifact checks all of it, so a
tampered, truncated or foreign artifact is refused before anything is loaded. Standard library only: this
runs on boards.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ArtifactError

FORMAT = "edgevit-artifact"
FORMAT_VERSION = 1
METADATA = "metadata.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_artifact(path: Path, members: dict[str, Path], metadata: dict) -> dict:
    """Write an artifact.

    Parameters
    ----------
    path
        The ``.tar`` to create (replaced atomically if it exists).
    members
        Archive name -> file to store.
    metadata
        Everything but the format fields and hashes, which are added here.

    Returns
    -------
    dict
        The metadata as written.
    """
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
                "members": {name: sha256_file(src) for name, src in members.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tarfile.open(tmp, "w") as tar:
        blob = json.dumps(metadata, indent=1).encode()
        info = tarfile.TarInfo(METADATA)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for name, src in members.items():
            tar.add(src, arcname=name)
    tmp.replace(path)
    return metadata


def verify_dir(directory: Path, metadata: dict) -> None:
    """Check every member named in ``metadata`` against its sha256; raise ``ArtifactError`` on any mismatch."""
    for name, expected in metadata.get("members", {}).items():
        member = directory / name
        if not member.is_file():
            raise ArtifactError(f"artifact member '{name}' is missing")
        actual = sha256_file(member)
        if actual != expected:
            raise ArtifactError(f"artifact member '{name}' does not match its sha256 "
                                f"(expected {expected[:12]}..., found {actual[:12]}...): the file was modified "
                                "or damaged; rebuild it with `edgevit compile`")


class Artifact:
    """An opened, verified artifact, extracted to a private folder (removed on ``close``).

    Use as a context manager: ``with Artifact.open(path) as art: art.library``.
    """

    def __init__(self, directory: Path, metadata: dict, owns_dir: bool):
        self.dir = directory
        self.metadata = metadata
        self._owns_dir = owns_dir

    @classmethod
    def open(cls, path: Path) -> "Artifact":
        """Extract and verify an artifact ``.tar``.

        Raises
        ------
        ArtifactError
            Missing, unreadable or truncated file; unknown format; a member not listed in the metadata or
            whose sha256 does not match.
        """
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"artifact not found: {path}")
        directory = Path(tempfile.mkdtemp(prefix="edgevit-artifact-"))
        try:
            with tarfile.open(path, "r:") as tar:
                names = tar.getnames()
                if METADATA not in names:
                    raise ArtifactError(f"{path} is not an edgevit artifact (no {METADATA})")
                for member in tar.getmembers():
                    if not member.isfile() or member.name.startswith("/") or ".." in Path(member.name).parts:
                        raise ArtifactError(f"{path} has an unsafe or non-file member '{member.name}'")
                tar.extractall(directory)
            return cls.from_dir(directory, owns_dir=True, label=str(path))
        except (tarfile.TarError, EOFError, OSError) as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise ArtifactError(f"{path} is truncated or not a tar archive ({exc}); rebuild it "
                                "with `edgevit compile`") from None
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @classmethod
    def from_dir(cls, directory: Path, owns_dir: bool = False, label: str | None = None) -> "Artifact":
        """Verify an already extracted artifact folder (what a board or the qemu runner receives)."""
        directory = Path(directory)
        label = label or str(directory)
        try:
            metadata = json.loads((directory / METADATA).read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{label}: unreadable {METADATA} ({exc})") from None
        if metadata.get("format") != FORMAT:
            raise ArtifactError(f"{label} is not an edgevit artifact (format {metadata.get('format')!r})")
        if metadata.get("format_version", 0) > FORMAT_VERSION:
            raise ArtifactError(f"{label} uses artifact format {metadata['format_version']}; this edgevit "
                                f"reads up to {FORMAT_VERSION}: upgrade edgevit")
        listed = set(metadata.get("members", {})) | {METADATA}
        present = {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()}
        extra = present - listed
        if extra:
            raise ArtifactError(f"{label} contains files its metadata does not list: {sorted(extra)}")
        verify_dir(directory, metadata)
        return cls(directory, metadata, owns_dir)

    @property
    def arch(self) -> str:
        return self.metadata["target"]["arch"]

    @property
    def library(self) -> Path:
        return self.dir / self.metadata["library"]

    @property
    def reference(self) -> Path | None:
        name = self.metadata.get("reference")
        return self.dir / name if name else None

    def close(self) -> None:
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Artifact":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
