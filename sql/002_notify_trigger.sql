-- pgcast 002: pgcast.notify_trigger(template, ...), the generic row trigger.
--   CREATE TRIGGER t AFTER INSERT OR UPDATE OR DELETE ON "Article" FOR EACH ROW
--   EXECUTE FUNCTION pgcast.notify_trigger('articles', 'user:{author_id}');
-- Each argument is a channel template; {column} is replaced by that column's value
-- (read with to_jsonb(row) ->> 'column', never spliced into SQL). A NULL value
-- means no event for that template; a column the table lacks is an error.
-- Event data: {"table", "op", "id"} (id = the primary key; an object for a
-- composite key), plus "changed" (column names) on UPDATE. On UPDATE a template
-- whose value changed publishes to the old channel too, so its subscribers learn
-- that the row left it. No arguments: the channel is the table's name.

-- Fill {column} placeholders from a row; NULL when a referenced value is NULL.
CREATE OR REPLACE FUNCTION pgcast.fill_template(template text, rec jsonb, tbl text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    result   text := '';
    rest     text := template;
    open_at  int;
    close_at int;
    col      text;
    val      text;
BEGIN
    IF strpos(template, '{') = 0 THEN
        RETURN template;
    END IF;
    LOOP
        open_at := strpos(rest, '{');
        EXIT WHEN open_at = 0;
        close_at := strpos(substr(rest, open_at + 1), '}');
        EXIT WHEN close_at = 0;  -- an unmatched brace stays literal text
        col := substr(rest, open_at + 1, close_at - 1);
        IF NOT rec ? col THEN
            RAISE EXCEPTION 'pgcast.notify_trigger: table % has no column "%" (template %)',
                tbl, col, quote_literal(template)
                USING ERRCODE = 'undefined_column';
        END IF;
        val := rec ->> col;
        IF val IS NULL THEN
            RETURN NULL;
        END IF;
        result := result || substr(rest, 1, open_at - 1) || val;
        rest := substr(rest, open_at + close_at + 1);
    END LOOP;
    RETURN result || rest;
END
$$;

-- The primary key's column names of a table, in key order (empty when none).
-- Cached per session in a custom setting (a catalog query per row would cost more than
-- the rest of the trigger); a key changed by ALTER TABLE shows in new sessions.
CREATE OR REPLACE FUNCTION pgcast.primary_key_columns(rel regclass) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cache_name text := 'pgcast.pk_' || rel::oid;
    cached     text := current_setting(cache_name, true);
    cols       text[];
BEGIN
    IF cached IS NOT NULL AND cached <> '' THEN
        RETURN cached::text[];
    END IF;
    SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
    INTO cols
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary;
    PERFORM set_config(cache_name, cols::text, false);
    RETURN cols;
END
$$;

-- The event's "id": the key value, an object for a composite key, null without one.
CREATE OR REPLACE FUNCTION pgcast.row_id(rel regclass, rec jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cols text[] := pgcast.primary_key_columns(rel);
BEGIN
    IF cardinality(cols) = 1 THEN
        RETURN rec -> cols[1];
    ELSIF cardinality(cols) = 0 THEN
        RETURN 'null'::jsonb;
    END IF;
    RETURN (SELECT jsonb_object_agg(c, rec -> c) FROM unnest(cols) AS c);
END
$$;

-- Written for the hot path (one-row INSERT, one constant template, single-column key),
-- which costs about twice a plain one-row INSERT transaction: in PL/pgSQL every statement
-- costs, and every function an evaluated expression names is looked up once per
-- transaction, so cold paths (composite keys, templates, UPDATE) sit in branches of their own.
CREATE OR REPLACE FUNCTION pgcast.notify_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec       jsonb;
    old_rec   jsonb;
    cols      text[];
    data      jsonb;
    tmpl      text;
    channel   text;
    old_chan  text;
    published boolean := false;
BEGIN
    IF TG_LEVEL <> 'ROW' THEN
        RAISE EXCEPTION 'pgcast.notify_trigger must be a FOR EACH ROW trigger';
    ELSIF TG_OP = 'DELETE' THEN
        rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
    END IF;
    -- primary_key_columns' cache; '' once the transaction that filled it rolled back
    cols := nullif(current_setting('pgcast.pk_' || TG_RELID, true), '');
    IF cols IS NULL THEN
        cols := pgcast.primary_key_columns(TG_RELID);
    END IF;
    IF cardinality(cols) = 1 THEN
        data := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'id', rec -> cols[1]);
    ELSE
        data := jsonb_build_object(
            'table', TG_TABLE_NAME, 'op', TG_OP, 'id', pgcast.row_id(TG_RELID, rec));
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_rec := to_jsonb(OLD);
        data := data || jsonb_build_object('changed', (
            SELECT coalesce(jsonb_agg(n.key ORDER BY n.key), '[]'::jsonb)
            FROM jsonb_each(rec) AS n
            WHERE n.value IS DISTINCT FROM old_rec -> n.key));
    END IF;
    IF TG_NARGS = 0 THEN
        INSERT INTO pgcast.outbox (channel, data) VALUES (TG_TABLE_NAME, data);
        published := true;
    ELSE
        FOREACH tmpl IN ARRAY TG_ARGV LOOP
            IF strpos(tmpl, '{') = 0 THEN  -- a constant channel
                INSERT INTO pgcast.outbox (channel, data) VALUES (tmpl, data);
                published := true;
            ELSE
                channel := pgcast.fill_template(tmpl, rec, TG_TABLE_NAME);
                IF channel IS NOT NULL THEN
                    INSERT INTO pgcast.outbox (channel, data) VALUES (channel, data);
                    published := true;
                END IF;
                IF TG_OP = 'UPDATE' THEN
                    old_chan := pgcast.fill_template(tmpl, old_rec, TG_TABLE_NAME);
                    IF old_chan IS NOT NULL AND old_chan IS DISTINCT FROM channel THEN
                        INSERT INTO pgcast.outbox (channel, data) VALUES (old_chan, data);
                        published := true;
                    END IF;
                END IF;
            END IF;
        END LOOP;
    END IF;
    IF published THEN
        IF pgcast.wake_needed() THEN  -- a simple expression: see sql/001_outbox.sql
            PERFORM pg_notify('pgcast', '');
        END IF;
    END IF;
    -- Ignored for AFTER triggers; keeps the row intact if used as a BEFORE trigger.
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
