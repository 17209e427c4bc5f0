"""Solution markers: turn a teacher's solution file into student starter code (or clean solution code).

A solution region is a block of lines between two marker comments, at the indentation of the code it
replaces::

    def rnn_step_forward(x, h_prev, Wx, Wh, b):
        # BEGIN SOLUTION hint: "h = tanh(x Wx + h_prev Wh + b); keep what the backward needs in the cache"
        h = np.tanh(x @ Wx + h_prev @ Wh + b)
        cache = (x, h_prev, Wx, Wh, h)
        # END SOLUTION
        return h, cache

In the starter code the region becomes ``raise NotImplementedError("<hint>")`` at the BEGIN line's
indentation; the code around it (the signature, the docstring, the ``return``) stays, so the student
sees what to produce.  Without a hint the message names the enclosing function.  Regions cannot nest;
a BEGIN without an END (or the reverse) is a :class:`MarkerError` naming the file and line.
"""
from __future__ import annotations

import re

_BEGIN = re.compile(r'^(?P<indent>[ \t]*)# BEGIN SOLUTION(?:\s+hint:\s*"(?P<hint>(?:[^"\\]|\\.)*)")?\s*$')
_END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
_MARKER = re.compile(r"#\s*(BEGIN|END) SOLUTION")
_DEF = re.compile(r"^[ \t]*(?:async\s+)?def\s+(?P<name>\w+)\s*\(")


class MarkerError(ValueError):
    """A malformed BEGIN/END SOLUTION marker (the message names the file and line)."""


def _python_string(text: str) -> str:
    """A double-quoted Python string literal for ``text``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _regions(lines, filename):
    """Yield (begin_index, end_index, indent, hint) for each solution region, validating the markers."""
    begin = None
    for index, line in enumerate(lines):
        begin_match = _BEGIN.match(line)
        if begin_match:
            if begin is not None:
                raise MarkerError(f"{filename}:{index + 1}: BEGIN SOLUTION inside the region opened at "
                                  f"line {begin[0] + 1} (regions cannot nest)")
            hint = begin_match.group("hint")
            begin = (index, begin_match.group("indent"),
                     None if hint is None else re.sub(r"\\(.)", r"\1", hint))
        elif _END.match(line):
            if begin is None:
                raise MarkerError(f"{filename}:{index + 1}: END SOLUTION without a BEGIN SOLUTION")
            yield begin[0], index, begin[1], begin[2]
            begin = None
        elif _MARKER.search(line):
            raise MarkerError(f'{filename}:{index + 1}: malformed marker {line.strip()!r}; write '
                              f'"# BEGIN SOLUTION", "# BEGIN SOLUTION hint: \\"...\\"" or "# END SOLUTION" '
                              f"alone on its line")
    if begin is not None:
        raise MarkerError(f"{filename}:{begin[0] + 1}: BEGIN SOLUTION is never closed by END SOLUTION")


def _enclosing_function(lines, index) -> str | None:
    """The name of the innermost ``def`` above line ``index`` (by indentation), or None."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        match = _DEF.match(line)
        if match and len(line) - len(line.lstrip()) < indent:
            return match.group("name")
    return None


def make_starter(source: str, filename: str = "<solution>") -> str:
    """Replace every solution region of ``source`` by ``raise NotImplementedError(hint)``."""
    lines = source.splitlines(keepends=True)
    out, position, n_regions = [], 0, 0
    for begin, end, indent, hint in _regions(lines, filename):
        out.extend(lines[position:begin])
        if hint is None:
            function = _enclosing_function(lines, begin)
            hint = f"write this part of {function}" if function else "write this part"
        out.append(f"{indent}raise NotImplementedError({_python_string(hint)})\n")
        position, n_regions = end + 1, n_regions + 1
    if n_regions == 0:
        raise MarkerError(f"{filename}: no BEGIN SOLUTION / END SOLUTION region: nothing for a student to write")
    out.extend(lines[position:])
    return "".join(out)


def strip_markers(source: str, filename: str = "<solution>") -> str:
    """The solution itself: ``source`` with the marker lines removed and the code between them kept."""
    lines = source.splitlines(keepends=True)
    drop = set()
    for begin, end, _, _ in _regions(lines, filename):
        drop.update((begin, end))
    return "".join(line for index, line in enumerate(lines) if index not in drop)
