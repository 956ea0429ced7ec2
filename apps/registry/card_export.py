"""A model card as a document to hand on: JSON, or one self-contained HTML page rendered from its Markdown.

The card's text is whatever its authors typed, so the HTML is built to be safe to open anywhere:
markdown-it-py's CommonMark renderer with raw HTML turned off (``<script>`` in a card shows as text, it is never
markup), its link check (``javascript:``, ``vbscript:``, ``file:`` and ``data:`` links are not made into links),
and images off (an exported card fetches nothing when opened). Every other value is escaped by Django.
The view adds a Content-Security-Policy that forbids scripts as a second fence.
"""
from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt

from apps.registry.models import ModelCard, ModelVersion

FIELD_TITLES = {
    "intended_use": "Intended use",
    "out_of_scope_use": "Out-of-scope use",
    "training_data": "Training data",
    "evaluation_data": "Evaluation data",
    "metrics": "Metrics",
    "limitations": "Limitations",
    "ethical_considerations": "Ethical considerations",
    "owners": "Owners",
    "contact": "Contact",
}
ORDER = ("intended_use", "out_of_scope_use", "training_data", "evaluation_data", "metrics", "limitations",
         "ethical_considerations", "owners", "contact")

# Raw HTML off, images off, tables on; the default link validator refuses script and file URLs.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}) \
    .enable("table").disable("image")

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render_markdown(text: str) -> str:
    """Markdown to safe HTML (see the module docstring)."""
    return _markdown.render(text or "")


def card_document(*, version: ModelVersion, card: ModelCard | None) -> dict[str, Any]:
    """The card as a JSON document: which model and version, the tier's missing fields, every field."""
    tier = version.model.risk_tier
    fields = {f: (getattr(card, f) if card else ("" if f != "metrics" else {})) for f in ORDER}
    missing = card.missing_fields(tier) if card else list(ModelCard.REQUIRED_BY_TIER.get(tier, ()))
    return {
        "model": version.model.name,
        "version": version.version,
        "version_id": version.pk,
        "team": version.model.team.name,
        "risk_tier": tier,
        "revision": card.revision if card else None,
        "edited_by": (card.edited_by.get_username() if card and card.edited_by else None),
        "edited_at": card.created_at.isoformat() if card else None,
        "missing_fields": missing,
        "complete": not missing,
        **fields,
        "exported_at": timezone.now().isoformat(),
    }


def card_html(document: dict[str, Any]) -> str:
    """One standalone HTML page for a card document (from :func:`card_document`)."""
    title = f"Model card: {document['model']} v{document['version']}"
    missing = set(document["missing_fields"])
    sections = []
    for f in ORDER:
        if f == "metrics":
            metrics = document["metrics"] or {}
            body = format_html(
                "<table><thead><tr><th>Metric</th><th>Value</th></tr></thead><tbody>{}</tbody></table>",
                format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted(metrics.items())),
            ) if metrics else None
        else:
            body = mark_safe(render_markdown(document[f])) if document[f] else None  # safe: see above
        if body is None:
            body = format_html('<p class="missing">{}</p>', "Not written yet; this risk tier requires it."
                               if f in missing else "Not written.")
        sections.append(format_html('<section id="{}"><h2>{}</h2>{}</section>', f, FIELD_TITLES[f], body))
    meta = format_html(
        "Team {} · risk tier {} · revision {} · edited by {} at {} · exported {}",
        document["team"], document["risk_tier"], document["revision"] or "none",
        document["edited_by"] or "(unknown)", document["edited_at"] or "(never)", document["exported_at"])
    status = (format_html('<p class="status incomplete">Incomplete for the {} tier: missing {}.</p>',
                          document["risk_tier"], ", ".join(FIELD_TITLES[m] for m in document["missing_fields"]))
              if document["missing_fields"] else format_html('<p class="status complete">{}</p>',
                                                             "Complete for its risk tier."))
    return format_html(
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{}</title>'
        '<meta name="generator" content="Modelplane"><style>{}</style></head>'
        '<body><header><h1>{}</h1><p class="meta">{}</p>{}</header>{}</body></html>\n',
        title, mark_safe(_CSS), title, meta, status, mark_safe("".join(sections)),
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.5;"
    "color:#1b1f24}h1{font-size:1.6rem}h2{font-size:1.15rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}"
    ".meta{color:#57606a}.missing{color:#8c6d1f;font-style:italic}.incomplete{color:#8c6d1f}"
    ".complete{color:#1a7f37}table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25rem .6rem}"
)
