"""The `BATCHD_*` environment variables as the settings model defines them: which names exist,
and what is wrong with one that does not parse, each problem with the fix in its message.

pydantic-settings ignores a variable it does not know and, for a list or table given without its
JSON quotes, reports only "error parsing value for field ... from source EnvSettingsSource".
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterator, Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

PREFIX = "BATCHD_"
NESTED = "__"

#: BATCHD_ variables that are not settings: the configuration file's path, what `batchd dev`
#: exports for producers (the ingress URL and token), and the crash-test hooks.
NOT_SETTINGS = frozenset(
    {"BATCHD_CONFIG", "BATCHD_URL", "BATCHD_TOKEN", "BATCHD_CRASH_AT", "BATCHD_CRASH_MARKER"}
)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (`Model`, `Model | None`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models(arg)]
    return []


def _container(annotation: Any) -> type | None:
    """`list` or `dict` when the field holds one (possibly optional), which the environment
    must give as JSON; None for a scalar."""
    origin = get_origin(annotation)
    if origin in (list, dict, tuple, set):
        return dict if origin is dict else list
    if origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _container(arg)
            if found is not None:
                return found
    if _models(annotation):
        return dict
    return None


def _dict_values(annotation: Any) -> list[type[BaseModel]]:
    """For `dict[str, Model]`: [Model]."""
    if get_origin(annotation) is dict:
        return _models(get_args(annotation)[1])
    return []


def resolve(model: type[BaseModel], parts: list[str]) -> tuple[str, Any] | None:
    """The dotted setting and its annotation that the variable's parts (`["batch", "max_wait"]`)
    name, or None when no setting has that name."""
    dotted: list[str] = []
    current: type[BaseModel] | None = model
    annotation: Any = None
    i = 0
    while i < len(parts):
        if current is None:
            return None
        field = current.model_fields.get(parts[i])
        if field is None:
            return None
        dotted.append(parts[i])
        annotation = field.annotation
        i += 1
        if i == len(parts):
            break
        values = _dict_values(annotation)
        if values:  # a table of named entries: `accounts.<name>`
            dotted.append(parts[i])
            i += 1
            current, annotation = values[0], values[0]
            continue
        models = _models(annotation)
        current = models[0] if models else None
    return ".".join(dotted), annotation


def _leaves(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        var = f"{prefix}{name.upper()}"
        values = _dict_values(field.annotation)
        models = _models(field.annotation)
        if values:
            yield from _leaves(values[0], f"{var}{NESTED}DEFAULT{NESTED}")
        elif models:
            yield from _leaves(models[0], f"{var}{NESTED}")
        else:
            yield var


def known_names(model: type[BaseModel]) -> list[str]:
    """Every setting's variable (tables of named entries shown with the entry `DEFAULT`)."""
    return sorted({*_leaves(model, PREFIX), *NOT_SETTINGS})


def _parts(name: str) -> list[str]:
    return name[len(PREFIX) :].lower().split(NESTED)


def unknown(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One line per `BATCHD_*` variable that names no setting, with the likeliest meant."""
    names = known_names(model)
    problems: list[str] = []
    for var in sorted(environ):
        if not var.upper().startswith(PREFIX) or var.upper() in NOT_SETTINGS:
            continue
        if resolve(model, _parts(var)) is not None:
            continue
        guess = difflib.get_close_matches(var.upper(), names, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]}? " if guess else ""
        problems.append(
            f"{var} is not a batchd setting: {hint}Rename or unset it (settings are BATCHD_ + "
            "the dotted name in capitals, sections joined by '__': BATCHD_BATCH__MAX_WAIT)"
        )
    return problems


def _example(var: str, value: str, kind: type) -> str:
    """The value re-quoted as JSON, when it reads as a list of bare words; a template else."""
    inner = value.strip()
    if kind is list:
        inner = inner.removeprefix("[").removesuffix("]")
        words = [w.strip().strip("'\"") for w in inner.split(",") if w.strip()]
        if words and all(w.replace(".", "").replace("-", "").isalnum() for w in words):
            items = [_scalar(w) for w in words]
            return f"{var}='{json.dumps(items, separators=(',', ':'))}'"
        return f"{var}='[...]'"
    return f"{var}='{{...}}'"


def _scalar(word: str) -> Any:
    """A bare word as JSON has it: a number stays a number, anything else becomes a string."""
    try:
        number = json.loads(word)
    except ValueError:
        return word
    return number if isinstance(number, int | float) else word


def unparsable(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One line per variable holding a list or table that is not JSON (its quotes lost to a
    shell or an env file, or a comma-separated list), saying how to write it."""
    problems: list[str] = []
    for var, value in sorted(environ.items()):
        if not var.upper().startswith(PREFIX) or var.upper() in NOT_SETTINGS:
            continue
        found = resolve(model, _parts(var))
        if found is None:
            continue
        dotted, annotation = found
        kind = _container(annotation)
        if kind is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            pass
        else:
            continue
        what = "a list" if kind is list else "a table"
        secret = any(w in dotted for w in ("secret", "key", "token", "endpoints", "accounts"))
        shown = "" if secret else f" (got {value!r})"
        example = f"{var}='[...]'" if secret else _example(var, value, kind)
        problems.append(
            f"{var}: {dotted} is {what}, given in JSON{shown}: write it as {example}; in a "
            "shell, single quotes keep the double quotes JSON needs"
        )
    return problems
