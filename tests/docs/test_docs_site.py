"""The documentation site, built as `make docs` builds it (strict: any broken link or anchor
between pages fails): every relative link of README.md and every runbook link of the rules, chart,
dashboards and receiver lands on an existing page and anchor, and the configuration references
hold every key of their JSON Schemas."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from mkdocs.commands.build import build
from mkdocs.config import load_config

REPO = Path(__file__).resolve().parents[1].parent
README = REPO / "README.md"
SCHEMAS = {
    "exporter-config": REPO / "exporter" / "config.schema.json",
    "receiver-config": REPO / "receiver" / "config.schema.json",
    "helm-values": REPO / "helm" / "tailpage" / "values.schema.json",
}


class Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):  # HTMLParser calls it
        self.ids |= {v for k, v in attrs if k == "id" and v}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    config = load_config(str(REPO / "mkdocs.yml"), site_dir=str(out), strict=True)
    build(config)  # strict: raises on any warning (broken link, missing anchor)
    return out


def page_html(site: Path, doc: str) -> Path:
    """docs/x.md -> site/x.html (mkdocs.yml: use_directory_urls: false)."""
    return site / Path(doc).with_suffix(".html")


def anchors(html: Path) -> set[str]:
    parser = Ids()
    parser.feed(html.read_text())
    return parser.ids


def github_slug(heading: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def readme_links() -> list[str]:
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)  # not inside code blocks
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_readme_is_short_and_links_into_the_docs():
    lines = README.read_text().count("\n")
    assert lines <= 300, f"README.md has {lines} lines; reference material belongs in docs/"
    assert any(link.startswith("docs/") for link in readme_links())


def test_every_relative_link_of_the_readme_resolves(site):
    readme_anchors = {github_slug(h) for h in
                      re.findall(r"^#+ (.*)$", README.read_text(), flags=re.M)}
    broken = []
    for link in readme_links():
        path, _, anchor = link.partition("#")
        if not path:
            if anchor not in readme_anchors:
                broken.append(f"{link}: no such heading in README.md")
            continue
        target = REPO / path
        if path.startswith("docs/") and path.endswith(".md"):
            html = page_html(site, path.removeprefix("docs/"))
            if not html.exists():
                broken.append(f"{link}: no page {path} in the built site")
            elif anchor and anchor not in anchors(html):
                broken.append(f"{link}: no anchor #{anchor} in the built {path}")
        elif not target.exists():
            broken.append(f"{link}: no file {path} in the repository")
    assert not broken, "README.md links that do not resolve:\n" + "\n".join(broken)


def test_every_runbook_link_in_the_repository_lands_on_a_section(site):
    ids = anchors(page_html(site, "runbook.md"))
    used = {}
    for folder in ("rules", "helm", "dashboards", "receiver"):
        for f in (REPO / folder).rglob("*"):
            if f.is_file() and f.suffix in {".yml", ".yaml", ".json", ".py", ".tpl", ".txt", ".md"}:
                for anchor in re.findall(r"docs/runbook\.md#([\w-]+)", f.read_text()):
                    used.setdefault(anchor, f.relative_to(REPO))
    assert len(used) >= 19, used  # one section per shipped alert
    missing = {a: str(f) for a, f in used.items() if a not in ids}
    assert not missing, f"runbook anchors used but missing from docs/runbook.md: {missing}"


def schema_keys(node: dict, root: dict) -> set[str]:
    """Every property name of a schema, through local $refs, items and additionalProperties."""
    keys: set[str] = set()
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if not isinstance(n, dict) or id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n.get("$ref"), str) and n["$ref"].startswith("#/"):
            target = root
            for part in n["$ref"][2:].split("/"):
                target = target[part]
            stack.append(target)
        for name, child in (n.get("properties") or {}).items():
            keys.add(name)
            stack.append(child)
        stack += [n.get("items"), n.get("additionalProperties")]
    return keys


@pytest.mark.parametrize("page", sorted(SCHEMAS))
def test_config_reference_is_rendered_from_every_key_of_its_schema(site, page):
    schema = json.loads(SCHEMAS[page].read_text())
    html = page_html(site, f"{page}.md").read_text()
    rendered = set(re.findall(r"<code>([\w.\[\]-]+)</code>", html))
    parts = {p for key in rendered for p in re.split(r"[.\[\]]+", key) if p}
    missing = sorted(schema_keys(schema, schema) - parts)
    assert not missing, f"{page}: keys of {SCHEMAS[page].name} not rendered: {missing}"
    assert len(re.findall(r"<tr>", html)) > len(schema["properties"])


# Hand-written tables that name config keys with their defaults, and the generated reference
# (the schema's defaults; the chart's values.yaml) they must agree with.
KEY_TABLES = {"exporter-live.md": "exporter-config.md", "receiver.md": "receiver-config.md",
              "kubernetes.md": "helm-values.md"}


@pytest.mark.parametrize("page", sorted(KEY_TABLES))
def test_hand_written_key_tables_agree_with_the_schemas(page):
    sys.path.insert(0, str(REPO / "scripts"))
    import config_docs

    reference = KEY_TABLES[page]
    keys = {row.key for row in config_docs.rows(reference)}
    defaults = config_docs.defaults(reference)
    text = (REPO / "docs" / page).read_text()
    wrong = []
    for key, cell in re.findall(r"^\| `([a-z][\w]*(?:(?:\.|\[\]\.)\w+)*)` \| ([^|]*) \|",
                                text, flags=re.M):
        if key not in keys:
            wrong.append(f"{key}: not a key of the {reference} reference")
            continue
        default = re.fullmatch(r"\s*`([^`]*)`\s*", cell)
        if default and key in defaults and yaml.safe_load(default[1]) != defaults[key]:
            wrong.append(f"{key}: docs/{page} says {default[1]}, the schema {defaults[key]!r}")
    assert not wrong, f"docs/{page} disagrees with its schema:\n" + "\n".join(wrong)
