"""docs/client.md and docs/cli.md are what the code says: a new method, option or command changes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.clients.reference import PAGES

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_reference_page_matches_the_code(page: str) -> None:
    written = PAGES[page]()
    assert (DOCS / page).read_text(encoding="utf-8") == written, (
        f"docs/{page} is stale: rewrite it with `python -m vigil.clients.reference --out docs`")


def test_the_pages_cover_every_command_and_method() -> None:
    cli, client = PAGES["cli.md"](), PAGES["client.md"]()
    for command in ("serve", "profile", "models", "load", "unload", "metadata", "predict", "watch", "report",
                    "health", "rollout"):
        assert f"## `vigil {command} " in cli
    for option in ("--overwrite", "--sticky-key", "--label-column", "--ca-file"):
        assert f"`{option}`" in cli
    for method in ("predict", "batch_predict", "feedback", "batch_feedback", "set_rollout", "telemetry", "health"):
        assert f"`{method}(" in client and f"`async {method}(" in client
    assert "`MessageTooLarge`" in client
