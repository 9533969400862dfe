"""Versioned prompt files: loading, the version id that keys the cache, and rendering."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from vlm_labeling.errors import PromptError
from vlm_labeling.prompts import PROMPT_DIR, load_prompt

FIELDS = {"n_context": 2, "hud": "hp_frac: 0.5", "objects": "id=3 class=npc_scout box=[1, 2, 3, 4]"}


def test_shipped_mode_prompt_loads_and_renders():
    prompt = load_prompt("mode", 1)
    assert re.fullmatch(r"mode_v1_[0-9a-f]{8}", prompt.version_id)
    assert prompt.fields == {"n_context", "hud", "objects"}
    rendered = prompt.render(**FIELDS)
    assert "FIGHT" in rendered.system and "CAUTIOUS" in rendered.system
    assert "hp_frac: 0.5" in rendered.user and "id=3 class=npc_scout" in rendered.user
    assert "2 context frame" in rendered.user
    assert "$" not in rendered.system + rendered.user
    assert "<!--" not in rendered.system  # the comment for people is not sent


def test_version_id_is_stable_and_follows_the_text(tmp_path: Path):
    assert load_prompt().version_id == load_prompt("mode", 1).version_id
    shutil.copy(PROMPT_DIR / "mode_v1.md", tmp_path / "mode_v1.md")
    assert load_prompt(directory=tmp_path).version_id == load_prompt().version_id
    path = tmp_path / "mode_v1.md"
    path.write_text(path.read_text().replace("Never invent an id.", "Never make up an id."))
    assert load_prompt(directory=tmp_path).version_id != load_prompt().version_id


def test_comment_edits_do_not_change_the_version_id(tmp_path: Path):
    text = (PROMPT_DIR / "mode_v1.md").read_text()
    (tmp_path / "mode_v1.md").write_text(text.replace("<!--", "<!-- reviewed\n", 1))
    assert load_prompt(directory=tmp_path).version_id == load_prompt().version_id


def test_render_names_missing_fields_and_ignores_unused_ones():
    prompt = load_prompt()
    with pytest.raises(PromptError, match=r"missing field\(s\) \['hud'\]"):
        prompt.render(n_context=1, objects="(none)")
    assert prompt.render(**FIELDS, unused=1) == prompt.render(**FIELDS)


def test_a_prompt_needing_fields_the_client_does_not_fill_is_refused_early(tmp_path: Path):
    from vlm_labeling.client import VLMClient
    from vlm_labeling.client_config import ClientConfig

    (tmp_path / "odd_v1.md").write_text("# system\nYou label frames.\n# user\nMinimap: $minimap\n")
    with pytest.raises(PromptError, match=r"\['minimap'\]"):
        VLMClient(ClientConfig(), prompt=load_prompt("odd", 1, directory=tmp_path))


def test_missing_prompt_file_lists_what_exists():
    with pytest.raises(PromptError, match=r"mode_v1"):
        load_prompt("mode", 99)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("# user\nhello\n# system\nsys\n", "expected a '# system' then a '# user' section"),
        ("# system\nsys\n", "expected a '# system' then a '# user' section"),
        ("intro\n# system\nsys\n# user\nhi\n", "text before '# system'"),
        ("# system\ncosts $ 5\n# user\nhi\n", "malformed '\\$' placeholder"),
    ],
)
def test_malformed_prompt_files_are_rejected(tmp_path: Path, text: str, reason: str):
    (tmp_path / "bad_v1.md").write_text(text)
    with pytest.raises(PromptError, match=reason):
        load_prompt("bad", 1, directory=tmp_path)


@pytest.mark.parametrize(("name", "version"), [("Mode", 1), ("../mode", 1), ("mode", 0), ("mode", True)])
def test_bad_names_and_versions(name, version):
    with pytest.raises(PromptError):
        load_prompt(name, version)
