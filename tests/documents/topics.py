"""Small generated documents on distinct topics, for the similar-documents and recommendation tests."""

from __future__ import annotations

from tests.documents_factory import add_text_document

# Small generated topics: each document is written as two halves that share the topic's words and
# little else, and the halves test asks whether each half finds its other half among the nearest.
TOPICS = {
    "volcano": "magma eruption lava crater ash basalt caldera tephra pyroclastic vent",
    "bakery": "sourdough flour yeast oven crust dough proofing loaf rye starter",
    "sailing": "keel mast jib spinnaker tack halyard rudder hull regatta mooring",
    "chess": "gambit bishop rook castling checkmate pawn endgame opening knight queen",
    "orchard": "apple pear pruning grafting blossom cider rootstock harvest bees frost",
    "database": "index query vacuum replica transaction schema tuple planner btree wal",
    "glacier": "moraine crevasse ice firn calving meltwater cirque serac ablation snow",
    "cycling": "derailleur cassette peloton cadence saddle sprocket chainring climb tyre spoke",
}


def half(topic: str, words: str, side: int) -> str:
    vocabulary = words.split()
    picked = vocabulary[side::2] * 3 + vocabulary[(side + 1) % 2 :: 2][:2]
    return f"Notes on {topic}. " + " ".join(f"The {word} matters here." for word in picked)


def add_halves(user, collection) -> dict:
    """Two documents per topic, each half of it: {topic: (first, second)}."""
    return {
        topic: tuple(
            add_text_document(user, collection, f"{topic}-{side}", half(topic, words, side)) for side in (0, 1)
        )
        for topic, words in TOPICS.items()
    }


def ids(found) -> list[int]:
    return [hit.document_id for hit in found]
