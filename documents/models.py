"""Collections (the unit of access control), documents and their chunks."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Lower
from pgvector.django import VectorField


class CollectionQuerySet(models.QuerySet):
    def visible_to(self, user) -> CollectionQuerySet:
        """Collections ``user`` may read: owned, or shared with them as a member.

        Searches decide the same in SQL (documents.search.sql.readable_collections); change both together:
        tests/test_search_access.py checks on random data that they agree.
        """
        if not user.is_authenticated:
            return self.none()
        return self.filter(Q(owner=user) | Q(members=user)).distinct()


class Distance(models.TextChoices):
    """How vectors are compared; each has its own partial HNSW index with the matching opclass."""

    COSINE = "cosine", "Cosine"
    L2 = "l2", "Euclidean (L2)"
    INNER_PRODUCT = "ip", "Inner product"


class EmbeddingSpace(models.Model):
    """One embedding model's vectors: which backend and model made them, how long they are, what state they are in.

    A collection searches its *active* space, and during a migration also writes its *target* space; only
    vectors of one space are ever compared. Each space's vectors live in their own partition of the
    ChunkVector table (documents.spaces.storage), with their own HNSW index, so adding a model never rewrites
    or locks the vectors in use, and retiring one drops a partition instead of deleting rows.
    """

    class Status(models.TextChoices):
        BUILDING = "building", "Building"  # created; vectors being written, no index yet
        READY = "ready", "Ready"  # every row and its index are there; not searched by any collection
        ACTIVE = "active", "Active"  # some collection searches it
        RETIRED = "retired", "Retired"  # its vectors and indexes are dropped

    class Backend(models.TextChoices):
        LOCAL = "local", "Local ONNX model"
        FASTEMBED = "fastembed", "fastembed"
        OPENAI = "openai", "OpenAI or compatible"
        HASHING = "hashing", "Hashing (no semantics)"

    name = models.SlugField(max_length=100, unique=True)
    backend = models.CharField(max_length=20, choices=Backend.choices)
    model = models.CharField(max_length=200, help_text="The model's name as its backend knows it.")
    model_path = models.CharField(max_length=500, blank=True, help_text="A local folder of the model (fastembed).")
    fingerprint = models.CharField(
        max_length=200,
        blank=True,
        help_text="What identifies the model's weights: the sha256 of its files, or the provider's model id.",
    )
    dimensions = models.PositiveIntegerField()
    chunking = models.JSONField(
        default=dict,
        blank=True,
        help_text="How the chunks it embeds were cut (size and overlap in tokens).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.BUILDING)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Collection(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    distance = models.CharField(
        max_length=6, choices=Distance.choices, default=Distance.COSINE,
        help_text="How the collection's vectors are compared. Every backend's vectors are L2-normalised, "
        "so the three rank alike; inner product is the cheapest to compute.",
    )
    # Indexed by unique_collection_name_per_owner (owner, name), as every foreign key whose own index would only repeat
    # the start of another (tests/documents/test_models.py: no index of the apps' tables begins another).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_collections", db_index=False
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="shared_collections",
        help_text="People who may read this collection's documents and ask about them.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Kept by database triggers on the chunk table, for BM25: how many chunks, how long.
    # The embedding space the collection's searches use; set to the installation's default space
    # (documents.spaces.default_space) when the collection is created.
    active_space = models.ForeignKey(
        EmbeddingSpace,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The embedding space its searches use.",
    )
    # During a migration: the space being filled, written alongside the active one (documents.spaces).
    target_space = models.ForeignKey(
        EmbeddingSpace,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The embedding space being filled for a switch.",
    )
    # After a switch: the space it left, kept so that a rollback is instant.
    previous_space = models.ForeignKey(
        EmbeddingSpace,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="The embedding space before the last switch, kept for a rollback.",
    )
    chunk_total = models.BigIntegerField(default=0, editable=False)
    token_total = models.BigIntegerField(default=0, editable=False)

    objects = CollectionQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="unique_collection_name_per_owner")
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs):
        from documents.spaces import default_space
        from documents.spaces.vectors import ensure_index

        if self.active_space_id is None:
            self.active_space = default_space()
        super().save(*args, **kwargs)
        # Its space's index of its distance (a collection created or changed to one the space had none of).
        ensure_index(self.active_space, self.distance)


class Invitation(models.Model):
    """A collection's owner offering to share it: the invitee reads nothing of it until they accept.

    Accepting makes them a member (documents.sharing.invitation_accept); until then no rule of access control
    knows the invitation, so nobody can put passages into another person's searches without their consent.
    """

    # Indexed by unique_invitation_per_collection (collection, invitee), as Collection.owner is.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="invitations", db_index=False)
    invitee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invitations")
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "invitee"], name="unique_invitation_per_collection")
        ]

    def __str__(self) -> str:
        return f"{self.invitee_id} invited to {self.collection_id}"


def document_upload_to(instance: Document, filename: str) -> str:
    # Files are stored under their checksum, never under the user's name for them:
    # names with "../", HTML or 300 characters cannot reach the file system.
    return f"documents/{instance.sha256[:2]}/{instance.sha256}"


class DocumentQuerySet(models.QuerySet):
    def visible_to(self, user) -> DocumentQuerySet:
        """Documents in collections ``user`` may read."""
        return self.filter(collection__in=Collection.objects.visible_to(user))


class Document(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Indexed by (owner, -created_at) and unique_file_per_collection (collection, sha256) below.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents", db_index=False
    )
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="documents", db_index=False)
    title = models.CharField(max_length=300)
    file = models.FileField(upload_to=document_upload_to, max_length=300)
    original_filename = models.CharField(max_length=300, blank=True)
    content_type = models.CharField(max_length=150, blank=True)
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    external_id = models.CharField(
        max_length=200, blank=True, db_index=True,
        help_text="An identifier from the source the document was imported from (e.g. a BEIR _id).",
    )
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)

    class Stage(models.TextChoices):
        PARSING = "parsing", "Parsing"
        EMBEDDING = "embedding", "Embedding"
        STORING = "storing", "Storing"

    progress = models.FloatField(default=0.0, help_text="0..1 while processing.")
    # What a run is doing, for the documents page (documents.progress); meaningful while processing.
    # Written by the worker only: not editable in forms (the admin shows them read-only).
    stage = models.CharField(max_length=10, choices=Stage.choices, blank=True, editable=False)
    stage_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    page_count = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Pages with text the parser found."
    )
    chunks_total = models.PositiveIntegerField(default=0, editable=False, help_text="Chunks of the running ingestion.")
    chunks_embedded = models.PositiveIntegerField(default=0, editable=False, help_text="Of which embedded so far.")
    chunk_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    error_detail = models.TextField(
        blank=True, help_text="What the failing library said, for the operators; never shown to the owner.",
    )
    attempts = models.PositiveIntegerField(
        default=0, help_text="Runs of this ingestion that started; it fails after INGEST_MAX_ATTEMPTS interrupted.",
    )
    queued_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the ingestion task was last handed to the queue; empty while the queue was unreachable.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = DocumentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["collection", "sha256"], name="unique_file_per_collection")
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status", "updated_at"]),
            # The library's sorts (documents.selectors.SORTS), each way by one index scan that stops at the
            # page: 10 ms -> 0.2 ms for a page of 10,000 documents (bench/library_page.py). The row's
            # progress writes leave these columns alone, so they stay HOT updates.
            models.Index(F("created_at").desc(), F("id").desc(), name="document_newest_first"),
            models.Index(Lower("title"), F("id"), name="document_by_title"),
            models.Index(fields=["size", "id"], name="document_by_size"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.READY, self.Status.FAILED, self.Status.CANCELLED)

    @property
    def is_pending(self) -> bool:
        """Queued or processing: what a user may cancel, and what the sweeper watches."""
        return self.status in (self.Status.QUEUED, self.Status.PROCESSING)

    def is_managed_by(self, user) -> bool:
        """Its uploader and its collection's owner may delete, cancel and re-ingest it; members only read."""
        return user.pk in (self.owner_id, self.collection.owner_id)


class Chunk(models.Model):
    # Indexed by unique_chunk_ordinal (document, ordinal): one index entry fewer written for every stored chunk.
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks", db_index=False)
    # Denormalised from the document so that access control and collection filters are a
    # predicate on this table alone, which pgvector's iterative index scan can apply cheaply.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    ordinal = models.PositiveIntegerField()
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.TextField(blank=True, help_text="Heading path, outermost first, ' > ' joined.")
    char_start = models.PositiveIntegerField(default=0)
    char_end = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)
    metadata = models.JSONField(default=dict, blank=True)
    # Its vectors are ChunkVector rows, one per embedding space (documents.spaces.vectors).
    search_vector = models.GeneratedField(
        expression=SearchVector("heading", "text", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["document", "ordinal"]
        constraints = [
            models.UniqueConstraint(fields=["document", "ordinal"], name="unique_chunk_ordinal")
        ]
        indexes = [
            GinIndex(fields=["search_vector"], name="chunk_search_vector_gin"),
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.ordinal}"


class ChunkVector(models.Model):
    """A chunk's vector in one embedding space.

    The table is LIST-partitioned by space (migration 0014; documents.spaces.storage creates a partition per
    space, with one HNSW expression index per distance in use). ``embedding`` is pgvector's untyped
    ``vector``: spaces differ in dimensions, and each partition's index casts to its own. ``collection``,
    ``document`` and ``distance`` are copied from the chunk and its collection (access control and the
    partial index are predicates on this table alone) and kept true by the same triggers that keep the
    chunk's.
    """

    pk = models.CompositePrimaryKey("chunk", "space")
    # The database cascades: deleting a chunk deletes its vectors (ON DELETE CASCADE, migration 0014).
    chunk = models.ForeignKey(Chunk, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    collection = models.ForeignKey(Collection, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    document = models.ForeignKey(Document, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False)
    distance = models.CharField(max_length=6, choices=Distance.choices, default=Distance.COSINE)
    embedding = VectorField()

    class Meta:
        # A partitioned table: migration 0014 writes its SQL (the model state is managed, so that tests
        # flush it with the chunks).
        db_table = "documents_chunkvector"

    def __str__(self) -> str:
        return f"{self.chunk_id} in space {self.space_id}"


class SpaceMigration(models.Model):
    """One collection's move from its active embedding space to a target space: backfill, evaluation, switch.

    The backfill re-embeds the collection's stored chunk text (no re-parsing) in batches; ``cursor`` (the last
    chunk id written) is saved in the transaction that writes each batch's vectors, so a killed worker resumes
    with no gap and no duplicate.
    """

    class State(models.TextChoices):
        BACKFILLING = "backfilling", "Backfilling"
        INDEXING = "indexing", "Building the index"
        READY = "ready", "Ready to switch"
        SWITCHED = "switched", "Switched"
        ROLLED_BACK = "rolled_back", "Rolled back"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="space_migrations")
    source = models.ForeignKey(EmbeddingSpace, on_delete=models.PROTECT, related_name="+")
    target = models.ForeignKey(EmbeddingSpace, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=12, choices=State.choices, default=State.BACKFILLING)
    cursor = models.BigIntegerField(default=0, help_text="The last chunk id backfilled.")
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # documents.spaces.quality: the evaluation before the switch and the drift between the two spaces.
    evaluation = models.JSONField(default=dict, blank=True)
    drift = models.JSONField(default=dict, blank=True)
    forced = models.BooleanField(default=False, help_text="Switched although the quality gate refused.")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    backfilled_at = models.DateTimeField(null=True, blank=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # At most one migration in progress per collection.
            models.UniqueConstraint(
                fields=["collection"],
                condition=Q(state__in=["backfilling", "indexing", "ready"]),
                name="one_open_space_migration_per_collection",
            )
        ]

    def __str__(self) -> str:
        return f"{self.collection} → {self.target}"


class EmbedderHeartbeat(models.Model):
    """A live web or worker process, and the embedding spaces it can embed queries and chunks for.

    A switch is refused while a process seen in the last SPACE_HEARTBEAT_STALE_SECONDS could not embed
    for the new active space (documents.spaces).
    """

    process = models.CharField(max_length=200, unique=True, help_text="host:pid and role")
    role = models.CharField(max_length=20)
    spaces = models.JSONField(default=list, help_text="Ids of the spaces this process can embed for.")
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.process


class TermStat(models.Model):
    """How many chunks of a collection contain a (stemmed) word: BM25's document frequency.

    Kept exact by statement-level triggers on the chunk table (see migration 0003), so every
    path that writes chunks — COPY, cascades, the admin, raw SQL — keeps it right.
    """

    # Indexed by unique_term_per_collection (collection, lexeme): one index entry fewer for every new word.
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+", db_index=False)
    lexeme = models.TextField()
    df = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["collection", "lexeme"], name="unique_term_per_collection")]

    def __str__(self) -> str:
        return f"{self.lexeme} ({self.df})"


class DocumentVector(models.Model):
    """A document's vector: the L2-normalised mean of its chunks' vectors in one embedding space, for "similar
    documents" and recommendations.

    Written with the chunks, in the transaction that stores them (documents.store), from the vectors of the
    collection's active space; rebuilt from that space's chunk vectors when the collection switches spaces
    (documents.similar.document_vectors_rebuild), and deleted with the document. ``embedding`` is pgvector's
    untyped ``vector`` (spaces differ in dimensions); each space has its own partial HNSW index on
    ``(embedding::vector(N))`` (documents.spaces.document_index), so only vectors of one space are compared.
    Compared by cosine whatever the collection's distance: every backend's vectors are normalised.
    """

    document = models.OneToOneField(Document, on_delete=models.CASCADE, primary_key=True, related_name="vector")
    # Denormalised from the document (access control is a predicate on this table alone, which pgvector's
    # iterative index scan applies as it goes); kept true by a trigger on the document (migration 0012).
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    # The space the vector was computed in: its collection's active space when it was written.
    space = models.ForeignKey(EmbeddingSpace, on_delete=models.PROTECT, related_name="+")
    embedding = VectorField()

    def __str__(self) -> str:
        return f"vector of document {self.document_id} in space {self.space_id}"


class Interest(models.Model):
    """A sign of what someone reads, for "recommended for you": a document they opened, or one that answered them."""

    class Kind(models.TextChoices):
        OPENED = "opened", "Opened"
        ASKED = "asked", "Retrieved for a question"

    # Indexed by interest_newest_first (user, created_at DESC).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(F("user"), F("created_at").desc(), name="interest_newest_first")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.document_id}"
