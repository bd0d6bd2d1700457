"""The one exception attnsearch raises for the user's mistakes, and nothing else.

An :class:`AttnsearchError` is bad input: a space file, a command-line argument, a results folder, a weights file.
Its message is one line that says what is wrong and where (a YAML path, a file, a trial), and the command line
answers it with that line and exit code 2. Every other exception is a bug in attnsearch (or in a library under
it): the command line answers it with exit code 1, a one-line summary and the file that holds its traceback.

It derives from ``ValueError`` so that code calling the library with a wrong value can keep catching the
standard exception (Optuna's ``OptunaError`` plays the same role, over ``Exception``).

Example:
    >>> from attnsearch.errors import AttnsearchError
    >>> try:
    ...     raise AttnsearchError("slots.block7: unknown slot for vgg16_bn")
    ... except ValueError as err:
    ...     print(err)
    slots.block7: unknown slot for vgg16_bn
"""

from __future__ import annotations

__all__ = ["AttnsearchError"]


class AttnsearchError(ValueError):
    """Bad input from the user; the message is one line. ``SpaceError`` and ``StoreError`` are kinds of it."""
