"""``jupyter pirus``: the command line (parser and commands only; the work is done by
:mod:`pirus_jupyter.packaging` and :mod:`pirus_jupyter.kernel`)."""

from .commands import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    main,
)
from .parser import parse_config_pairs

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE",
           "main", "parse_config_pairs"]
