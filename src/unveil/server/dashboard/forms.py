"""A flag's targeting as form fields and back: the rules editor without a framework.

The form is plain HTML: each rule, each of its conditions and what it serves
are named fields (``r0.c1.attr``), and the buttons that add or remove a rule
or a condition post the form back to be drawn again, unsaved. Saving hands
the flag to the same validation as every other write; the problems it names
(``flags.checkout.rules[0].when[1].values[0]``) are placed back beside the
field that holds them (``field_for``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from unveil.core import Operator

__all__ = [
    "MAX_FIELDS",
    "OPERATORS",
    "FormRefused",
    "read_form",
    "whole_number",
    "Editor",
    "editor_from_data",
    "editor_from_form",
    "field_for",
    "field_id",
    "field_label",
    "segment_editor_from_data",
    "segment_editor_from_form",
    "segment_with",
]

OPERATORS = tuple(o.value for o in Operator)
#: At most this many fields in one posted form (a flag with many rules posts hundreds;
#: the Guard's byte limit of a form bounds the work long before this does).
MAX_FIELDS = 20_000
_WHOLE = re.compile(r"[0-9]{1,18}")
_UNCARRIABLE = re.compile("[\x00\ud800-\udfff]")


class FormRefused(ValueError):
    """A posted form that cannot be read: its message names the field."""


def read_form(body: bytes) -> dict[str, str]:
    """The fields of a posted form; ``FormRefused`` for one that is not text, holds a NUL
    or a lone surrogate (no database keeps them), or has too many fields."""
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormRefused("the form is not UTF-8 text") from None
    except ValueError:
        raise FormRefused(f"the form has more than {MAX_FIELDS} fields") from None
    for name, value in pairs:
        if _UNCARRIABLE.search(name) or _UNCARRIABLE.search(value):
            shown = name if not _UNCARRIABLE.search(name) else "a field's name"
            raise FormRefused(f"{shown}: holds a NUL character or a lone surrogate")
    return dict(pairs)


def whole_number(raw: str) -> int | None:
    """A whole number as typed in a form (ASCII digits, at most 18), else None."""
    return int(raw) if _WHOLE.fullmatch(raw) else None


_PAIR = re.compile(r"^\s*([^:=\s][^:=]*?)\s*[:=]\s*(\S+)\s*$")


@dataclass
class ConditionForm:
    """One condition as its fields show it."""

    kind: str = "attr"  # attr | segment | sample
    attr: str = ""
    op: str = "in"
    values: str = ""  # one value per line
    negate: bool = False
    ignore_case: bool = False
    segment: str = ""
    sample: str = ""
    by: str = ""
    salt: str = ""


@dataclass
class ServeForm:
    """What a rule (or the default) serves: a variant, a rollout, or JSON for the rest."""

    mode: str = ""  # a variant name, "rollout" or "json"
    rollout: str = ""  # "on: 50, off: 50"
    by: str = ""
    raw: str = ""


@dataclass
class RuleForm:
    conditions: list[ConditionForm] = field(default_factory=list)
    serve: ServeForm = field(default_factory=ServeForm)


@dataclass
class Editor:
    """The editable targeting of one flag: individual targets, rules and the default."""

    variants: list[str]
    targets: dict[str, str]  # variant -> keys, one per line
    rules: list[RuleForm]
    default: ServeForm
    #: (flag key, its variants that let this flag be evaluated, separated by commas)
    prerequisites: list[tuple[str, str]] = field(default_factory=list)


# -- from stored data to the form ---------------------------------------------------


def _value_text(value: Any) -> str:
    """A value as typed in the form: text plainly, unless it would read back as another type."""
    if isinstance(value, str):
        try:
            reread = json.loads(value)
        except ValueError:
            return value
        return value if isinstance(reread, str) else json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def _serve_form(serve: Any) -> ServeForm:
    if isinstance(serve, str):
        return ServeForm(mode=serve)
    if isinstance(serve, Mapping) and set(serve) <= {"rollout", "by"}:
        shares = serve.get("rollout", {})
        text = ", ".join(f"{name}: {share}" for name, share in shares.items())
        return ServeForm(mode="rollout", rollout=text, by=str(serve.get("by", "")))
    return ServeForm(mode="json", raw=json.dumps(serve, ensure_ascii=False))


def _condition_form(raw: Mapping[str, Any]) -> ConditionForm:
    negate = bool(raw.get("not", False))
    if "segment" in raw:
        return ConditionForm(kind="segment", segment=str(raw["segment"]), negate=negate)
    if "sample" in raw:
        return ConditionForm(
            kind="sample",
            sample=str(raw["sample"]),
            by=str(raw.get("by", "")),
            salt=str(raw.get("salt", "")),
            negate=negate,
        )
    return ConditionForm(
        kind="attr",
        attr=str(raw.get("attr", "")),
        op=str(raw.get("op", "in")),
        values="\n".join(_value_text(v) for v in raw.get("values", ())),
        negate=negate,
        ignore_case=bool(raw.get("ignore_case", False)),
    )


def editor_from_data(data: Mapping[str, Any]) -> Editor:
    """The form of a stored flag."""
    variants = list(data.get("variants", {"on": True, "off": False}))
    targets = {v: "\n".join(data.get("targets", {}).get(v, ())) for v in variants}
    rules = [
        RuleForm([_condition_form(c) for c in rule.get("when", ())], _serve_form(rule.get("serve")))
        for rule in data.get("rules", ())
    ]
    prerequisites = [
        (str(p.get("flag", "")), ", ".join(str(v) for v in p.get("variants", ())))
        for p in data.get("prerequisites", ())
    ]
    return Editor(variants, targets, rules, _serve_form(data.get("default")), prerequisites)


# -- from the posted form to data ---------------------------------------------------


def _posted_serve(fields: Mapping[str, str], prefix: str) -> ServeForm:
    return ServeForm(
        mode=fields.get(f"{prefix}.mode", ""),
        rollout=fields.get(f"{prefix}.rollout", ""),
        by=fields.get(f"{prefix}.by", ""),
        raw=fields.get(f"{prefix}.raw", ""),
    )


def _posted_condition(fields: Mapping[str, str], prefix: str) -> ConditionForm:
    return ConditionForm(
        kind=fields.get(f"{prefix}.kind", "attr"),
        attr=fields.get(f"{prefix}.attr", ""),
        op=fields.get(f"{prefix}.op", "in"),
        values=fields.get(f"{prefix}.values", ""),
        negate=f"{prefix}.not" in fields,
        ignore_case=f"{prefix}.ignore_case" in fields,
        segment=fields.get(f"{prefix}.segment", ""),
        sample=fields.get(f"{prefix}.sample", ""),
        by=fields.get(f"{prefix}.by", ""),
        salt=fields.get(f"{prefix}.salt", ""),
    )


def _count(fields: Mapping[str, str], name: str, limit: int) -> int:
    found = whole_number(fields.get(name, "0"))
    return 0 if found is None else min(limit, found)


def editor_from_form(fields: Mapping[str, str], variants: Sequence[str]) -> Editor:
    """The form as posted, with the edit its button asked for (add or remove) made."""
    rules = []
    for i in range(_count(fields, "rules", 100)):
        conditions = [
            _posted_condition(fields, f"r{i}.c{j}")
            for j in range(_count(fields, f"r{i}.conditions", 100))
        ]
        rules.append(RuleForm(conditions, _posted_serve(fields, f"r{i}.serve")))
    prerequisites = [
        (fields.get(f"p{i}.flag", ""), fields.get(f"p{i}.variants", ""))
        for i in range(_count(fields, "prerequisites", 100))
    ]
    editor = Editor(
        list(variants),
        {v: fields.get(f"targets.{v}", "") for v in variants},
        rules,
        _posted_serve(fields, "default"),
        prerequisites,
    )
    _apply_action(editor, fields.get("action", ""))
    return editor


def _apply_action(editor: Editor, action: str) -> None:
    """add-rule, remove-rule-N, add-condition-N, remove-condition-N-M."""
    parts = action.split("-")
    numbers = [n for p in parts if (n := whole_number(p)) is not None]
    first = editor.variants[0] if editor.variants else ""
    if action == "add-prerequisite":
        editor.prerequisites.append(("", "on"))
    elif action.startswith("remove-prerequisite-") and numbers:
        if numbers[0] < len(editor.prerequisites):
            del editor.prerequisites[numbers[0]]
    elif action == "add-rule":
        editor.rules.append(RuleForm([ConditionForm()], ServeForm(mode=first)))
    elif action.startswith("remove-rule-") and numbers and numbers[0] < len(editor.rules):
        del editor.rules[numbers[0]]
    elif action.startswith("add-condition-") and numbers and numbers[0] < len(editor.rules):
        editor.rules[numbers[0]].conditions.append(ConditionForm())
    elif action.startswith("remove-condition-") and len(numbers) == 2:
        rule, condition = numbers
        if rule < len(editor.rules) and condition < len(editor.rules[rule].conditions):
            del editor.rules[rule].conditions[condition]


def _typed(line: str) -> Any:
    """A value as typed: numbers, true/false and "quoted text" as JSON reads them, else text."""
    try:
        value = json.loads(line)
    except ValueError:
        return line
    return value if isinstance(value, str | int | float | bool) else line


def _serve_data(serve: ServeForm) -> Any:
    if serve.mode == "rollout":
        shares: dict[str, Any] = {}
        for piece in re.split(r"[,\n]", serve.rollout):
            if not piece.strip():
                continue
            found = _PAIR.match(piece)
            if found is None:  # left as written: the validation names what is wrong
                shares[piece.strip()] = None
                continue
            shares[found[1]] = _typed(found[2])
        data: dict[str, Any] = {"rollout": shares}
        if serve.by.strip():
            data["by"] = serve.by.strip()
        return data
    if serve.mode == "json":
        try:
            return json.loads(serve.raw)
        except ValueError:
            return serve.raw  # refused by the validation, at this serve's path
    return serve.mode


def _condition_data(condition: ConditionForm) -> dict[str, Any]:
    data: dict[str, Any]
    if condition.kind == "segment":
        data = {"segment": condition.segment.strip()}
    elif condition.kind == "sample":
        data = {"sample": _typed(condition.sample.strip())}
        if condition.by.strip():
            data["by"] = condition.by.strip()
        if condition.salt.strip():
            data["salt"] = condition.salt.strip()
    else:
        data = {"attr": condition.attr.strip(), "op": condition.op}
        if condition.op != "exists":
            data["values"] = [_typed(v.strip()) for v in condition.values.splitlines() if v.strip()]
        if condition.ignore_case:
            data["ignore_case"] = True
    if condition.negate:
        data["not"] = True
    return data


def flag_with(data: Mapping[str, Any], editor: Editor) -> dict[str, Any]:
    """The flag with its targets, rules and default replaced by the form's."""
    result = dict(data)
    targets = {
        v: [k.strip() for k in keys.splitlines() if k.strip()] for v, keys in editor.targets.items()
    }
    targets = {v: keys for v, keys in targets.items() if keys}
    result.pop("targets", None)
    if targets:
        result["targets"] = targets
    rules = [
        {"when": [_condition_data(c) for c in rule.conditions], "serve": _serve_data(rule.serve)}
        for rule in editor.rules
    ]
    result.pop("rules", None)
    if rules:
        result["rules"] = rules
    result["default"] = _serve_data(editor.default)
    result.pop("prerequisites", None)
    prerequisites = [
        {"flag": flag.strip(), "variants": [v.strip() for v in wanted.split(",") if v.strip()]}
        for flag, wanted in editor.prerequisites
        if flag.strip() or wanted.strip()
    ]
    if prerequisites:
        result["prerequisites"] = prerequisites
    return result


# -- problems back to their fields --------------------------------------------------

_INDEX = re.compile(r"\[(\d+)\]")


def field_for(path: str, key: str, part: str = "flags") -> str:
    """The form field a validation problem belongs to (``r0.c1.values``), or ``""``."""
    if path in ("at", "until", "time_zone"):  # the When fields of a scheduled change
        return path
    prefix = f"{part}.{key}."
    if not path.startswith(prefix):
        return ""
    rest = path[len(prefix) :]
    found = re.match(r"rules\[(\d+)\](?:\.when\[(\d+)\](?:\.(\w+))?|\.(serve))?", rest)
    if found:
        rule, condition, part, serve = found.groups()
        if condition is not None:
            name = {"not": "not", "segment": "segment", "sample": "sample", "by": "by"}.get(
                part or "", part or "attr"
            )
            if name not in ("attr", "op", "values", "segment", "sample", "by", "salt", "not"):
                name = "attr"
            return f"r{rule}.c{condition}.{name}"
        if serve is not None:
            return f"r{rule}.serve"
        return f"r{rule}"
    if rest.startswith("default"):
        return "default"
    needed = re.match(r"prerequisites\[(\d+)\](?:\.(flag|variants))?", rest)
    if needed:
        return f"p{needed[1]}.{needed[2] or 'flag'}"
    if rest.startswith("targets."):
        return "targets." + _INDEX.sub("", rest[len("targets.") :]).split(".")[0]
    for name in ("include", "exclude", "description"):
        if rest.startswith(name):
            return name
    return ""


def field_label(name: str) -> str:
    """Where a field is, in words, for the list of problems (``Rule 1, condition 2, values``)."""
    found = re.fullmatch(r"r(\d+)(?:\.c(\d+)\.(\w+)|\.(serve))?", name)
    if found:
        rule, condition, part, serve = found.groups()
        words = f"Rule {int(rule) + 1}"
        if condition is not None:
            words += f", condition {int(condition) + 1}, {part.replace('_', ' ')}"
        elif serve:
            words += ", serves"
        return words
    prerequisite = re.fullmatch(r"p(\d+)\.(flag|variants)", name)
    if prerequisite:
        return f"Prerequisite {int(prerequisite[1]) + 1}, {prerequisite[2]}"
    if name in ("default", "include", "exclude", "description", "at", "until", "time_zone"):
        named = {"default": "The default", "at": "When", "time_zone": "Time zone"}
        return named.get(name, name.capitalize())
    if name.startswith("targets."):
        return f"Targets of “{name[len('targets.') :]}”"
    return name


def field_id(name: str) -> str:
    """An HTML id for a field name (``r0.c1.values`` -> ``f-r0-c1-values``)."""
    return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


@dataclass
class SegmentEditor:
    """A segment's editable parts: who is in or out by key, and its rules."""

    description: str
    include: str  # keys, one per line
    exclude: str
    rules: list[RuleForm]


def segment_editor_from_data(data: Mapping[str, Any]) -> SegmentEditor:
    """The form of a stored segment."""
    rules = [
        RuleForm([_condition_form(c) for c in rule.get("when", ())])
        for rule in data.get("rules", ())
    ]
    return SegmentEditor(
        str(data.get("description", "")),
        "\n".join(data.get("include", ())),
        "\n".join(data.get("exclude", ())),
        rules,
    )


def segment_editor_from_form(fields: Mapping[str, str]) -> SegmentEditor:
    """The posted segment form, with the edit its button asked for made."""
    rules = [
        RuleForm(
            [
                _posted_condition(fields, f"r{i}.c{j}")
                for j in range(_count(fields, f"r{i}.conditions", 100))
            ]
        )
        for i in range(_count(fields, "rules", 100))
    ]
    editor = SegmentEditor(
        fields.get("description", ""), fields.get("include", ""), fields.get("exclude", ""), rules
    )
    holder = Editor([], {}, editor.rules, ServeForm())
    _apply_action(holder, fields.get("action", ""))
    return editor


def segment_with(data: Mapping[str, Any], editor: SegmentEditor) -> dict[str, Any]:
    """The segment with the form's description, keys and rules."""
    result = {k: v for k, v in data.items() if k not in ("include", "exclude", "rules")}
    result["description"] = editor.description.strip()
    if not result["description"]:
        del result["description"]
    for name in ("include", "exclude"):
        keys = [k.strip() for k in getattr(editor, name).splitlines() if k.strip()]
        if keys:
            result[name] = keys
    rules = [{"when": [_condition_data(c) for c in rule.conditions]} for rule in editor.rules]
    if rules:
        result["rules"] = rules
    return result
