"""Versioned prompt files (`<name>_v<version>.md` in this folder) and their loader.

A prompt file has an optional leading `<!-- ... -->` comment for people, then a `# system` section and a
`# user` section. Both sections are `string.Template` text (`$name` placeholders) so that JSON examples with
braces need no escaping.

The loader lives in this package's `__init__` rather than in a sibling `prompts.py`: a module and a folder of
the same name shadow each other, and as a package the `.md` files ship in the wheel through the
`package-data` rule of pyproject.toml.

    prompt = load_prompt("mode", 1)
    prompt.version_id  # "mode_v1_" + 8 hex digits of sha256(system, user); part of every cache key
    text = prompt.render(n_context=2, hud="hp_frac: 0.5", objects="id=3 class=npc_scout box=[1, 2, 3, 4]")
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_labeling.errors import PromptError

PROMPT_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LEADING_COMMENT = re.compile(r"^\s*<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^#[ \t]+(system|user)[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class RenderedPrompt:
    """The two texts sent to the model: the system message and the text part of the user message."""

    system: str
    user: str


@dataclass(frozen=True)
class Prompt:
    """One prompt version. `version_id` (name, version, short hash of the sent text) goes into cache keys;
    `fields` are the placeholder names it uses."""

    name: str
    version: int
    system: str
    user: str
    path: Path
    version_id: str = field(init=False)
    fields: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(f"{self.system}\0{self.user}".encode()).hexdigest()[:8]
        object.__setattr__(self, "version_id", f"{self.name}_v{self.version}_{digest}")
        names: set[str] = set()
        for section, text in (("system", self.system), ("user", self.user)):
            template = string.Template(text)
            if not template.is_valid():
                raise PromptError(
                    f"{self.path}: the {section} section has a malformed '$' placeholder (write '$$' for '$')"
                )
            names.update(template.get_identifiers())
        object.__setattr__(self, "fields", frozenset(names))

    def render(self, **fields: Any) -> RenderedPrompt:
        """Fill every placeholder (values go through `str`); missing fields are a `PromptError` naming them.

        Fields the prompt does not use are ignored, so one caller can serve prompt versions that drop one.
        """
        missing = sorted(self.fields - fields.keys())
        if missing:
            raise PromptError(
                f"prompt {self.version_id}: missing field(s) {missing}; it needs {sorted(self.fields)}"
            )
        values = {key: str(value) for key, value in fields.items()}
        return RenderedPrompt(
            system=string.Template(self.system).substitute(values),
            user=string.Template(self.user).substitute(values),
        )


def load_prompt(name: str = "mode", version: int = 1, directory: Path | str | None = None) -> Prompt:
    """Read `<directory>/<name>_v<version>.md` (default: the prompts shipped in this folder)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise PromptError(f"prompt name: expected lowercase letters, digits and '_', got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PromptError(f"prompt version: expected an integer >= 1, got {version!r}")
    path = Path(directory or PROMPT_DIR) / f"{name}_v{version}.md"
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*_v*.md"))
        raise PromptError(f"no prompt file {path}; available: {available}")
    system, user = _split_sections(path, path.read_text(encoding="utf-8"))
    return Prompt(name=name, version=version, system=system, user=user, path=path)


def _split_sections(path: Path, text: str) -> tuple[str, str]:
    body = _LEADING_COMMENT.sub("", text, count=1)
    headings = list(_HEADING.finditer(body))
    found = [m.group(1).lower() for m in headings]
    if found != ["system", "user"]:
        raise PromptError(f"{path}: expected a '# system' then a '# user' section, found headings {found}")
    if body[: headings[0].start()].strip():
        raise PromptError(f"{path}: text before '# system' (only a leading <!-- comment --> may be there)")
    system = body[headings[0].end() : headings[1].start()].strip()
    user = body[headings[1].end() :].strip()
    if not system or not user:
        raise PromptError(f"{path}: the system and user sections must both have text")
    return system, user
