"""Command-line options generated from the training recipe's fields
(``vision.recipe.TrainConfig``): each option's flag, type, allowed values and help text come
from the one definition there."""

from __future__ import annotations

import argparse
from dataclasses import MISSING

import yaml

from vision.errors import DataError
from vision.recipe import FIELDS, expected, field_kind


def add_options(parser: argparse.ArgumentParser, names=None) -> None:
    """Command-line options for training fields (``names``, default all but ``task``), each
    with its help text; none has an argparse default, so only what is typed overrides the
    recipe."""
    for name in names or [n for n in FIELDS if FIELDS[n].metadata.get("cli", True)]:
        f = FIELDS[name]
        m = f.metadata
        kind, _ = field_kind(name)
        flag = m.get("flag") or "--" + name.replace("_", "-")
        default = None if f.default is MISSING else f.default
        help_ = f"{m['help']} ({expected(name)}; default {default!r})"
        kw = {"dest": name, "default": argparse.SUPPRESS, "help": help_}
        if kind is bool:
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, action=action, **kw)
        elif kind is dict:
            parser.add_argument(flag, action=KeyValue, metavar="KEY=VALUE", **kw)
        elif "const" in m:
            parser.add_argument(flag, nargs="?", const=m["const"], **kw)
        else:
            parser.add_argument(flag, type=kind, choices=m["choices"], **kw)


class KeyValue(argparse.Action):
    """``--model-arg KEY=VALUE`` (repeatable) into a dict, values read as YAML scalars."""

    def __call__(self, parser, namespace, value, option_string=None):
        key, eq, text = value.partition("=")
        if not eq:
            raise DataError(option_string, "KEY=VALUE", repr(value))
        current = dict(getattr(namespace, self.dest, None) or {})
        current[key] = yaml.safe_load(text)
        setattr(namespace, self.dest, current)
