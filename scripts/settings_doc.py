"""Regenerate the README's configuration tables from the settings classes.

python scripts/settings_doc.py          # rewrite README.md between the settings markers
python scripts/settings_doc.py --check  # exit 1 when README.md is out of date
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
MODULES = (
    "contest_telemetry.settings",
    "contest_telemetry.logs",
    "producers.settings",
    "streams.settings",
    "sinks.prometheus.settings",
    "sinks.archive.settings",
    "sinks.archive.replay",
    "sinks.dlq.settings",
    "sinks.archive.metrics",
)


def settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == name
                # A base without a prefix only holds fields its subclasses share; they list them.
                and value.model_config.get("env_prefix")
            ):
                found.append(value)
    return found


def _default(field: object) -> str:
    value = getattr(field, "default", None)
    if value is None or value.__class__.__name__ == "PydanticUndefinedType":
        return "(unset)"
    return f"`{value}`"


def _env_names(prefix: str, name: str, field: object) -> str:
    """The variables a field reads: its alias choices (``AWS_REGION`` ...) when it has them."""
    alias = getattr(field, "validation_alias", None)
    choices = getattr(alias, "choices", None)
    if choices:
        return " / ".join(f"`{choice}`" for choice in choices if isinstance(choice, str))
    if isinstance(alias, str):
        return f"`{alias}`"
    return f"`{prefix}{name.upper()}`"


def render() -> str:
    lines: list[str] = []
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines += [
            f"**{cls.__name__}** ({cls.__module__}) {doc}",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
        ]
        for name, field in cls.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| {_env_names(prefix, name, field)} | {_default(field)} | {description} |")
        lines.append("")
    return "\n".join(lines)


def updated_readme(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = updated_readme(text)
    if "--check" in sys.argv:
        if new != text:
            print(
                "README.md configuration tables are out of date: run python scripts/settings_doc.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
