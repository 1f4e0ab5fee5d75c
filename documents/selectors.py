"""Read queries: which documents a user sees, and the states a document can be in."""

from __future__ import annotations

from documents.models import Document

# A document still to be ingested: waiting for a worker or in a worker's hands.
PENDING = (Document.Status.QUEUED, Document.Status.PROCESSING)
