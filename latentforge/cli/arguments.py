"""The flags several commands share, each spelled and parsed in one place.

Choices come from the runtime's own lists, so `--backend` and `--precision` offer exactly what
`latentforge.load` accepts. An older spelling of a flag stays accepted as a hidden alias that
writes the same destination, so scripts written against it keep working.
"""
from __future__ import annotations

import argparse

from latentforge.runtime import BACKENDS
from latentforge.runtime.backends import PRECISIONS


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def batch_sizes(text: str) -> tuple[int, ...]:
    """Comma-separated positive batch sizes, e.g. 1,16,128; each command says what its list means."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batches must be comma-separated integers like 1,16,128, "
                                         f"got {text!r}") from None
    if min(values) <= 0:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def edit_amount(text: str) -> tuple[str, float]:
    """ATTR=AMOUNT -> (attribute, finite amount), by the library's own rule (`directions.parse_amount`)."""
    from latentforge.directions import parse_amount
    from latentforge.errors import InputError

    try:
        return parse_amount(text)
    except InputError:
        raise argparse.ArgumentTypeError(f"an edit is ATTR=AMOUNT with a finite number, e.g. eyes_open=1.5, "
                                         f"got {text!r}") from None


def alias(parser: argparse.ArgumentParser, old: str, action: argparse.Action) -> None:
    """Accept `old` as another spelling of `action`'s flag: same destination and checks, hidden from --help."""
    parser.add_argument(old, action=type(action), dest=action.dest, type=action.type, choices=action.choices,
                        metavar=action.metavar, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    action.help = f"{action.help}; also spelled {old}"


def add_model(parser: argparse.ArgumentParser, help: str = "checkpoint (.safetensors) or exported .onnx") -> None:
    parser.add_argument("model", help=help)


def add_backend(parser: argparse.ArgumentParser, help: str = "which runtime runs the model") -> None:
    parser.add_argument("--backend", default="auto", choices=BACKENDS, help=f"{help}; default auto")


def add_precision(parser: argparse.ArgumentParser, help: str) -> argparse.Action:
    return parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help=f"{help}; default fp32")


def add_threads(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--threads", type=positive_int, help=help)


def add_edits(parser: argparse.ArgumentParser, help: str) -> argparse.Action:
    return parser.add_argument("--edit", action="append", type=edit_amount, metavar="ATTR=AMOUNT", help=help)
