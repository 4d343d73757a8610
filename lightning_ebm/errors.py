"""Refused input: one line that names the value and what to do, and exit status 2.

The command line (``lightning_ebm.__main__``) prints a :class:`UsageError` as ``<program> <command>: error: <message>``
with no traceback; ``LIGHTNING_EBM_DEBUG=1`` shows the traceback too. Parser errors of jsonargparse (an unknown key, a
value of the wrong type) are condensed to that form by :func:`condense`.
"""

import difflib
import inspect
import re
from collections.abc import Iterable
from typing import Any, NoReturn


class UsageError(ValueError):
    """An input the program refuses (a wrong option, a missing file, an unknown node): exit status 2."""


def parser_error(parser: Any, message: str, ex: Exception | None) -> NoReturn:
    """What the error method of this program's jsonargparse parsers does: raise a one-line :class:`UsageError`."""
    target = getattr(ex, "subcommand_parser", None) or parser
    raise UsageError(condense(message, target._option_string_actions)) from ex


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean X?"`` for the closest of ``choices`` to ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def imported(class_path: str) -> Any:
    """The object that ``"package.module.Name"`` names, or ``None`` when it does not import."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError, ValueError):
        return None


def init_options(class_path: str) -> list[str]:
    """The keyword arguments that ``class_path``'s constructor takes, its mixins' included (best effort)."""
    cls = imported(class_path)
    names: list[str] = []
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return names


_CLASS_PROBLEM = re.compile(r"Problem with given class_path '([\w.]+)':\s*\n\s*(.+)")
_NOT_ACCEPTED = re.compile(r"Option '(\w+)' is not accepted")
_PARSER_KEY = re.compile(r'Parser key "([\w.]+)":\s*(.*)')


_CLASS_REPR = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")
_GIVEN = re.compile(r"^\s*Given value: (.*)$", re.MULTILINE)
_SUBTYPES = re.compile(r"Subtypes: \[(.*)\]")
_CLASS_CHOICES = {
    "model": ("lightning_ebm.methods", "lightning_ebm.methods.base.EBMModule"),
    "data": ("datamodules", "lightning.pytorch.LightningDataModule"),
    "trainer.callbacks": ("callbacks", "lightning.pytorch.callbacks.Callback"),
}


def _no_such_class(key: str, value: str) -> str:
    """``--model NoSuchMethod: no class of that name; ...``: the classes that ``key`` takes by name, the closest."""
    package, base_path = _CLASS_CHOICES[key]
    module, base = imported(f"{package}.__all__"), imported(base_path)
    names = [
        name
        for name in module or []
        if isinstance(cls := imported(f"{package}.{name}"), type) and issubclass(cls, base) and cls is not base
    ]
    what = "a class path (package.module.Class)" + (f" or one of {', '.join(names)}" if names else "")
    return f"--{key} {value}: no class of that name; give {what}{suggest(value, names)}"


def _split_top(text: str) -> list[str]:
    """``text`` split at the commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def _alternatives(subtypes: str) -> str:
    """jsonargparse's ``Subtypes: [...]`` in words: ``bool or int``, ``one of 16-mixed, 32-true, ... or null``."""
    values: list[str] = []
    kinds: list[str] = []
    for subtype in _split_top(subtypes):
        literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", subtype)
        named = _CLASS_REPR.fullmatch(subtype)
        if literal:
            values += [v.strip().strip("'\"") for v in _split_top(literal.group(1)) if v.strip()]
        elif named:
            kinds.append("null" if named.group(1) == "NoneType" else named.group(1))
        else:
            kinds.append(subtype)
    unique = list(dict.fromkeys(values))
    words = ([f"one of {', '.join(unique)}"] if unique else []) + kinds
    return " or ".join(words)


def condense(message: str, options: Iterable[str] = ()) -> str:
    """One line out of a jsonargparse error message; ``options`` are the parser's option strings (for suggestions).

    - an option a class does not take: ``--model.langevin_stepsize: GenerativeConvNet takes no option
      'langevin_stepsize'; did you mean langevin_step_size?``
    - an unknown flag: ``unrecognized option --trainer.max_stepz=3; did you mean --trainer.max_steps?``
    - anything else: the key and the first line that says what is wrong.
    """
    text = message.strip()
    key = _PARSER_KEY.match(text)
    problem = _CLASS_PROBLEM.search(text)
    if problem:
        class_path, detail = problem.group(1), problem.group(2).strip()
        name = class_path.rsplit(".", 1)[-1]
        where = f"--{key.group(1)}" if key else "a config value"
        bad = _NOT_ACCEPTED.search(detail)
        if bad:
            option = bad.group(1)
            return f"{where}.{option}: {name} takes no option {option!r}{suggest(option, init_options(class_path))}"
        nested = condense(text[problem.start(2) :].split("\n    - ", 1)[0]) if _PARSER_KEY.match(detail) else ""
        if nested.startswith("--") and key:  # an option of the class: --model.langevin_steps=1.5: expected int
            return f"{where}.{nested[2:]}"
        return f"{where} ({name}): {detail}"
    if text.startswith("unrecognized arguments:"):
        given = text.split(":", 1)[1].split()
        flag = given[0].split("=", 1)[0] if given else ""
        return f"unrecognized option {' '.join(given)}{suggest(flag, options)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    given = _GIVEN.search(text)
    if key and given and "Expected a path but" in text and key.group(1) in _CLASS_CHOICES:
        return _no_such_class(key.group(1), given.group(1).strip())
    subtypes = _SUBTYPES.search(text)
    if key and given and subtypes:
        return f"--{key.group(1)}={given.group(1).strip()}: expected {_alternatives(subtypes.group(1))}"
    if key:
        detail = key.group(2) or next((line for line in lines[1:] if not line.startswith("Given value")), "")
        detail = _CLASS_REPR.sub(r"\1", detail)
        got = re.fullmatch(r"Expected an? (.+?)\. Got value: (.*)", detail)
        if got:
            return f"--{key.group(1)}={got.group(2)}: expected {got.group(1)}"
        return f"--{key.group(1)}: {detail}"
    return lines[0] if lines else "invalid arguments"


class ResumedElsewhereWarning(UserWarning):
    """A run resumed from a checkpoint of another number of processes (or another chain count): it continues from the
    saved state, dealt out again, but not exactly as the uninterrupted run would have."""
