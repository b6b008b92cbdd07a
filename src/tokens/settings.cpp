/*
 * settings.cpp — lifecycle.token_reuse_grace and lifecycle.token_retention,
 * and the token_purge maintenance task that removes revoked and expired
 * families after lifecycle.token_retention.
 *
 * The interval settings are parsed once, by their check hooks, into the
 * setting's "extra" (guc.c owns and frees it); the hot path reads the parsed
 * value.
 */
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "tokens/keys.hpp"
#include "tokens/tokens.hpp"
#include "worker/tasks.hpp"

namespace pg_lifecycle::tokens {

using bridge::pg_call;

namespace {

char* grace_text = nullptr;
char* retention_text = nullptr;
Interval grace_value{};      /* 10s until assigned */
Interval retention_value{};  /* 30 days until assigned */

extern "C" bool check_token_reuse_grace(char** newval, void** extra, GucSource) {
    return bridge::entry_guard([=] { return gucs::check_interval_setting(newval, extra, true, "10s"); });
}

extern "C" bool check_token_retention(char** newval, void** extra, GucSource) {
    return bridge::entry_guard([=] { return gucs::check_interval_setting(newval, extra, false, "30 days"); });
}

extern "C" void assign_token_reuse_grace(const char*, void* extra) {
    if (extra != nullptr) grace_value = *static_cast<Interval*>(extra);
}

extern "C" void assign_token_retention(const char*, void* extra) {
    if (extra != nullptr) retention_value = *static_cast<Interval*>(extra);
}

Oid token_families_relid() {
    return bridge::extension_relation("token_families");
}

/* Removes revoked and expired families, and their token chains, once they
 * have been dead for lifecycle.token_retention. */
class TokenPurge final : public worker::Task {
public:
    const char* name() const override { return "token_purge"; }

    void collect(std::vector<worker::Unit>& out) const override {
        Oid rel = token_families_relid();
        out.push_back(worker::Unit{this, rel, rel, "lifecycle.token_families"});
    }

    worker::BatchResult run_batch(const worker::Unit&) const override {
        static bridge::Statement purge(
            "WITH dead AS (SELECT family_id FROM lifecycle.token_family_state "
            "              WHERE least(revoked_at, expires_at) < pg_catalog.now() - $1 "
            "              LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "idle AS (SELECT family_id FROM lifecycle.token_family_state "
            "         WHERE idle_expires_at IS NOT NULL AND idle_expires_at < pg_catalog.now() - $1 "
            "         LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "doomed AS (SELECT family_id FROM dead UNION SELECT family_id FROM idle), "
            "families AS (DELETE FROM lifecycle.token_family_state f USING doomed d "
            "              WHERE f.family_id = d.family_id "
            "                AND least(f.revoked_at, f.expires_at, f.idle_expires_at) < pg_catalog.now() - $1 "
            "              RETURNING f.family_id), "
            "chain AS (DELETE FROM lifecycle.token_chain c USING families f WHERE c.family_id = f.family_id) "
            "SELECT pg_catalog.count(*) FROM families",
            {INTERVALOID, INT4OID});
        /* A database not updated to 0.2 yet has no idle_expires_at. */
        static bridge::Statement purge_01(
            "WITH doomed AS (SELECT family_id FROM lifecycle.token_family_state "
            "                 WHERE least(revoked_at, expires_at) < pg_catalog.now() - $1 "
            "                 LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "families AS (DELETE FROM lifecycle.token_family_state f USING doomed d "
            "              WHERE f.family_id = d.family_id AND least(f.revoked_at, f.expires_at) < pg_catalog.now() - $1 "
            "              RETURNING f.family_id), "
            "chain AS (DELETE FROM lifecycle.token_chain c USING families f WHERE c.family_id = f.family_id) "
            "SELECT pg_catalog.count(*) FROM families",
            {INTERVALOID, INT4OID});

        constexpr int batch = 500;
        Interval keep = retention_value;
        Datum values[2] = {IntervalPGetDatum(&keep), Int32GetDatum(batch)};
        worker::set_batch_settings();
        Oid state = bridge::extension_relation("token_family_state");
        bool v02 = bridge::pg_call([state] { return get_attnum(state, "idle_expires_at") > 0; });
        (v02 ? purge : purge_01).execute(values, nullptr, false);
        int64 rows = bridge::result_int64(0, 1).value_or(0);
        return {rows, rows >= batch};
    }
};

const TokenPurge token_purge;

}  // namespace

const Interval* reuse_grace() { return &grace_value; }
const Interval* retention() { return &retention_value; }

void init() {
    grace_value.time = 10 * USECS_PER_SEC;
    retention_value.day = 30;
    pg_call([] {
        DefineCustomStringVariable(
            "lifecycle.token_reuse_grace",
            "How long after a rotation the previous refresh token may be presented again (a retry).",
            "Within it, token_rotate returns the same new token (status replayed); after it, presenting the "
            "previous token revokes the family (reuse_detected).  Presentations that began before the rotation "
            "committed are replayed whatever this is.",
            &grace_text, "10s", PGC_SUSET, 0, check_token_reuse_grace, assign_token_reuse_grace, nullptr);
        DefineCustomStringVariable(
            "lifecycle.token_retention",
            "How long revoked and expired refresh-token families are kept before the worker removes them.",
            nullptr, &retention_text, "30 days", PGC_SIGHUP, 0, check_token_retention, assign_token_retention,
            nullptr);
    });
    keys::register_callbacks();
}

void register_purge_task() { worker::register_task(token_purge); }

}  // namespace pg_lifecycle::tokens
