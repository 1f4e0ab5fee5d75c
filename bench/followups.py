"""Follow-up questions without a language model: searched as asked (before) against chat.followups (after).

    python bench/followups.py [--quick]

Ten small generated documents on ten subjects (two company reports, a sea novel, four company policies,
a recipe, release notes, a city), loaded into the database ``ragbench_followups`` through the normal
pipeline with the local all-MiniLM-L6-v2 int8 model. Nine conversations: a first question about one
document, then follow-ups that lean on it ("Why did they increase?"), whose own words often fit another
document better. Each follow-up is answered by chat.services.answer with the extractive backend:
before, without its history (what the app searched without a language model); after, with the
conversation so far (the first question, its answer, earlier follow-ups). Counted: the follow-ups whose
first citation, and whose every citation, come from the conversation's document. Controls: questions on
a new subject asked after a conversation must still find their own document (a subject carried over
wrongly would lose them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

DATABASE = "ragbench_followups"

DOCUMENTS = {
    "acme": "Acme Corporation annual report 2023. The revenues of Acme Corporation reached 12 million euros in "
            "2023, up from 9 million in 2022. Revenues increased because widget sales grew in Asia and prices "
            "rose by five percent. The board approved a dividend of 40 cents per share. Acme Corporation "
            "employs 140 people in Lyon and Osaka.",
    "globex": "Globex annual report 2023. Globex revenues fell to 30 million dollars in 2023. They decreased "
              "because the hardware division lost its largest customer. Globex closed its factory in Ohio and "
              "cut 200 jobs. The chief executive, Hank Scorpio, leads the company and expects growth in 2024.",
    "novel": "Chapter one. The wind began to increase at dusk, and the sailors asked why they should increase "
             "the sails at all. The captain answered that the storm would increase all night. Prices of fish "
             "rose in the harbour and nobody knew why. The old sailor said the sea is known for its moods; "
             "he had lived there, by the river mouth, for sixty years and employed four boys on his boat.",
    "vacation": "Vacation policy. Employees receive twenty-five vacation days per year. Unused vacation days "
                "expire on 31 March of the following year. Part-time staff get days in proportion to their "
                "hours. Requests go to the manager two weeks ahead.",
    "security": "Laptop security policy. Laptops must use full disk encryption. The screen locks after five "
                "minutes without input. A lost laptop must be reported to the IT desk within one hour. "
                "Passwords have at least fourteen characters.",
    "travel": "Travel policy. Employees book trains for trips under four hours. Hotels may cost at most 150 "
              "euros per night. Flights need the approval of a manager. Receipts are submitted within thirty days.",
    "recipe": "Lemon cake recipe. Mix 200 grams of flour, 150 grams of sugar and three eggs with the juice of "
              "two lemons. Bake the cake at 180 degrees for forty minutes. The cake keeps for four days in a "
              "closed tin and can be frozen for three months.",
    "flux": "Release notes for version 4.2 of the Flux library. The release adds streaming uploads and drops "
            "support for Python 3.8. It fixes a memory leak in the parser. Upgrading to 4.2 requires running "
            "the migrate command once.",
    "lyon": "Lyon is the third largest city of France, with about 520,000 inhabitants. The Rhône and Saône "
            "rivers meet in Lyon. The city is known for its cuisine and its silk industry.",
    "bicycle": "Bicycle maintenance. Tyres should be inflated to 4 bar every two weeks. The chain needs oil "
               "every 300 kilometres. Brake pads last about 2,000 kilometres and cost 15 euros a pair.",
}

# (the conversation's document, its first question, its follow-ups)
CONVERSATIONS = [
    ("acme", "What were the revenues of Acme Corporation in 2023?",
     ["Why did they increase?", "How many people does it employ?", "And the dividend?"]),
    # "What was the main reason?" states no subject, yet names no pronoun: is_follow_up misses it.
    ("globex", "How did Globex revenues develop in 2023?",
     ["Why did they fall?", "Who leads it?", "What was the main reason?"]),
    ("vacation", "How many vacation days do employees receive?",
     ["When do they expire?", "What about part-time staff?"]),
    ("security", "Do laptops need full disk encryption?",
     ["And what if one is lost?", "How long must their passwords be?"]),
    ("travel", "What does the travel policy say about trains?",
     ["And flights?", "How much may a hotel cost there?"]),
    ("recipe", "How do I bake the lemon cake?", ["How long does it keep?", "Can it be frozen?"]),
    ("flux", "What changed in version 4.2 of the Flux library?",
     ["Does it still support Python 3.8?", "What does upgrading to it require?"]),
    ("lyon", "How many inhabitants does Lyon have?", ["Which rivers meet there?", "What is it known for?"]),
    ("bicycle", "How often should bicycle tyres be inflated?", ["What about the chain?", "Why does it need oil?"]),
]

# Questions on a new subject, asked after the conversation on another: (after which, document, question).
SWITCHES = [
    ("acme", "globex", "Why did Globex revenues fall in 2023?"),
    # A continuation on a new subject: carried over, it kept only the conversation's document (chat.followups.
    # changes_subject).
    ("acme", "bicycle", "What about bicycle chains?"),
    ("vacation", "security", "How long must laptop passwords be?"),
    ("recipe", "lyon", "What is Lyon known for?"),
    ("flux", "novel", "Why did the sailors increase the sails?"),
    ("lyon", "bicycle", "How long do brake pads last?"),
    ("travel", "vacation", "Do unused vacation days expire?"),
    ("vacation", "recipe", "What about the lemon cake?"),
]


def setup() -> object:
    _common.setup_django(DATABASE, EMBEDDING_BACKEND="local", LOG_LEVEL="WARNING")
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from documents import pipeline, services
    from documents.models import Document

    user, _ = get_user_model().objects.get_or_create(username="bench")
    collection = services.collection_for_upload(user=user, name="followups")
    for name, text in DOCUMENTS.items():
        filename = f"{name}.txt"
        if not Document.objects.filter(collection=collection, original_filename=filename).exists():
            document = services.document_create(owner=user, collection=collection, enqueue=False,
                                              file=ContentFile(text.encode(), name=filename), filename=filename)
            pipeline.document_ingest(document_id=document.pk)
    return user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first 3 conversations and 2 switches")
    args = parser.parse_args()
    user = setup()
    from django.conf import settings

    from chat import followups, services
    from documents.models import Document

    settings.LLM_BACKEND = "extractive"
    titles = {pk: name.removesuffix(".txt") for pk, name in Document.objects.values_list("pk", "original_filename")}
    conversations = CONVERSATIONS[:3] if args.quick else CONVERSATIONS
    switches = SWITCHES[:2] if args.quick else SWITCHES

    def ask(question: str, history: list) -> tuple[list[str], str, float]:
        """The documents an answer cites, in order of citation, its text, and its time in ms."""
        started = time.perf_counter()
        result = list(services.answer(user=user, question=question, history=history))[-1]
        elapsed = (time.perf_counter() - started) * 1000
        assert result["type"] == "result"
        cited = [titles[result["hits"][i - 1].document_id] for i in result["cited"]]
        return cited, result["content"], elapsed

    def score(rows: list[tuple[str, list[str]]]) -> tuple[int, int]:
        first = sum(1 for want, cited in rows if cited and cited[0] == want)
        every = sum(1 for want, cited in rows if cited and set(cited) == {want})
        return first, every

    ask("warm-up", [])
    before: list[tuple[str, list[str]]] = []
    after: list[tuple[str, list[str]]] = []
    times: dict[str, list[float]] = {"before": [], "after": []}
    detected = 0
    histories = {}
    for want, first, questions in conversations:
        history: list = []
        cited, content, _ = ask(first, history)
        history += [{"role": "user", "content": first}, {"role": "assistant", "content": content}]
        for question in questions:
            detected += followups.is_follow_up(question)
            alone, _, elapsed_before = ask(question, [])
            carried, content, elapsed_after = ask(question, history)
            before.append((want, alone))
            after.append((want, carried))
            times["before"].append(elapsed_before)
            times["after"].append(elapsed_after)
            print(f"{want:9} {question!r}: before {alone[:3]} after {carried[:3]}")
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": content}]
        histories[want] = history
    switched = []
    for previous, want, question in switches:
        cited, _, _ = ask(question, histories.get(previous, []))
        switched.append((want, cited))
        print(f"switch {previous}→{want} {question!r}: {cited[:3]}")

    count = len(before)
    table = [["follow-ups searched", "first citation from the right document", "every citation from it",
              "median ms per answer"]]
    for name, rows in (("before: as asked", before), ("after: with the subject (chat.followups)", after)):
        first_right, every_right = score(rows)
        key = "before" if name.startswith("before") else "after"
        table.append([name, f"{first_right}/{count} ({first_right / count:.0%})",
                      f"{every_right}/{count} ({every_right / count:.0%})",
                      f"{statistics.median(times[key]):.0f}"])
    first_right, every_right = score(switched)
    table.append([f"control: a new subject after a conversation ({len(switched)})",
                  f"{first_right}/{len(switched)}", f"{every_right}/{len(switched)}", ""])
    for row in table:
        print(" | ".join(row))
    _common.report(
        args.quick,
        "Follow-ups without a language model (bench/followups.py)",
        f"{len(conversations)} conversations, {count} follow-ups ({detected} taken for follow-ups by "
        f"chat.followups.is_follow_up), {len(DOCUMENTS)} one-chunk documents in one collection; extractive "
        f"answers (chat.services.answer), RETRIEVAL_K={settings.RETRIEVAL_K}, hybrid search, all-MiniLM-L6-v2 "
        "int8 (local).",
        table,
        f"- A follow-up that finds nothing counts as wrong (before, {sum(1 for _, c in before if not c)} of "
        f"them got the one-sentence \"nothing found\" answer; after, {sum(1 for _, c in after if not c)}). "
        "\"Every citation\": the extractive answer also cites the other passages found (\"More in the "
        "sources\"); after, a follow-up's passages from documents without its subject are set aside "
        "(chat.followups.on_subject), which the control questions (no follow-ups) do not get.\n"
        "- The set was written together with chat.followups: it shows that the mechanism works, not how "
        "often real users' follow-ups are recognised. \"What was the main reason?\" is one it misses (no "
        "pronoun, no continuation, words of its own): searched as asked, it finds nothing. With a language "
        "model configured, follow-ups are rewritten by the model instead (not measured here).\n"
        "- Milliseconds: the whole answer, embedding the query included (the subject makes it longer), "
        "before and after interleaved question by question, on 2 cores shared with other jobs: noisy.",
    )


if __name__ == "__main__":
    main()
