"""``{% ingest_progress document as p %}``: documents.progress's words for a row (as the status JSON has them)."""

from django import template

from documents.models import Document
from documents.progress import Progress, describe

register = template.Library()


@register.simple_tag
def ingest_progress(document: Document) -> Progress:
    return describe(document)
