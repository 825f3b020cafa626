"""The few exception classes edgevit raises for problems a user can fix.

Each class carries the process exit code the CLI uses, so scripts can tell failures apart (the table is in
``docs/security.md``). Anything else escaping the CLI is a bug in edgevit and is reported as such (exit 1).
"""


class EdgevitError(Exception):
    """Base class: a problem with the user's input or environment, with a message that says what to do."""

    exit_code = 10


class UsageError(EdgevitError):
    """A command line argparse rejects: unknown option, missing or malformed value."""

    exit_code = 2


class UnknownNameError(EdgevitError):
    """An unknown model, target or other registry name; the message lists the valid ones."""

    exit_code = 3


class ModelImportError(EdgevitError):
    """A model that cannot be read or imported: unreadable or malformed ONNX, unsupported operators."""

    exit_code = 4


class InputError(EdgevitError):
    """An input tensor or input specification that does not fit the model (shape, dtype, missing file)."""

    exit_code = 5


class ToolMissingError(EdgevitError):
    """An external tool (cross compiler, qemu, debootstrap, g++) is not installed; says how to install it."""

    exit_code = 6


class ArtifactError(EdgevitError):
    """A corrupt, tampered, truncated or incompatible artifact (e.g. built for another architecture)."""

    exit_code = 7


class VerificationError(EdgevitError):
    """Numerical verification against the reference failed."""

    exit_code = 8


class ExecutionError(EdgevitError):
    """Running a compiled model failed (on the host, under qemu or on a remote node)."""

    exit_code = 9


class TargetError(EdgevitError):
    """A target file that is not valid (missing or mistyped field), or a target that cannot do what is asked."""

    exit_code = 10


class OutputError(EdgevitError):
    """An output path that cannot or must not be written: a directory, an input file, an unwritable place."""

    exit_code = 11


class ResourceError(EdgevitError):
    """A model that does not fit the memory of the target it is built for or run on."""

    exit_code = 12


def errors_by_name(name: str) -> type[EdgevitError]:
    """The error class called ``name`` (to re-raise an error reported by a runner in another process)."""
    found = {cls.__name__: cls for cls in [EdgevitError, *EdgevitError.__subclasses__()]}
    return found.get(name, ExecutionError)
