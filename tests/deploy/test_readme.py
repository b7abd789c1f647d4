"""The README documents every setting (generated from the settings classes) and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.settings_doc import ROOT, settings_classes, updated_readme


def test_readme_configuration_matches_the_settings_classes() -> None:
    text = (ROOT / "README.md").read_text()
    assert updated_readme(text) == text, "run: python scripts/settings_doc.py"
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name in cls.model_fields:
            assert f"`{prefix}{name.upper()}`" in text


def test_the_two_commands_come_first_and_exist_in_the_makefile() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    assert blocks[0].strip() == "make demo"
    assert blocks[1].strip() == "make test"
    makefile = Path(ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci
