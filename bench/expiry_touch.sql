-- bench/expiry.sh: the session_touch load (one live session, picked at random, per transaction).
\set k random(1, :nsessions)
SELECT lifecycle.session_touch((SELECT sid FROM sids WHERE k = :k));
