-- bench/tokens_baseline.sql — the baseline of bench/tokens.sh: refresh-token
-- rotation with reuse detection written by hand in plpgsql, the way back ends
-- do it today: a random token, looked up by its SHA-256, marked used, a child
-- inserted, the family bumped; the same statuses as lifecycle.token_rotate
-- (rotated, replayed within the grace window, reuse_detected + family revoked +
-- a security event, revoked, expired, invalid) and the same packaging
-- (SECURITY DEFINER, pinned search_path).
--
-- To replay the same token it keeps the child token in the parent's row, as
-- hand-written versions do: that is exactly what SPEC §2 forbids (a copy of
-- the table lets anyone present it), and one reason this is only a baseline.
CREATE SCHEMA IF NOT EXISTS baseline;

CREATE TABLE baseline.families (
    family_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        text NOT NULL,
    generation     integer NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text
) WITH (fillfactor = 80);
CREATE INDEX ON baseline.families (user_id) WHERE revoked_at IS NULL;

CREATE TABLE baseline.tokens (
    token_hash  bytea PRIMARY KEY,          -- sha256 of the token
    family_id   uuid NOT NULL,
    generation  integer NOT NULL,
    used_at     timestamptz,                -- set when rotated
    child_token text                        -- the token the rotation returned (for replays)
) WITH (fillfactor = 80);
CREATE INDEX ON baseline.tokens (family_id);

CREATE TABLE baseline.security_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    event_type  text NOT NULL,
    severity    text NOT NULL,
    user_id     text,
    family_id   uuid,
    detail      jsonb
);

CREATE FUNCTION baseline.new_token() RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT translate(encode(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'base64'), '+/=', '-_')
$$;

CREATE FUNCTION baseline.token_family_create(p_user_id text, p_ttl interval DEFAULT '30 days')
RETURNS TABLE(family_id uuid, token text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fid uuid;
    tok text := baseline.new_token();
BEGIN
    INSERT INTO baseline.families (user_id, expires_at) VALUES (p_user_id, now() + p_ttl) RETURNING families.family_id INTO fid;
    INSERT INTO baseline.tokens (token_hash, family_id, generation) VALUES (sha256(convert_to(tok, 'UTF8')), fid, 1);
    RETURN QUERY SELECT fid, tok;
END $$;

CREATE FUNCTION baseline.token_rotate(p_token text)
RETURNS TABLE(status text, family_id uuid, user_id text, token text, generation integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bytea := sha256(convert_to(p_token, 'UTF8'));
    t baseline.tokens%ROWTYPE;
    f baseline.families%ROWTYPE;
    tok text;
BEGIN
    SELECT * INTO t FROM baseline.tokens WHERE token_hash = h;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'invalid'::text, NULL::uuid, NULL::text, NULL::text, NULL::integer;
        RETURN;
    END IF;
    SELECT * INTO f FROM baseline.families WHERE families.family_id = t.family_id FOR UPDATE;
    -- re-read the token row now that the family is locked
    SELECT * INTO t FROM baseline.tokens WHERE token_hash = h;
    IF f.revoked_at IS NOT NULL THEN
        RETURN QUERY SELECT 'revoked'::text, f.family_id, f.user_id, NULL::text, f.generation;
        RETURN;
    ELSIF f.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired'::text, f.family_id, f.user_id, NULL::text, f.generation;
        RETURN;
    ELSIF t.used_at IS NULL THEN
        tok := baseline.new_token();
        UPDATE baseline.tokens SET used_at = now(), child_token = tok WHERE token_hash = h;
        INSERT INTO baseline.tokens (token_hash, family_id, generation)
            VALUES (sha256(convert_to(tok, 'UTF8')), f.family_id, f.generation + 1);
        UPDATE baseline.families SET generation = families.generation + 1, last_used_at = now(), rotated_at = now()
         WHERE families.family_id = f.family_id;
        RETURN QUERY SELECT 'rotated'::text, f.family_id, f.user_id, tok, f.generation + 1;
        RETURN;
    ELSIF t.generation = f.generation - 1 AND now() - f.rotated_at < current_setting('lifecycle.token_reuse_grace')::interval THEN
        RETURN QUERY SELECT 'replayed'::text, f.family_id, f.user_id, t.child_token, f.generation;
        RETURN;
    END IF;
    UPDATE baseline.families SET revoked_at = now(), revoked_reason = 'reuse_detected'
     WHERE families.family_id = f.family_id;
    INSERT INTO baseline.security_events (event_type, severity, user_id, family_id, detail)
    VALUES ('token_reuse_detected', 'high', f.user_id, f.family_id,
            jsonb_build_object('cause', CASE WHEN t.generation = f.generation - 1 THEN 'replay_after_grace'
                                             ELSE 'older_ancestor' END,
                               'presented_generation', t.generation, 'current_generation', f.generation));
    RETURN QUERY SELECT 'reuse_detected'::text, f.family_id, f.user_id, NULL::text, f.generation;
END $$;
