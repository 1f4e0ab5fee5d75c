-- Distribute the app's tables on Citus: documents and everything derived from them by collection_id (colocated),
-- the small tables every search joins as reference tables, the rest local to the coordinator.
--
--   docker compose -f docker-compose.yml -f docker-compose.citus.yml exec db \
--     psql -U rag -d rag -v ON_ERROR_STOP=1 -1 -f /citus/distribute.sql       # after `manage.py migrate`
--
-- One transaction (-1): either the whole layout is in place or nothing changed. docs/scaling.md says why
-- each table goes where it goes and what in the app must change with it (the joins, the triggers, the
-- search settings). NOT RUN ON CITUS in this repository: Citus cannot be installed here. What was run is
-- tests/ops/test_citus_sql.py: this file against plain PostgreSQL 18 + pgvector with the app's migrated
-- schema, with the Citus functions replaced by stubs that check Citus's documented rules (a distributed
-- table's unique constraints include its distribution column; a foreign key from a distributed table goes
-- to a reference table or to a colocated distributed table through the distribution column; no foreign
-- key from a reference or local table to a distributed one). The stubs exist only when the session says
-- `SET ragchat.citus_stub = on` and the citus extension is absent; they live in the schema citus_stub,
-- dropped at the end.

DO $citus$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RETURN;
    END IF;
    IF current_setting('ragchat.citus_stub', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'Citus is not installed in database %: run CREATE EXTENSION citus on the coordinator first '
            '(docker-compose.citus.yml does), or SET ragchat.citus_stub = on to check this file against plain '
            'PostgreSQL', current_database();
    END IF;
    CREATE SCHEMA citus_stub;
    CREATE TABLE citus_stub.placed (relid regclass PRIMARY KEY, kind text NOT NULL, column_name text);

    -- The columns of a constraint, by name.
    CREATE FUNCTION citus_stub.columns(rel oid, attnums int2[]) RETURNS text[] LANGUAGE sql STABLE AS $f$
        SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute
        WHERE attrelid = rel AND attnum = ANY(attnums)
    $f$;

    -- Citus's rules for a table about to be placed, as far as the catalog shows them.
    CREATE FUNCTION citus_stub.check(rel regclass, kind text, col text) RETURNS void LANGUAGE plpgsql AS $f$
    DECLARE
        c record;
        target record;
    BEGIN
        IF EXISTS (SELECT 1 FROM citus_stub.placed WHERE relid = rel) THEN
            RAISE EXCEPTION 'table "%" is already distributed', rel;
        END IF;
        IF kind = 'distributed' THEN
            IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = rel AND attname = col AND NOT attisdropped) THEN
                RAISE EXCEPTION 'column "%" of relation "%" does not exist', col, rel;
            END IF;
            FOR c IN SELECT conname, conkey FROM pg_constraint WHERE conrelid = rel AND contype IN ('p', 'u') LOOP
                IF NOT col = ANY(citus_stub.columns(rel, c.conkey)) THEN
                    RAISE EXCEPTION 'cannot create constraint on "%": distributed relations cannot have UNIQUE, '
                        'EXCLUDE, or PRIMARY KEY constraints that do not include the partition column (%: %)',
                        rel, c.conname, citus_stub.columns(rel, c.conkey);
                END IF;
            END LOOP;
            FOR c IN SELECT i.relname AS conname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
                     WHERE x.indrelid = rel AND x.indisunique
                       AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = x.indexrelid)
                       AND NOT col = ANY(citus_stub.columns(rel, x.indkey::int2[])) LOOP
                RAISE EXCEPTION 'unique index % on "%" does not include the distribution column %', c.conname, rel, col;
            END LOOP;
        END IF;
        -- Outgoing foreign keys.
        FOR c IN SELECT conname, confrelid, conkey, confkey FROM pg_constraint WHERE conrelid = rel AND contype = 'f' LOOP
            SELECT * INTO target FROM citus_stub.placed WHERE relid = c.confrelid;
            IF target IS NULL AND c.confrelid <> rel THEN
                RAISE EXCEPTION 'cannot create foreign key constraint % from "%": the referenced table "%" must be '
                    'a distributed table or a reference table', c.conname, rel, c.confrelid::regclass;
            ELSIF kind = 'reference' AND target.kind <> 'reference' THEN
                RAISE EXCEPTION 'cannot create foreign key constraint % from reference table "%" to distributed '
                    'table "%"', c.conname, rel, c.confrelid::regclass;
            ELSIF kind = 'distributed' AND target.kind = 'distributed' THEN
                -- The distribution column must be in the key, matched to the target's distribution column.
                IF NOT EXISTS (
                    SELECT 1 FROM unnest(c.conkey, c.confkey) AS k (attnum, fattnum)
                    JOIN pg_attribute a ON a.attrelid = rel AND a.attnum = k.attnum
                    JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = k.fattnum
                    WHERE a.attname = col AND f.attname = target.column_name
                ) THEN
                    RAISE EXCEPTION 'cannot create foreign key constraint % from "%" to "%": foreign keys between '
                        'distributed tables must include the distribution column', c.conname, rel, c.confrelid::regclass;
                END IF;
            END IF;
        END LOOP;
        -- Incoming foreign keys from tables already placed as reference tables.
        IF kind = 'distributed' AND EXISTS (
            SELECT 1 FROM pg_constraint x JOIN citus_stub.placed p ON p.relid = x.conrelid
            WHERE x.confrelid = rel AND x.contype = 'f' AND p.kind = 'reference'
        ) THEN
            RAISE EXCEPTION 'a reference table references "%": reference tables cannot reference distributed tables', rel;
        END IF;
        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = rel AND NOT tgisinternal)
           AND current_setting('citus.enable_unsafe_triggers', true) IS DISTINCT FROM 'on' THEN
            RAISE EXCEPTION 'cannot distribute relation "%" because it has triggers (citus.enable_unsafe_triggers '
                'is off)', rel;
        END IF;
        INSERT INTO citus_stub.placed VALUES (rel, kind, col);
        -- A partitioned table's partitions are placed with it (as Citus does).
        INSERT INTO citus_stub.placed SELECT i.inhrelid, kind, col FROM pg_inherits i WHERE i.inhparent = rel
            ON CONFLICT DO NOTHING;
    END $f$;

    CREATE FUNCTION citus_stub.create_reference_table(table_name regclass) RETURNS void LANGUAGE sql AS $f$
        SELECT citus_stub.check(table_name, 'reference', NULL)
    $f$;
    CREATE FUNCTION citus_stub.create_distributed_table(
        table_name regclass, distribution_column text, distribution_type text DEFAULT 'hash',
        colocate_with text DEFAULT 'default', shard_count integer DEFAULT NULL
    ) RETURNS void LANGUAGE plpgsql AS $f$
    BEGIN
        IF colocate_with NOT IN ('default', 'none') AND NOT EXISTS (
            SELECT 1 FROM citus_stub.placed WHERE relid = colocate_with::regclass AND kind = 'distributed'
        ) THEN
            RAISE EXCEPTION 'relation % should be a hash distributed table', colocate_with;
        END IF;
        PERFORM citus_stub.check(table_name, 'distributed', distribution_column);
    END $f$;
    -- After the constraints are added back: every foreign key between placed tables, and none from a
    -- local table to a distributed one (Citus refuses both when the constraint is created).
    CREATE FUNCTION citus_stub.verify() RETURNS void LANGUAGE plpgsql AS $f$
    DECLARE
        c record;
        p record;
    BEGIN
        FOR c IN SELECT x.conname, x.conrelid::regclass AS source, x.confrelid::regclass AS target, s.kind AS source_kind
                 FROM pg_constraint x JOIN citus_stub.placed t ON t.relid = x.confrelid AND t.kind = 'distributed'
                 LEFT JOIN citus_stub.placed s ON s.relid = x.conrelid
                 WHERE x.contype = 'f' AND (s.relid IS NULL OR s.kind = 'reference') LOOP
            RAISE EXCEPTION 'foreign key % from % table "%" to distributed table "%": Citus does not support it',
                c.conname, coalesce(c.source_kind, 'local'), c.source, c.target;
        END LOOP;
        -- The outgoing checks again, now that the constraints of step 6 exist.
        FOR p IN DELETE FROM citus_stub.placed WHERE kind = 'distributed' RETURNING * LOOP
            -- A partition is checked (and placed again) with its parent.
            IF NOT (SELECT relispartition FROM pg_class WHERE oid = p.relid) THEN
                PERFORM citus_stub.check(p.relid, p.kind, p.column_name);
            END IF;
        END LOOP;
    END $f$;
    PERFORM set_config('search_path', current_setting('search_path') || ', citus_stub', true);
END
$citus$;

-- Search settings where the shards run: the app's statements set hnsw.ef_search and hnsw.iterative_scan with
-- set_config(..., true) on the coordinator, which Citus does not send to the workers (docs/scaling.md).
-- Citus 12.1 and later propagate ALTER DATABASE ... SET to the workers (citusdata/citus#7178); on older versions
-- use ALTER ROLE rag SET ... (propagated) or run_command_on_all_nodes.
DO $settings$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET hnsw.iterative_scan = relaxed_order', current_database());
    EXECUTE format('ALTER DATABASE %I SET hnsw.ef_search = 100', current_database());
END
$settings$;

-- 1. Foreign keys that cannot survive as they are: between tables about to be distributed (re-added below
--    with collection_id in them), and from coordinator-local tables to distributed ones (dropped for good:
--    the write path takes over, docs/scaling.md).
ALTER TABLE documents_chunk DROP CONSTRAINT documents_chunk_document_id_3b191792_fk_documents_document_id;
ALTER TABLE documents_documentvector DROP CONSTRAINT documents_documentve_document_id_7b8fb35d_fk_documents;
ALTER TABLE documents_chunkvector DROP CONSTRAINT documents_chunkvector_chunk_id_fkey;
ALTER TABLE documents_interest DROP CONSTRAINT documents_interest_document_id_f1a1559d_fk_documents;
ALTER TABLE chat_citation DROP CONSTRAINT chat_citation_chunk_id_3ce834ab_fk_documents_chunk_id;

-- 2. collection_id in every key of the tables distributed by it.
ALTER TABLE documents_document DROP CONSTRAINT documents_document_pkey,
    ADD CONSTRAINT documents_document_pkey PRIMARY KEY (collection_id, id);
ALTER TABLE documents_chunk DROP CONSTRAINT documents_chunk_pkey,
    ADD CONSTRAINT documents_chunk_pkey PRIMARY KEY (collection_id, id);
ALTER TABLE documents_chunk DROP CONSTRAINT unique_chunk_ordinal,
    ADD CONSTRAINT unique_chunk_ordinal UNIQUE (collection_id, document_id, ordinal);
ALTER TABLE documents_termstat DROP CONSTRAINT documents_termstat_pkey,
    ADD CONSTRAINT documents_termstat_pkey PRIMARY KEY (collection_id, id);
ALTER TABLE documents_documentvector DROP CONSTRAINT documents_documentvector_pkey,
    ADD CONSTRAINT documents_documentvector_pkey PRIMARY KEY (collection_id, document_id);
--    The chunk vectors (partitioned by embedding space, documents.spaces.storage): the partition key stays in
--    the key beside the distribution column; the partitions follow their parent.
ALTER TABLE documents_chunkvector DROP CONSTRAINT documents_chunkvector_pkey,
    ADD CONSTRAINT documents_chunkvector_pkey PRIMARY KEY (collection_id, chunk_id, space_id);

-- 3. Triggers that rewrite collection_id (a document moving to another collection): Citus cannot update a
--    distribution column; the move becomes copy-then-delete in documents.services (docs/scaling.md).
DROP TRIGGER documents_document_chunks_follow ON documents_document;
DROP TRIGGER documents_document_vector_follows ON documents_document;
--    And the one on documents_collection that copies a new distance into its chunks: on a reference table it
--    would fire on every node's copy; the service that changes a collection's distance updates its chunks.
DROP TRIGGER documents_collection_chunks_follow ON documents_collection;

-- 4. Reference tables: small, read by every search (who owns and who may read a collection), copied to
--    every node. auth_user first: documents_collection and its members point at it.
SELECT create_reference_table('auth_user');
--    The embedding spaces (a handful of rows): every collection points at its active one.
SELECT create_reference_table('documents_embeddingspace');
SELECT create_reference_table('documents_collection');
SELECT create_reference_table('documents_collection_members');

-- 5. Distributed by collection_id, colocated: a collection's documents, chunks, statistics and document
--    vectors share a shard, so a search in one collection is a single-shard (router) query, and the
--    joins between them stay on one node.
-- The BM25 statistics triggers on documents_chunk stay: they write documents_termstat (colocated, the same
-- shard group) and documents_collection's totals (a reference table). Citus creates triggers on shards only
-- when asked to: UNVERIFIED on Citus, docs/scaling.md lists moving them into documents.store instead.
SET LOCAL citus.enable_unsafe_triggers = on;
SELECT create_distributed_table('documents_document', 'collection_id');
SELECT create_distributed_table('documents_chunk', 'collection_id', colocate_with => 'documents_document');
SELECT create_distributed_table('documents_termstat', 'collection_id', colocate_with => 'documents_document');
SELECT create_distributed_table('documents_documentvector', 'collection_id', colocate_with => 'documents_document');
-- A partitioned table: Citus distributes its partitions with it, and a partition attached later (a new
-- embedding space) is distributed as it is attached.
SELECT create_distributed_table('documents_chunkvector', 'collection_id', colocate_with => 'documents_document');

-- 6. The foreign keys of step 1 between distributed tables, back with collection_id in them.
ALTER TABLE documents_chunk ADD CONSTRAINT documents_chunk_document_fk
    FOREIGN KEY (collection_id, document_id) REFERENCES documents_document (collection_id, id)
    ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE documents_documentvector ADD CONSTRAINT documents_documentvector_document_fk
    FOREIGN KEY (collection_id, document_id) REFERENCES documents_document (collection_id, id)
    ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE documents_chunkvector ADD CONSTRAINT documents_chunkvector_chunk_fk
    FOREIGN KEY (collection_id, chunk_id) REFERENCES documents_chunk (collection_id, id) ON DELETE CASCADE;

-- Everything else (sessions, API tokens, conversations, messages, citations, interests, invitations, the audit trail,
-- recall samples, Django's own tables) stays local to the coordinator; its foreign keys to auth_user and
-- documents_collection (reference tables) remain, as Citus allows once the coordinator is in the metadata
-- (docker-compose.citus.yml registers it).

DO $citus$
BEGIN
    IF to_regnamespace('citus_stub') IS NOT NULL THEN
        PERFORM citus_stub.verify();
        DROP SCHEMA citus_stub CASCADE;
        PERFORM set_config('search_path', replace(current_setting('search_path'), ', citus_stub', ''), true);
    END IF;
END
$citus$;
