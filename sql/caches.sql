-- The caches a backend keeps for as long as it lives (soft delete's registry
-- and foreign keys, the counts configuration) live in memory contexts of
-- their own, "pg_lifecycle cache", freed on invalidation: enabling,
-- disabling and re-enabling many times, each in its own transaction, keeps
-- every answer right (nothing read from freed memory) and the contexts'
-- size bounded (nothing left behind by a reload).  In a database of its own:
-- the ids its count_enable calls take are not the other files' business.
SELECT current_database() AS regress_db \gset
CREATE DATABASE lifecycle_caches;
\c lifecycle_caches
CREATE EXTENSION pg_lifecycle;

CREATE TABLE cache_users (id int PRIMARY KEY, team int NOT NULL);
CREATE TABLE cache_posts (id int PRIMARY KEY, user_id int NOT NULL REFERENCES cache_users ON DELETE CASCADE);
INSERT INTO cache_users SELECT g, g % 3 FROM generate_series(1, 10) g;
INSERT INTO cache_posts SELECT g, g FROM generate_series(1, 10) g;

-- One round: soft delete on, a cascading DELETE hides a user and her post,
-- restore brings both back; soft delete off, the same DELETE is hard (and the
-- post goes by the foreign key's own cascade); counts on, a count next to
-- count(*), off.  Each step commits: every enable and disable invalidates the
-- caches of this backend.
CREATE PROCEDURE cache_rounds(rounds int) LANGUAGE plpgsql AS $$
DECLARE
    u int;
    n bigint;
BEGIN
    FOR r IN 1..rounds LOOP
        u := 1 + r % 10;
        PERFORM lifecycle.soft_delete_enable('cache_users'), lifecycle.soft_delete_enable('cache_posts');
        COMMIT;
        DELETE FROM cache_users WHERE id = u;
        IF (SELECT count(*) FROM cache_users) <> 9 OR (SELECT count(*) FROM cache_posts) <> 9 THEN
            RAISE EXCEPTION 'round %: the soft DELETE did not hide user % and her post', r, u;
        END IF;
        COMMIT;
        IF lifecycle.restore('cache_users', u) <> 2 THEN
            RAISE EXCEPTION 'round %: restore of user % did not bring back 2 rows', r, u;
        END IF;
        COMMIT;
        PERFORM lifecycle.soft_delete_disable('cache_posts');
        COMMIT;
        -- the child is soft delete no more (the parent still is): its DELETE
        -- is hard, or the INSERT of the same key would fail (23505)
        DELETE FROM cache_posts WHERE id = u;
        INSERT INTO cache_posts VALUES (u, u);
        COMMIT;
        PERFORM lifecycle.soft_delete_disable('cache_users');
        COMMIT;
        -- hard again: the user and her post go for good (the INSERTs of the
        -- same keys would fail otherwise)
        DELETE FROM cache_users WHERE id = u;
        IF EXISTS (SELECT FROM cache_posts WHERE id = u) THEN
            RAISE EXCEPTION 'round %: the post of user % outlived her', r, u;
        END IF;
        INSERT INTO cache_users VALUES (u, u % 3);
        INSERT INTO cache_posts VALUES (u, u);
        COMMIT;
        IF r % 2 = 0 THEN
            PERFORM lifecycle.count_enable('cache_users', '{team}');
            COMMIT;
            INSERT INTO cache_users VALUES (100 + r, 1);
            DELETE FROM cache_users WHERE id = 100 + r;
            INSERT INTO cache_users VALUES (100 + r, 2);
            COMMIT;
            n := lifecycle.count('cache_users', '{"team": 2}');
            IF n <> (SELECT count(*) FROM cache_users WHERE team = 2) THEN
                RAISE EXCEPTION 'round %: count % <> count(*) %', r, n, (SELECT count(*) FROM cache_users WHERE team = 2);
            END IF;
            DELETE FROM cache_users WHERE id = 100 + r;
            PERFORM lifecycle.count_disable('cache_users');
            COMMIT;
        END IF;
    END LOOP;
END $$;

-- A few rounds first: the contexts exist, and their size after them is the
-- yardstick.
CALL cache_rounds(10);
SELECT ident, level = (SELECT level + 1 FROM pg_backend_memory_contexts WHERE name = 'CacheMemoryContext')
       AS under_cache_context
FROM pg_backend_memory_contexts WHERE name = 'pg_lifecycle cache' ORDER BY ident;
CREATE TEMP TABLE cache_sizes AS
SELECT ident, total_bytes FROM pg_backend_memory_contexts WHERE name = 'pg_lifecycle cache';

-- Many more: every answer stays right, and no context grew by more than a
-- block or two (a reload that left its predecessor behind would add some
-- hundred bytes per round: tens of kilobytes over these rounds).
CALL cache_rounds(300);
SELECT c.ident, c.total_bytes <= s.total_bytes + 8192 AS bounded, c.total_bytes < 65536 AS small
FROM pg_backend_memory_contexts c JOIN cache_sizes s USING (ident)
WHERE c.name = 'pg_lifecycle cache' ORDER BY c.ident;
SELECT count(*) AS users, (SELECT count(*) FROM cache_posts) AS posts FROM cache_users;

\c :regress_db
DROP DATABASE lifecycle_caches;
