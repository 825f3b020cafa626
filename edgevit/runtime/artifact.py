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
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..errors import ArtifactError, OutputError

FORMAT = "edgevit-artifact"
FORMAT_VERSION = 1
METADATA = "metadata.json"
# Relative names of plain characters, no empty, "." or ".." component: nothing can point outside the folder.
MEMBER_NAME = r"(?!.*(?:^|/)\.{1,2}(?:/|$))[A-Za-z0-9_.-]{1,128}(?:/[A-Za-z0-9_.-]{1,128}){0,7}"
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int32", "int64", "bool")
MAX_DIM = (1 << 31) - 1


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

    Raises
    ------
    OutputError
        If the file cannot be written (no space, no permission); nothing is left behind.
    """
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata,
                "members": {name: sha256_file(src) for name, src in members.items()}}
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # dereference: a member given as a symlink (a linked model file) is stored as the file it names;
        # Artifact.open refuses link members, so storing the link would make an artifact nobody can open.
        with tarfile.open(tmp, "w", dereference=True) as tar:
            blob = json.dumps(metadata, indent=1).encode()
            info = tarfile.TarInfo(METADATA)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
            for name, src in members.items():
                tar.add(src, arcname=name)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the artifact {path}: {exc.strerror or exc}") from None
    return metadata


def _metadata_schema():
    from . import schema as s

    tensor = s.Record({"name": s.TEXT, "shape": s.ListOf(s.int_in(1, MAX_DIM), 0, 16), "dtype": s.one_of(*DTYPES)})
    member = s.matching(MEMBER_NAME, "a file name inside the artifact (relative, no '..')")
    return s.Record(
        required={
            "format": s.one_of(FORMAT),
            "model": s.Record({"name": s.TEXT}, {"family": s.STRING, "source": s.STRING}, open=True),
            "inputs": s.ListOf(tensor, 1, 256),
            "outputs": s.ListOf(tensor, 1, 256),
            "target": s.Record({"name": s.TEXT, "arch": s.matching(r"[a-z0-9_]{1,32}", "an architecture name"),
                                "tvm": s.Record({"kind": s.TEXT}, open=True)},
                               {"description": s.STRING}),
            "library": member,
            "members": s.MapOf(member, s.matching(r"[0-9a-f]{64}", "a sha256 in hex")),
        },
        optional={
            "format_version": s.int_in(1, 1 << 30),
            "reference": s.Either((member, s.NULL)),
            "tuned": s.BOOL,
            "tuning_db": s.Either((s.STRING, s.NULL)),
            "versions": s.MapOf(s.TEXT, s.STRING),
            "created": s.STRING,
            "command": s.STRING,
        })


def _member_path(directory: Path, name: str) -> Path:
    """``directory / name`` if it is a regular file inside ``directory`` (no symlink on the way)."""
    path = directory / name
    inside = directory.resolve()
    for part in [path, *path.parents]:
        if part == directory:
            break
        if part.is_symlink():
            raise ArtifactError(f"artifact member '{name}' is a symbolic link: refused")
    if not path.resolve().is_relative_to(inside):
        raise ArtifactError(f"artifact member '{name}' lies outside the artifact: refused")
    return path


def verify_dir(directory: Path, metadata: dict) -> None:
    """Check every member named in ``metadata`` against its sha256; raise ``ArtifactError`` on any mismatch.

    Member names are confined to ``directory``: no absolute path, ``..`` or symbolic link is followed.
    """
    for name, expected in metadata.get("members", {}).items():
        if not isinstance(name, str) or not re.fullmatch(MEMBER_NAME, name):
            raise ArtifactError(f"artifact member name {name!r} is not a relative name inside the artifact")
        member = _member_path(directory, name)
        if not member.is_file():
            raise ArtifactError(f"artifact member '{name}' is missing")
        actual = sha256_file(member)
        if actual != expected:
            raise ArtifactError(f"artifact member '{name}' does not match its sha256 "
                                f"(expected {str(expected)[:12]}..., found {actual[:12]}...): the file was "
                                "modified or damaged; rebuild it with `edgevit compile`")


def check_metadata(metadata, label: str) -> dict:
    """Validate artifact metadata against the schema of its ``format_version``; return it.

    Metadata without ``format_version`` is read as version 1 (the fields are the same); a newer version than
    this edgevit reads is refused with a hint to upgrade.

    Raises
    ------
    ArtifactError
        Naming the first field that is missing or wrong.
    """
    from .schema import SchemaViolation, check

    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise ArtifactError(f"{label} is not an edgevit artifact (format {found!r})")
    version = metadata.get("format_version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ArtifactError(f"{label} uses artifact format {version}; this edgevit reads up to {FORMAT_VERSION}: "
                            "upgrade edgevit")
    try:
        check(metadata, _metadata_schema())
    except SchemaViolation as exc:
        raise ArtifactError(f"{label}: invalid {METADATA}: {exc}; rebuild it with `edgevit compile`") from None
    for key in ("library", "reference"):
        if metadata.get(key) is not None and metadata[key] not in metadata["members"]:
            raise ArtifactError(f"{label}: invalid {METADATA}: field '{key}' names '{metadata[key]}', which is not "
                                "among the hashed members")
    return metadata


def _check_tar_member(member: tarfile.TarInfo, seen: set, label: str) -> None:
    name = member.name
    if not member.isreg():
        kind = ("symbolic link" if member.issym() else "hard link" if member.islnk() else
                "device file" if member.ischr() or member.isblk() else "directory" if member.isdir() else
                "special file")
        raise ArtifactError(f"{label} has a {kind} member '{name}': an artifact holds regular files only")
    if name != METADATA and not re.fullmatch(MEMBER_NAME, name):
        raise ArtifactError(f"{label} has an unsafe member name '{name}' (absolute, '..' or unusual characters)")
    if name in seen:
        raise ArtifactError(f"{label} has member '{name}' twice")
    seen.add(name)


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
            Missing, unreadable or truncated file; unknown format; metadata not fitting the schema; a member
            that is not a regular file, lies outside the artifact, is not listed in the metadata or whose
            sha256 does not match.
        """
        path = Path(path)
        if path.is_dir():
            raise ArtifactError(f"{path} is a directory, not an artifact .tar")
        if not path.is_file():
            raise ArtifactError(f"artifact not found: {path}")
        directory = Path(tempfile.mkdtemp(prefix="edgevit-artifact-"))
        try:
            with tarfile.open(path, "r:") as tar:
                members, seen = tar.getmembers(), set()
                for member in members:
                    _check_tar_member(member, seen, str(path))
                if METADATA not in seen:
                    raise ArtifactError(f"{path} is not an edgevit artifact (no {METADATA})")
                # The members are checked above; the data filter is a second guard where this Python has it
                # (3.11.4+: a board's Debian 12 Python 3.11.2 has not).
                extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(directory, members=members, **extra)
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
        if not directory.is_dir():
            raise ArtifactError(f"{label}: no artifact folder there")
        try:
            metadata = json.loads(_member_path(directory, METADATA).read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ArtifactError(f"{label}: unreadable {METADATA} ({str(exc)[:200]})") from None
        check_metadata(metadata, label)
        listed = set(metadata["members"]) | {METADATA}
        present = set()
        for path in directory.rglob("*"):
            rel = path.relative_to(directory).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise ArtifactError(f"{label} contains '{rel}', which is not a regular file: refused")
            if path.is_file():
                present.add(rel)
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
