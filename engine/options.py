"""One home per option: a dataclass field carries its default, bounds, choices and help text.

An option group is a frozen dataclass whose fields are made with :func:`option`. From that one
definition come the argparse flags (:func:`add_arguments`), the checks (:func:`check`, run when an
instance is made), workspace.toml defaults (:func:`defaults`), the console's form fields
(:func:`form_fields`), the command line that reproduces an instance on another host (:func:`to_argv`)
and the conversion of typed-in text (:func:`coerce`). Imports nothing beyond the standard library.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import UserError

CORES = os.cpu_count() or 1
# Worker processes or threads per host: beyond 4 per core a machine only thrashes; the floor keeps
# the tutorial's own `--num-thread 16` working on a small machine.
PROCESS_FLOOR = 32
PROCESS_CAP = max(4 * CORES, PROCESS_FLOOR)
PROCESS_WHY = f"4 per core on {CORES} cores, at least {PROCESS_FLOOR}"
FANOUT_CAP = 1024  # processes or connections one command starts across a cluster

_SPEC = "imgscale.option"


@dataclass(frozen=True)
class Spec:
    """What a field's metadata says about it; see :func:`option`."""

    help: str
    flags: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    high_why: str = ""
    choices: tuple[Any, ...] = ()
    parse: Callable[[Any], Any] | None = None
    show: Callable[[Any], str] | None = None
    metavar: str | None = None
    negate: str = ""  # the flag that turns a default-True switch off, e.g. --no-reduced-decode
    group: str = ""
    nargs: str | None = None
    append: bool = False  # a repeatable flag collecting a list
    console: bool = True  # a workspace.toml key and a field of the console's form

    def flag(self, name: str) -> str:
        return self.flags[0] if self.flags else "--" + name.replace("_", "-")


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its default, bounds (low, high), choices and help text."""
    meta = {_SPEC: Spec(help=help, **spec)}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def num_workers_option(default: int | None, help: str) -> Any:
    """``-n/--num-workers``, declared once for every command that takes it (launch, check)."""
    return option(default, help, flags=("-n", "--num-workers"), parse=int, low=1, high=FANOUT_CAP)


def num_servers_option(help: str) -> Any:
    """``-s/--num-servers``; None: not given (launch then starts as many as workers, as launch.py)."""
    return option(None, help, flags=("-s", "--num-servers"), parse=int, low=0, high=FANOUT_CAP)


def fields(cls_or_obj: Any) -> list[tuple[dataclasses.Field, Spec]]:
    return [(f, f.metadata[_SPEC]) for f in dataclasses.fields(cls_or_obj) if _SPEC in f.metadata]


def spec_of(cls_or_obj: Any, name: str) -> Spec:
    return next(s for f, s in fields(cls_or_obj) if f.name == name)


def default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def defaults(cls: Any, console_only: bool = False) -> dict[str, Any]:
    """Field name -> default, as workspace.toml and the console see them."""
    return {f.name: default_of(f) for f, s in fields(cls) if s.console or not console_only}


# ---- checks -----------------------------------------------------------------------------------
def check(obj: Any, cls: Any = None) -> None:
    """Refuse a value outside its bounds or choices: one line naming the flag and the limit.

    ``obj`` is an instance, or (with ``cls``) anything carrying the fields, e.g. parsed flags."""
    for f, spec in fields(cls or obj):
        if hasattr(obj, f.name):
            check_value(spec, f.name, getattr(obj, f.name))


def check_value(spec: Spec, name: str, value: Any) -> None:
    flag = spec.flag(name)
    if value is None or isinstance(value, bool):
        return
    if spec.choices and value not in spec.choices:
        raise UserError(f"{flag} {value}: use one of {', '.join(map(str, spec.choices))}")
    if isinstance(value, (list, tuple)) and any(_not_finite(v) for v in value):
        raise UserError(f"{flag} {text_of(spec, value)}: every value must be a finite number")
    if not isinstance(value, (int, float)):
        return
    if _not_finite(value):
        raise UserError(f"{flag} {value}: give a finite number")
    if spec.low is not None and value < spec.low:
        raise UserError(f"{flag} {value}: give {_num(spec.low)} or more")
    if spec.high is not None and value > spec.high:
        why = f" ({spec.high_why})" if spec.high_why else ""
        raise UserError(f"{flag} {value}: give at most {_num(spec.high)}{why}")


def _not_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def finite(text: Any) -> float:
    """A float flag's or form's value: nan and inf parse as floats but no option can use them."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def build(cls: Any, values: dict[str, Any], base: Any = None, where: str = "") -> Any:
    """An instance from stored or typed values over ``base`` (default: the dataclass's defaults),
    with every bound checked; unknown keys are refused by name. ``where`` prefixes the names a bad
    value's message gives (e.g. "train.")."""
    known = [f.name for f, _ in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown option {where}{unknown[0]}; options: {', '.join(known)}")
    typed = {k: coerce(cls, k, v, label=where + k) for k, v in values.items()}
    obj = dataclasses.replace(base, **typed) if base is not None else cls(**typed)
    check(obj)  # a group without a __post_init__ check (TrainOptions) is checked here too
    return obj


# ---- text <-> value ---------------------------------------------------------------------------
def coerce(cls: Any, name: str, value: Any, label: str = "") -> Any:
    """A value typed in a form or read from workspace.toml, in the field's own type: the one
    conversion every workspace option goes through.

    Text for a number is read as one (and then given to the field's ``parse``, if any); other text
    and lists go through ``parse`` where the field has one (it also takes a TOML array), else text
    takes the type of the field's default; other values are kept as given. A bad value is one line
    naming ``label`` (default: the field's name)."""
    f, spec = next((f, s) for f, s in fields(cls) if f.name == name)
    default = default_of(f)
    number = spec.parse if spec.parse in (int, float) else type(default)
    try:
        if isinstance(value, str) and number in NUMBER_WORDS:  # "many" is not a number: say so
            read = _number(number, value.strip(), NUMBER_WORDS[number])
            return spec.parse(read) if spec.parse is not None else read
        if spec.parse is not None and isinstance(value, (str, list)):
            return spec.parse(value)
        if isinstance(value, str):
            return _from_text(default, value.strip())
        return value
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise _invalid(label or name, value, exc) from None


def _invalid(name: str, value: Any, exc: Exception) -> UserError:
    return UserError(f"{name}: {value!r}: {exc}")


def _number(kind: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return finite(text) if kind is float else kind(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise ValueError(f"not a valid {what}") from None


NUMBER_WORDS: dict[Any, str] = {int: "int (a whole number)", float: "finite number"}


def _from_text(current: Any, text: str) -> Any:
    """``text`` in the type of ``current``; text for a text (or unset) option stays as typed."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("not valid: give true or false")
    if isinstance(current, (int, float)):
        return _number(type(current), text, NUMBER_WORDS[type(current)])
    if isinstance(current, (list, tuple)):  # words, as flags are typed: a comma stays in its word
        return type(current)(text.split())
    return text


def text_of(spec: Spec, value: Any) -> str:
    """How a value is written on a command line or in a form."""
    if spec.show is not None:
        return spec.show(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)


# ---- argparse ---------------------------------------------------------------------------------
def add_arguments(
    parser: Any,
    cls: Any,
    *,
    only: Iterable[str] | None = None,
    group: str | None = None,
    base: Any = None,
    keep_unset: bool = False,
) -> None:
    """Add a flag per field. ``base`` (an instance) supplies other defaults than the dataclass's;
    ``keep_unset`` makes every default None, so a caller can tell a flag given from one left out."""
    wanted = None if only is None else set(only)
    for f, spec in fields(cls):
        if (wanted is not None and f.name not in wanted) or (
            group is not None and spec.group != group
        ):
            continue
        value = getattr(base, f.name) if base is not None else default_of(f)
        help_text = spec.help + _limits(spec)
        if keep_unset and not isinstance(value, bool):
            help_text += f" (default: {text_of(spec, value)})"
        _add_one(parser, f.name, spec, None if keep_unset else value, default_of(f), help_text)


def _add_one(parser: Any, name: str, spec: Spec, default: Any, kind: Any, help_text: str) -> None:
    """One flag; ``kind`` is the dataclass default, which decides switch, number or text."""
    flags = spec.flags or (spec.flag(name),)
    if isinstance(kind, bool) and spec.parse is not None:  # --flag, or --flag 1 / --flag 0
        parser.add_argument(
            *flags, dest=name, nargs="?", const=True, default=default, type=spec.parse,
            metavar=spec.metavar, help=help_text,
        )  # fmt: skip
        return
    if isinstance(kind, bool):
        if spec.negate:
            parser.add_argument(spec.negate, dest=name, action="store_false", help=help_text)
            parser.set_defaults(**{name: default})
        else:
            parser.add_argument(*flags, dest=name, action="store_true", help=help_text)
            if default is None:
                parser.set_defaults(**{name: None})
        return
    kwargs: dict[str, Any] = {"dest": name, "default": default, "help": help_text}
    if spec.nargs:
        pass  # each word stays text; the dataclass checks the whole list
    elif spec.parse is not None:
        kwargs["type"] = spec.parse
    elif spec.choices:
        kwargs["type"] = type(spec.choices[0])
    elif isinstance(kind, float):
        kwargs["type"] = finite
    elif isinstance(kind, int):
        kwargs["type"] = int
    if spec.choices:
        kwargs["choices"] = spec.choices
    if spec.metavar:
        kwargs["metavar"] = spec.metavar
    if spec.nargs:
        kwargs["nargs"] = spec.nargs
    if spec.append:
        kwargs["action"] = "append"
        kwargs["default"] = None if default is None else list(default)
    parser.add_argument(*flags, **kwargs)


def _limits(spec: Spec) -> str:
    if spec.low is not None and spec.high is not None:
        return f" ({_num(spec.low)}-{_num(spec.high)})"
    return ""


def from_args(cls: Any, args: argparse.Namespace, **extra: Any) -> Any:
    """An instance from parsed flags (fields the parser did not add keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f, _ in fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **extra})


def given(cls: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The fields whose flags were given (parsed with ``keep_unset``)."""
    return {
        f.name: getattr(args, f.name)
        for f, _ in fields(cls)
        if getattr(args, f.name, None) is not None
    }


def to_argv(obj: Any, only: Sequence[str] | None = None) -> list[str]:
    """Flags that reproduce ``obj`` when parsed by a parser built with :func:`add_arguments`
    (in field order, or in the order of ``only``)."""
    by_name = {f.name: spec for f, spec in fields(obj)}
    argv: list[str] = []
    for name in only if only is not None else by_name:
        argv += _flag_words(by_name[name], name, getattr(obj, name))
    return argv


def _flag_words(spec: Spec, name: str, value: Any) -> list[str]:
    flag = spec.flag(name)
    if isinstance(value, bool):
        if spec.negate:
            return [] if value else [spec.negate]
        return [flag] if value else []
    if value is None:
        return []
    if spec.append:
        return [word for item in value for word in (flag, str(item))]
    if spec.nargs:
        return [flag, *map(str, value)]
    return [flag, text_of(spec, value)]


# ---- the console's forms ------------------------------------------------------------------------
@dataclass(frozen=True)
class FormField:
    """One row of an options form: what the console shows and what the engine will accept."""

    name: str
    kind: str  # "int", "float", "bool", "text", "choice", "list"
    value: str
    default: str
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def form_fields(
    cls: Any, values: dict[str, Any], base: Any = None, only: Sequence[str] | None = None
) -> tuple[FormField, ...]:
    """The console's fields for an option group, filled with the current ``values``; ``base`` (an
    instance) gives other defaults than the dataclass's, ``only`` picks fields (default: console ones)."""
    out = []
    for f, spec in fields(cls):
        if (f.name not in only) if only is not None else not spec.console:
            continue
        default = getattr(base, f.name) if base is not None else default_of(f)
        current = values.get(f.name, default)
        out.append(
            FormField(
                name=f.name,
                kind=_kind(spec, default_of(f)),
                value=_form_text(current),
                default=_form_text(default),
                help=spec.help,
                low=spec.low,
                high=spec.high,
                choices=tuple(map(str, spec.choices)),
            )
        )
    return tuple(out)


def _form_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _kind(spec: Spec, default: Any) -> str:
    if spec.choices:
        return "choice"
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (list, "list")):
        if isinstance(default, kind):
            return name
    return "list" if isinstance(default, tuple) else "text"
