/*
 * registry.cpp — this backend's view of lifecycle.soft_delete_tables.
 *
 * Loaded lazily with one query and kept until a relcache invalidation names
 * the registry table, an enabled table, or everything; soft_delete_enable and
 * soft_delete_disable send such an invalidation.  The relcache callback only
 * sets a flag: the maps are never touched from inside a callback.
 */
#include "softdelete/softdelete.hpp"

#include "bridge/spi.hpp"

#include <unordered_map>

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

struct Registered {
    bool hide;
};

bool valid = false;
bool loading = false;
Oid registry_oid = InvalidOid;
Oid actor_fn = InvalidOid;
Oid event_fn = InvalidOid;
std::unordered_map<Oid, Registered> registered;
std::unordered_map<Oid, TableInfo> memo;          /* relid -> info (relid == InvalidOid: not enabled) */
std::unordered_map<Oid, std::vector<ForeignKey>> incoming_memo;

extern "C" void relcache_callback(Datum, Oid relid) {
    /* No allocation, no PostgreSQL call: only decide whether to reload. */
    if (!valid) return;
    if (relid == InvalidOid || relid == registry_oid || memo.find(relid) != memo.end()) valid = false;
}

Oid lookup_function(const char* name) {
    return pg_call([name] {
        List* fname = list_make2(makeString(pstrdup("lifecycle")), makeString(pstrdup(name)));
        return LookupFuncName(fname, 0, nullptr, true);
    });
}

void load() {
    registered.clear();
    memo.clear();
    incoming_memo.clear();
    registry_oid = pg_call([] {
        Oid nsp = get_namespace_oid("lifecycle", true);
        return OidIsValid(nsp) ? get_relname_relid("soft_delete_tables", nsp) : InvalidOid;
    });
    if (registry_oid == InvalidOid) return; /* not installed here: checked again next time */
    actor_fn = lookup_function("current_actor");
    event_fn = lookup_function("current_delete_event");

    loading = true;
    try {
        bool pushed = pg_call([] {
            if (ActiveSnapshotSet()) return false;
            PushActiveSnapshot(GetTransactionSnapshot());
            return true;
        });
        {
            bridge::SpiConnection spi;
            bridge::execute_sql("SELECT tbl::oid, hide FROM lifecycle.soft_delete_tables", true);
            for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
                Oid relid = DatumGetObjectId(*bridge::result_datum(i, 1));
                registered[relid] = Registered{DatumGetBool(*bridge::result_datum(i, 2))};
            }
        }
        if (pushed) pg_call([] { PopActiveSnapshot(); });
    } catch (...) {
        loading = false;
        throw;
    }
    loading = false;
    valid = true;
}

void ensure_loaded() {
    if (loading) return;
    if (!valid) load();
}

TableInfo make_info(Oid relid, Oid reg, bool hide) {
    TableInfo info{relid, reg, hide, InvalidAttrNumber, InvalidAttrNumber, InvalidAttrNumber};
    pg_call([&info, relid] {
        info.deleted_at = get_attnum(relid, "deleted_at");
        info.deleted_by = get_attnum(relid, "deleted_by");
        info.delete_event = get_attnum(relid, "delete_event");
    });
    return info;
}

std::vector<ForeignKey> read_fks(const char* side_column, Oid relid) {
    /* Top-level constraints only (conparentid = 0): one per foreign key, not
     * one per partition. */
    std::string sql = fmt::format(
        "SELECT c.oid, c.conname::text, c.conrelid, c.confrelid, c.confdeltype::text, "
        "  (SELECT array_agg(a.attname::text ORDER BY k.i) FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
        "     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n)::text, "
        "  (SELECT array_agg(a.attname::text ORDER BY k.i) FROM unnest(c.confkey) WITH ORDINALITY k(n, i) "
        "     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n)::text "
        "FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' AND c.conparentid = 0 AND c.{} = ANY ($1) "
        "ORDER BY c.oid",
        side_column);
    /* The table and its ancestors: a key may be declared on a partitioned parent. */
    List* ancestors = pg_call([relid] {
        return get_rel_relispartition(relid) ? get_partition_ancestors(relid) : NIL;
    });
    std::vector<Datum> oids{ObjectIdGetDatum(relid)};
    ListCell* lc;
    foreach (lc, ancestors) oids.push_back(ObjectIdGetDatum(lfirst_oid(lc)));
    Datum arr = pg_call([&oids] {
        return PointerGetDatum(construct_array(oids.data(), static_cast<int>(oids.size()), OIDOID, sizeof(Oid),
                                               true, TYPALIGN_INT));
    });
    Oid types[1] = {OIDARRAYOID};
    bridge::SpiConnection spi;
    bridge::execute_sql(sql, 1, types, &arr, nullptr, true);
    auto split = [](std::string s) {  /* {a,b} -> [a, b]; names here are plain (quoted if needed) */
        std::vector<std::string> out;
        if (s.size() >= 2) s = s.substr(1, s.size() - 2);
        std::string cur;
        bool quoted = false;
        for (char ch : s) {
            if (ch == '"') { quoted = !quoted; continue; }
            if (ch == ',' && !quoted) { out.push_back(cur); cur.clear(); continue; }
            cur += ch;
        }
        if (!cur.empty()) out.push_back(cur);
        return out;
    };
    std::vector<ForeignKey> fks;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        ForeignKey fk;
        fk.constraint = DatumGetObjectId(*bridge::result_datum(i, 1));
        fk.name = bridge::result_text(i, 2).value_or("");
        fk.referencing = DatumGetObjectId(*bridge::result_datum(i, 3));
        fk.referenced = DatumGetObjectId(*bridge::result_datum(i, 4));
        fk.on_delete = bridge::result_text(i, 5).value_or("a")[0];
        fk.referencing_cols = split(bridge::result_text(i, 6).value_or("{}"));
        fk.referenced_cols = split(bridge::result_text(i, 7).value_or("{}"));
        fks.push_back(std::move(fk));
    }
    return fks;
}

}  // namespace

const TableInfo* lookup(Oid relid) {
    ensure_loaded();
    if (!valid || registered.empty()) return nullptr;
    auto it = memo.find(relid);
    if (it == memo.end()) {
        TableInfo info{InvalidOid, InvalidOid, false, 0, 0, 0};
        auto reg = registered.find(relid);
        if (reg != registered.end()) {
            info = make_info(relid, relid, reg->second.hide);
        } else if (pg_call([relid] { return get_rel_relispartition(relid); })) {
            List* ancestors = pg_call([relid] { return get_partition_ancestors(relid); });
            ListCell* lc;
            foreach (lc, ancestors) {
                auto r = registered.find(lfirst_oid(lc));
                if (r != registered.end()) {
                    info = make_info(relid, r->first, r->second.hide);
                    break;
                }
            }
        }
        if (!valid) return nullptr; /* invalidated while we looked: next call reloads */
        it = memo.emplace(relid, info).first;
    }
    const TableInfo& info = it->second;
    if (info.relid == InvalidOid || info.deleted_at == InvalidAttrNumber) return nullptr;
    return &info;
}

bool any_enabled() {
    ensure_loaded();
    return valid && !registered.empty();
}

Oid actor_function() { return actor_fn; }
Oid event_function() { return event_fn; }

void invalidate(Oid relid) {
    pg_call([relid] {
        if (OidIsValid(registry_oid)) CacheInvalidateRelcacheByRelid(registry_oid);
        CacheInvalidateRelcacheByRelid(relid);
    });
    valid = false;
}

std::vector<ForeignKey> incoming_fks(Oid relid) {
    ensure_loaded();
    auto it = incoming_memo.find(relid);
    if (it != incoming_memo.end()) return it->second;
    std::vector<ForeignKey> fks = read_fks("confrelid", relid);
    if (valid) incoming_memo[relid] = fks;
    return fks;
}

bool has_incoming_fks(Oid relid) {
    (void)lookup(relid); /* remembered, so an invalidation of the table reloads */
    auto it = incoming_memo.find(relid);
    if (valid && it != incoming_memo.end()) return !it->second.empty();
    return !incoming_fks(relid).empty();
}

std::vector<ForeignKey> outgoing_fks(Oid relid) { return read_fks("conrelid", relid); }

bool in_ri_context() {
    Oid user;
    int sec;
    GetUserIdAndSecContext(&user, &sec);
    return (sec & SECURITY_NOFORCE_RLS) != 0;
}

void install_planner_hook();

void init() {
    pg_call([] { CacheRegisterRelcacheCallback(relcache_callback, (Datum)0); });
    install_planner_hook();
}

}  // namespace pg_lifecycle::softdelete
