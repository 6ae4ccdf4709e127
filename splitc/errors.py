"""Errors raised for bad user input.

Every ``SplitcError`` is a user error: the CLI prints its message on one line
and exits with code 2, without a traceback.
"""


class SplitcError(Exception):
    """Base class for errors caused by the user's input, not by splitc."""


class ModelError(SplitcError):
    """The model file is missing, corrupt, or cannot be analysed."""


class ShapeError(SplitcError):
    """A tensor shape is unknown, dynamic, or was given in a bad form."""


class TargetError(SplitcError):
    """An unknown target name or a malformed target description."""


class ParseError(SplitcError):
    """A bandwidth, time or shape string could not be parsed."""


class CutError(SplitcError):
    """A cut forced with ``--cut`` is not a valid edge/cloud split."""
