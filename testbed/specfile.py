"""YAML loading that remembers line numbers, and small field validators.

Every spec (topology, experiment) is validated at load; errors point to the line and field.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError


class LineDict(dict):
    """A mapping from YAML that knows its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence from YAML that knows its own line and its items' lines."""

    line: int | None = None
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise SpecError("", str(key), "duplicate key", key_node.start_mark.line + 1)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text; syntax errors become a one-line SpecError naming `source`."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except SpecError as exc:
        raise SpecError(source, exc.where, exc.rule, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(source, "", f"invalid YAML: {problem}", line) from None


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file; a missing or unreadable file is a one-line error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read file: {exc.strerror}") from None
    return load_yaml_text(text, str(path))


def line_of(obj: Any, key: str | int | None = None) -> int | None:
    """Best-known line of `obj` (or of `obj[key]`)."""
    if isinstance(obj, LineDict):
        return obj.line_of(key) if key is not None else obj.line
    if isinstance(obj, LineList):
        if isinstance(key, int) and 0 <= key < len(obj.item_lines):
            return obj.item_lines[key]
        return obj.line
    return None


class Checker:
    """Validates plain YAML values for one spec file and raises SpecError with location."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, rule: str, obj: Any = None, key: str | int | None = None) -> SpecError:
        return SpecError(self.source, where, rule, line_of(obj, key))

    def mapping(self, value: Any, where: str, parent: Any = None, key: Any = None) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a mapping, got {type(value).__name__}", parent, key)
        return value

    def sequence(self, value: Any, where: str, parent: Any = None, key: Any = None) -> list:
        if not isinstance(value, list):
            raise self.fail(where, f"must be a list, got {type(value).__name__}", parent, key)
        return value

    def keys(
        self, mapping: Mapping, where: str, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> None:
        allowed = list(allowed)
        for key in mapping:
            if key not in allowed:
                raise self.fail(
                    f"{where}.{key}" if where else str(key),
                    f"unknown field (allowed: {', '.join(sorted(allowed))})",
                    mapping,
                    key,
                )
        for key in required:
            if key not in mapping:
                raise self.fail(where or "top level", f"missing required field '{key}'", mapping)

    def number(
        self,
        mapping: Mapping,
        key: str,
        where: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_min: bool = False,
        integer: bool = False,
        default: Any = None,
    ) -> Any:
        """A number field within [minimum, maximum]; returns `default` when absent."""
        if key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        field = f"{where}.{key}" if where else key
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(field, f"must be a number, got {value!r}", mapping, key)
        if integer and not float(value).is_integer():
            raise self.fail(field, f"must be a whole number, got {value!r}", mapping, key)
        if value != value:  # NaN
            raise self.fail(field, "must be a number, got NaN", mapping, key)
        if minimum is not None and (value < minimum or (exclusive_min and value == minimum)):
            op = ">" if exclusive_min else ">="
            raise self.fail(field, f"must be {op} {minimum:g}, got {value:g}", mapping, key)
        if maximum is not None and value > maximum:
            raise self.fail(field, f"must be <= {maximum:g}, got {value:g}", mapping, key)
        return int(value) if integer else value

    def string(
        self,
        mapping: Mapping,
        key: str,
        where: str,
        *,
        choices: Iterable[str] | None = None,
        default: Any = None,
    ) -> Any:
        if key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        field = f"{where}.{key}" if where else key
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {value!r}", mapping, key)
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                raise self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}", mapping, key)
        return value

    def boolean(self, mapping: Mapping, key: str, where: str, default: bool = False) -> bool:
        if key not in mapping or mapping[key] is None:
            return default
        value = mapping[key]
        if not isinstance(value, bool):
            raise self.fail(f"{where}.{key}", f"must be true or false, got {value!r}", mapping, key)
        return value
