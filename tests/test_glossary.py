"""The glossary (docs/glossary.md): every term is linked where the course first uses it, and links work.

Read in course order (notebooks 00-07, their Markdown cells, top to bottom), the first cell that uses a
glossary term must link to the term's entry, `../docs/glossary.md#<term>` (or an earlier cell must), so no word
arrives before it is explained. The entry's "First met in: NN" names that notebook. Offline: links are
checked for their shape (http(s), a host) and local links for a file, and an anchor, that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = ROOT / "docs" / "glossary.md"
COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# How each term is spelled in the notebooks (its heading in the glossary is the anchor, spaces as '-').
I = re.I
TERMS = {
    "activity": (r"\bactivit(y|ies)\b", I),
    "agent-loop": (r"\bagent loops?\b", I),
    "client": (r"\bclients?\b", I),
    "continue-as-new": (r"\bcontinue[sd]?[- ]as[- ]new\b", I),
    "data-converter": (r"\bdata converters?\b|\bpayloads?\b", I),
    "determinism": (r"\b(non)?determinis(m|tic)\b", I),
    "durable-agent": (r"\bdurable agents?\b|\bdurab(le|ility)\b", I),
    "durable-timer": (r"\b(durable )?timers?\b", I),
    "eager-activity-execution": (r"\beager\b", I),
    "event-history": (r"\bevent histor(y|ies)\b", I),
    "heartbeat": (r"\bheartbeat(s|ing)?\b", I),
    "idempotent": (r"\bidempoten(t|cy)\b|\bat[- ]least[- ]once\b", I),
    "litellm": (r"\bLiteLLM\b", 0),
    "local-activity": (r"\blocal activit(y|ies)\b", I),
    "namespace": (r"\bnamespaces?\b", I),
    "offline-model": (r"\boffline model\b|\bdeterministic model\b", I),
    "patching": (r"\bworkflow\.patched\b|\bpatch(ed|ing)?\b", I),
    "primitive": (r"\bprimitives?\b", I),
    "query": (r"\bquer(y|ies)\b", I),
    "replay": (r"\breplay(s|ed|ing)?\b|\bReplayer\b", I),
    "retry-policy": (r"\bretr(y|ies|ied|ying)\b|\bback-?offs?\b", I),
    "sandbox": (r"\bsandbox(ed)?\b", I),
    "side-effect": (r"\bside effects?\b", I),
    "sigkill": (r"\bSIGKILL\b", 0),
    "signal": (r"\bsignals?\b", I),
    "sticky-queue": (r"\bsticky\b", I),
    "supervisor": (r"\bsupervisors?\b", I),
    "task-queue": (r"\btask queues?\b", I),
    "temporal": (r"\bTemporal\b", 0),
    "temporal-server": (r"\b(Temporal|dev|embedded) server\b", I),
    "timeout": (r"\btimeouts?\b|\bstart[_-]to[_-]close\b|\bschedule[_-]to[_-]close\b", I),
    "tool": (r"\btools?\b", I),
    "update": (r"\bUpdates?\b", 0),
    "warm-start": (r"\bwarm start(s|ers?)?\b", I),
    "web-ui": (r"\b(Web|Temporal) UI\b", 0),
    "worker": (r"\bworkers?\b", I),
    "worker-plugin": (r"\bplugins?\b|\binterceptors?\b", I),
    "workflow": (r"\bworkflows?\b", I),
    "workflow-id": (r"\bworkflow ids?\b", I),
    "workflow-task": (r"\bworkflow tasks?\b", I),
}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def entries() -> dict[str, str]:
    """The glossary's entries: anchor -> text."""
    parts = re.split(r"^### (.+)$", GLOSSARY.read_text(), flags=re.M)
    return {heading.strip().replace(" ", "-"): body for heading, body in zip(parts[1::2], parts[2::2])}


def course_cells() -> list[tuple[str, int, str]]:
    """(notebook, cell number, Markdown text) in reading order."""
    return [(path.name, number, cell.source) for path in COURSE
            for number, cell in enumerate(nbformat.read(path, as_version=4).cells) if cell.cell_type == "markdown"]


def first_uses(cells: list[tuple[str, int, str]], terms: dict = TERMS) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for name, number, text in cells:
        for term, (pattern, flags) in terms.items():
            if term not in found and re.search(pattern, text, flags):
                found[term] = (name, number)
    return found


def used_before_linked(cells: list[tuple[str, int, str]], terms: dict = TERMS) -> list[str]:
    """Each term whose first use is not linked to its glossary entry there or earlier, as a sentence."""
    problems, linked = [], set()
    first = first_uses(cells, terms)
    for name, number, text in cells:
        linked |= set(re.findall(r"glossary\.md#([\w-]+)\)", text))
        for term, where in first.items():
            if where == (name, number) and term not in linked:
                problems.append(f"{name}, Markdown cell {number}: uses '{term}' before linking "
                                f"../docs/glossary.md#{term}")
    return problems


def test_the_glossary_and_the_term_list_agree():
    found = entries()
    assert sorted(found) == sorted(TERMS), "a heading in docs/glossary.md without a spelling in TERMS, or back"
    for anchor in found:  # the same anchor on GitHub (lower case) and in JupyterLab (case kept): lower case only
        assert re.fullmatch(r"[a-z0-9-]+", anchor), f"'{anchor}': glossary headings are lower case words"


@pytest.mark.parametrize("term", sorted(TERMS))
def test_each_entry_says_where_it_is_first_met_and_links_to_the_docs(term):
    body = entries()[term]
    assert len(body.split()) >= 15, f"{term}: a definition, not just a link"
    first = first_uses(course_cells()).get(term)
    met = re.search(r"First met in: (\d\d) ", body)
    assert met, f"{term}: no 'First met in: NN ...' line"
    if first:
        assert first[0].startswith(met.group(1)), f"{term}: first used in {first[0]}, the entry says {met.group(1)}"
    docs = re.findall(r"\]\((https://[^)]+)\)", body)
    official = "docs.litellm.ai" if term in ("litellm", "offline-model") else "docs.temporal.io"
    assert any(urlparse(url).netloc == official for url in docs), f"{term}: no link to {official}"


def test_every_term_is_linked_where_the_course_first_uses_it():
    assert used_before_linked(course_cells()) == []
    assert set(first_uses(course_cells())) == set(TERMS), "a glossary term no notebook uses"


def test_the_check_catches_a_term_used_before_it_is_linked():
    terms = {"activity": TERMS["activity"], "worker": TERMS["worker"]}
    cells = [("00_a.ipynb", 0, "A worker runs an activity."),
             ("00_a.ipynb", 1, "The [worker](../docs/glossary.md#worker) and [activity](../docs/glossary.md#activity)."),
             ("01_b.ipynb", 0, "More about activities.")]
    assert used_before_linked(cells, terms) == [
        "00_a.ipynb, Markdown cell 0: uses 'activity' before linking ../docs/glossary.md#activity",
        "00_a.ipynb, Markdown cell 0: uses 'worker' before linking ../docs/glossary.md#worker"]
    assert used_before_linked(cells[1:], terms) == []


# --- links ------------------------------------------------------------------------------------------------

def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    headings = re.findall(r"^#{1,6} (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def bad_link(target: str, source: Path) -> str | None:
    """What is wrong with one link target found in the file `source` (None: nothing)."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        url = urlparse(target)
        if url.scheme not in ("http", "https") or "." not in url.netloc or " " in target:
            return f"{target}: not a well-formed web address"
        if url.netloc == "docs.temporal.io" and not url.path.strip("/"):
            return f"{target}: link a page of Temporal's documentation, not its home"
        return None
    path, _, fragment = unquote(target).partition("#")
    file = (source.parent / path).resolve() if path else source
    if not file.exists():
        return f"{target}: no such file {path}"
    if fragment and file.suffix == ".md" and fragment not in anchors(file):
        return f"{target}: no heading '#{fragment}' in {file.name}"
    return None


def documents() -> list[tuple[Path, str]]:
    """The glossary, the README and every Markdown cell of the course, with the file each is in."""
    return [(GLOSSARY, GLOSSARY.read_text()), (ROOT / "README.md", (ROOT / "README.md").read_text())] + [
        (path, cell.source) for path in COURSE for cell in nbformat.read(path, as_version=4).cells
        if cell.cell_type == "markdown"]


def test_every_link_is_well_formed_and_local_ones_resolve():
    problems = [f"{path.name}: {found}" for path, text in documents() for target in LINK.findall(text)
                if (found := bad_link(target, path))]
    assert problems == []
    linked = {target for _, text in documents() for target in LINK.findall(text)}
    assert "../docs/glossary.md#workflow" in linked, "the notebooks link to the glossary"
    assert "docs/glossary.md" in linked and "docs/architecture.svg" in linked, "the README links both"


def test_the_link_check_can_fail(tmp_path):
    (tmp_path / "a.md").write_text("## Event history\n")
    source = tmp_path / "b.md"
    source.write_text("## Here\n")
    assert bad_link("a.md#event-history", source) is None and bad_link("#here", source) is None
    assert bad_link("a.md#events", source) == "a.md#events: no heading '#events' in a.md"
    assert bad_link("#there", source) == "#there: no heading '#there' in b.md"
    assert bad_link("missing.md", source) == "missing.md: no such file missing.md"
    assert bad_link("https://docs.temporal.io/workers", source) is None
    assert bad_link("https://docs.temporal.io/", source).endswith("not its home")
    assert bad_link("https://docs", source) == "https://docs: not a well-formed web address"
    assert bad_link("ftp://example.com/x", source) == "ftp://example.com/x: not a well-formed web address"
