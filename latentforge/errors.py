"""One exception family. Every message names the bad value and what to do about it, on one line."""
import re

# every character str.splitlines() breaks at: a message quoting a foreign one (a safetensors header error naming a
# tensor called "x\n", a file name with a line separator) keeps them escaped instead
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with its line breaks written as escapes (\\n, \\u2028, ...), so it prints as one line."""
    return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], text)


class LatentforgeError(Exception):
    """Base of every error latentforge raises on purpose; the CLI prints it as one line, and the message is one
    line by construction whatever foreign text it quotes."""

    def __init__(self, message="", *args) -> None:
        super().__init__(one_line(str(message)), *args)


class InputError(LatentforgeError, ValueError):
    """A bad argument: wrong shape, NaN, n <= 0, a path that cannot be written."""


class DataError(InputError):
    """A data set that cannot be read: empty folder, corrupt image, bad attributes CSV."""


class CheckpointError(LatentforgeError):
    """A checkpoint that is missing, truncated, foreign or a pickle."""


class ExportError(LatentforgeError):
    """An export that could not be made."""


class ParityError(ExportError):
    """An exported graph that does not match its PyTorch reference; `.result` holds the full report."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result


class BackendUnavailable(LatentforgeError):
    """A runtime backend that is not installed or cannot run this artifact."""


class TrainingError(LatentforgeError):
    """Training that had to stop: a NaN/Inf loss, a resume that does not match."""


class NumericalError(LatentforgeError):
    """A model whose output is NaN/Inf even at its highest precision: damaged weights or a latent far outside
    the prior."""


class StreamError(InputError):
    """A compressed `.lfz` stream that is truncated, corrupted, foreign, or made by another model."""
