/*
 * registry.cpp — this backend's view of lifecycle.soft_delete_tables.
 *
 * Loaded lazily with one query and kept until a relcache invalidation names
 * the registry table, an enabled table, or everything; soft_delete_enable and
 * soft_delete_disable send such an invalidation.  The relcache callback only
 * counts invalidations: the maps are never touched from inside a callback,
 * and a load during which one arrived is used once but not kept.
 *
 * The registry and the foreign keys are read with a fresh snapshot, not the
 * transaction's: a REPEATABLE READ transaction that began before
 * soft_delete_enable committed is protected from the moment it commits.  The
 * registry is only read where pg_extension says the extension is installed:
 * a look-alike schema named lifecycle elsewhere is never consulted.
 *
 * What is loaded — the registered tables, the memo of every relation looked
 * up and the foreign keys referencing enabled tables — lives in the memory
 * context "pg_lifecycle cache" / "soft delete registry" (bridge::BackendCache);
 * each load resets that context first, which frees the previous load whole.
 */
#include "softdelete/softdelete.hpp"

#include "bridge/cache.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/citus.hpp"

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

struct Registered {
    bool hide;
};

/* A ForeignKey kept in the cache: its strings in the cache's context.  It
 * moves only inside the cache, between containers of that same context, so a
 * move never allocates. */
struct CachedForeignKey {  // NOLINT(bugprone-exception-escape): see above
    CachedForeignKey(const ForeignKey& fk, MemoryContext cxt)
        : constraint(fk.constraint),
          name(bridge::to_pstring(fk.name, cxt)),
          referencing(fk.referencing),
          referenced(fk.referenced),
          on_delete(fk.on_delete),
          deferred(fk.deferred),
          referencing_cols(bridge::to_pstrings(fk.referencing_cols, cxt)),
          referenced_cols(bridge::to_pstrings(fk.referenced_cols, cxt)),
          eq_ops(bridge::to_pstrings(fk.eq_ops, cxt)) {}

    ForeignKey get() const {
        ForeignKey fk;
        fk.constraint = constraint;
        fk.name = bridge::to_string(name);
        fk.referencing = referencing;
        fk.referenced = referenced;
        fk.on_delete = on_delete;
        fk.deferred = deferred;
        fk.referencing_cols = bridge::to_strings(referencing_cols);
        fk.referenced_cols = bridge::to_strings(referenced_cols);
        fk.eq_ops = bridge::to_strings(eq_ops);
        return fk;
    }

    Oid constraint;
    bridge::pstring name;
    Oid referencing;
    Oid referenced;
    char on_delete;
    bool deferred;
    bridge::pvector<bridge::pstring> referencing_cols;
    bridge::pvector<bridge::pstring> referenced_cols;
    bridge::pvector<bridge::pstring> eq_ops;
};

/* One load of the registry and what was looked up since, all in the cache's
 * context. */
struct Registry {
    explicit Registry(MemoryContext cxt)
        : registered(bridge::PallocAllocator<char>(cxt)),
          memo(bridge::PallocAllocator<char>(cxt)),
          incoming(bridge::PallocAllocator<char>(cxt)) {}

    bridge::pflat_map<Oid, Registered> registered;
    /* relid -> info (info.relid == InvalidOid: not enabled); a tree, as
     * lookup() hands out pointers to its entries */
    bridge::pmap<Oid, TableInfo> memo;
    bridge::pflat_map<Oid, bridge::pvector<CachedForeignKey>> incoming; /* incoming_fks() by relid */
};
bridge::BackendCache<Registry> cache("soft delete registry");

bool valid = false;
bool loading = false;
uint64 invalidations = 0; /* relevant invalidations seen so far */
uint64 loads = 0;         /* loads so far: each one resets the cache */
Oid registry_oid = InvalidOid;
Oid actor_fn = InvalidOid;
Oid event_fn = InvalidOid;
Oid event_seq = InvalidOid;
Oid legacy_fn = InvalidOid;
bool loaded_once = false; /* the cache holds the newest load, kept or not */

extern "C" void relcache_callback(Datum, Oid relid) {
    /* No allocation, no PostgreSQL call: only decide whether to reload (the
     * next load frees the cache; a load may be under way right now). */
    const Registry* r = cache.built();
    if (relid == InvalidOid || relid == registry_oid || (r != nullptr && r->memo.find(relid) != r->memo.end())) {
        ++invalidations;
        valid = false;
    }
}

/* A function of our schema without arguments, by name. */
Oid lookup_function(Oid nsp, const char* name) {
    return pg_call([nsp, name] {
        List* fname = list_make2(makeString(get_namespace_name(nsp)), makeString(pstrdup(name)));
        Oid fn = LookupFuncName(fname, 0, nullptr, true);
        return OidIsValid(fn) && get_func_namespace(fn) == nsp ? fn : InvalidOid;
    });
}

void load() {
    cache.reset(); /* frees the previous load, memos and foreign keys */
    ++loads;
    registry_oid = InvalidOid;
    loaded_once = false;
    citus::reset();
    uint64 seen = invalidations;
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) return; /* not installed here: checked again next time */
    registry_oid = pg_call([nsp] { return get_relname_relid("soft_delete_tables", nsp); });
    if (registry_oid == InvalidOid) return;
    actor_fn = lookup_function(nsp, "_current_actor");
    event_fn = lookup_function(nsp, "_current_delete_event");
    /* A database still at 0.1 (not updated yet) has them without the
     * underscore: soft delete works there as it did (README, "Upgrades"). */
    if (!OidIsValid(actor_fn)) actor_fn = lookup_function(nsp, "current_actor");
    if (!OidIsValid(event_fn)) event_fn = lookup_function(nsp, "current_delete_event");
    event_seq = pg_call([nsp] { return get_relname_relid("delete_event_seq", nsp); });
    legacy_fn = lookup_function(nsp, "soft_delete_truncate");

    loading = true;
    try {
        bridge::SpiConnection spi;
        bridge::execute_fresh("SELECT tbl::pg_catalog.oid, hide FROM lifecycle.soft_delete_tables", 0, nullptr, nullptr,
                              true);
        /* Nothing resets the cache while `loading` is set. */
        auto& registered = cache.get().registered;
        registered.reserve(bridge::processed_rows());
        for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
            Oid relid = DatumGetObjectId(bridge::required_datum(i, 1));
            registered[relid] = Registered{DatumGetBool(bridge::required_datum(i, 2))};
        }
    } catch (...) {
        loading = false;
        throw;
    }
    loading = false;
    /* Kept only when nothing was invalidated meanwhile; this call uses it
     * either way (it was read after the invalidation's cause committed). */
    valid = invalidations == seen;
    loaded_once = true;
}

void ensure_loaded() {
    if (loading) return;
    if (!valid) load();
}

bool usable() { return registry_oid != InvalidOid && loaded_once; }

/* hide of a table named in the registry, or nullopt. */
std::optional<bool> registered_hide(Oid relid) {
    const auto& registered = cache.get().registered;
    auto it = registered.find(relid);
    if (it == registered.end()) return std::nullopt;
    return it->second.hide;
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
        "SELECT c.oid, c.conname::pg_catalog.text, c.conrelid, c.confrelid, c.confdeltype::pg_catalog.text, "
        "  (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.i) "
        "     FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(n, i) "
        "     JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.conrelid "
        "      AND a.attnum OPERATOR(pg_catalog.=) k.n)::pg_catalog.text, "
        "  (SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.i) "
        "     FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY k(n, i) "
        "     JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.confrelid "
        "      AND a.attnum OPERATOR(pg_catalog.=) k.n)::pg_catalog.text, "
        "  c.conpfeqop::pg_catalog.oid[], c.condeferred "
        "FROM pg_catalog.pg_constraint c WHERE c.contype OPERATOR(pg_catalog.=) 'f' "
        "AND c.conparentid OPERATOR(pg_catalog.=) 0 AND c.{} OPERATOR(pg_catalog.=) ANY ($1) "
        "ORDER BY c.oid",
        side_column);
    /* The table and its ancestors: a key may be declared on a partitioned parent. */
    List* ancestors = pg_call([relid] { return get_rel_relispartition(relid) ? get_partition_ancestors(relid) : NIL; });
    std::vector<Datum> oids{ObjectIdGetDatum(relid)};
    ListCell* lc;
    foreach (lc, ancestors) oids.push_back(ObjectIdGetDatum(lfirst_oid(lc)));
    Datum arr = pg_call([&oids] {
        return PointerGetDatum(
            construct_array(oids.data(), static_cast<int>(oids.size()), OIDOID, sizeof(Oid), true, TYPALIGN_INT));
    });
    Oid types[1] = {OIDARRAYOID};
    bridge::SpiConnection spi;
    bridge::execute_fresh(sql, 1, types, &arr, true);
    auto split = [](std::string s) { /* {a,b} -> [a, b]; names here are plain (quoted if needed) */
                                     std::vector<std::string> out;
                                     if (s.size() >= 2) s = s.substr(1, s.size() - 2);
                                     std::string cur;
                                     bool quoted = false;
                                     for (char ch : s) {
                                         if (ch == '"') {
                                             quoted = !quoted;
                                             continue;
                                         }
                                         if (ch == ',' && !quoted) {
                                             out.push_back(cur);
                                             cur.clear();
                                             continue;
                                         }
                                         cur += ch;
                                     }
                                     if (!cur.empty()) out.push_back(cur);
                                     return out;
    };
    std::vector<ForeignKey> fks;
    for (uint64 i = 0; i < bridge::processed_rows(); ++i) {
        ForeignKey fk;
        fk.constraint = DatumGetObjectId(bridge::required_datum(i, 1));
        fk.name = bridge::result_text(i, 2).value_or("");
        fk.referencing = DatumGetObjectId(bridge::required_datum(i, 3));
        fk.referenced = DatumGetObjectId(bridge::required_datum(i, 4));
        fk.on_delete = bridge::result_text(i, 5).value_or("a")[0];
        fk.referencing_cols = split(bridge::result_text(i, 6).value_or("{}"));
        fk.referenced_cols = split(bridge::result_text(i, 7).value_or("{}"));
        Datum ops = bridge::required_datum(i, 8);
        std::vector<Oid> opnos;
        pg_call([&] {
            Datum* elems;
            bool* nulls;
            int n;
            deconstruct_array(DatumGetArrayTypeP(ops), OIDOID, sizeof(Oid), true, TYPALIGN_INT, &elems, &nulls, &n);
            for (int k = 0; k < n; ++k) opnos.push_back(DatumGetObjectId(elems[k]));
        });
        for (Oid op : opnos) fk.eq_ops.push_back(bridge::qualified_operator(op));
        fk.deferred = DatumGetBool(bridge::required_datum(i, 9));
        fks.push_back(std::move(fk));
    }
    return fks;
}

}  // namespace

bool enabled_on(Oid relid) {
    if (!OidIsValid(bridge::extension_relation("soft_delete_tables"))) return false;
    if (pg_call([relid] { return get_attnum(relid, deleted_at_column); }) <= 0) return false;
    static bridge::Statement registered("SELECT 1 FROM lifecycle.soft_delete_tables WHERE tbl = $1", {REGCLASSOID});
    Datum key = ObjectIdGetDatum(relid);
    bridge::AsRole ext(bridge::extension_owner());
    registered.execute(&key, nullptr, true, 1);
    return bridge::processed_rows() > 0;
}

const TableInfo* lookup(Oid relid) {
    ensure_loaded();
    /* On a Citus cluster a node's registry may be empty while it holds
     * shards of enabled tables (citus::marked). */
    if (!usable() || (cache.get().registered.empty() && !citus::present())) return nullptr;
    const TableInfo* found;
    if (auto it = cache.get().memo.find(relid); it != cache.get().memo.end()) {
        found = &it->second;
    } else {
        /* The calls below may process invalidations and plan queries (which
         * look tables up, and may load the registry again): the cache is
         * looked at afresh after each one, and what was worked out is kept
         * only when no load happened meanwhile. */
        uint64 seen = loads;
        TableInfo info{InvalidOid, InvalidOid, false, 0, 0, 0};
        if (std::optional<bool> hide = registered_hide(relid)) {
            info = make_info(relid, relid, *hide);
        } else if (pg_call([relid] { return get_rel_relispartition(relid); })) {
            List* ancestors = pg_call([relid] { return get_partition_ancestors(relid); });
            ListCell* lc;
            foreach (lc, ancestors) {
                if (std::optional<bool> h = registered_hide(lfirst_oid(lc))) {
                    info = make_info(relid, lfirst_oid(lc), *h);
                    break;
                }
            }
        } else if (std::optional<bool> marked = citus::marked(relid)) {
            /* A shard (or a worker's shell table) of a table enabled on the coordinator. */
            info = make_info(relid, relid, *marked);
        }
        if (loads == seen) {
            found = &cache.get().memo.emplace(relid, info).first->second;
        } else {
            static TableInfo once; /* used by this call, not kept */
            once = info;
            found = &once;
        }
    }
    if (found->relid == InvalidOid || found->deleted_at == InvalidAttrNumber) return nullptr;
    return found;
}

std::vector<Oid> registered_tables() {
    ensure_loaded();
    std::vector<Oid> out;
    if (!usable()) return out;
    for (const auto& [relid, reg] : cache.get().registered) out.push_back(relid);
    return out;
}

bool any_enabled() {
    ensure_loaded();
    return usable() && (!cache.get().registered.empty() || citus::present());
}

Oid actor_function() { return actor_fn; }
Oid event_function() { return event_fn; }
Oid version_02_function() {
    ensure_loaded();
    return usable() ? legacy_fn : InvalidOid;
}

Oid event_sequence() {
    ensure_loaded();
    return usable() ? event_seq : InvalidOid;
}

void invalidate(Oid relid) {
    pg_call([relid] {
        if (OidIsValid(registry_oid)) CacheInvalidateRelcacheByRelid(registry_oid);
        CacheInvalidateRelcacheByRelid(relid);
    });
    valid = false;
}

namespace {

/* The foreign keys remembered for relid, or nullptr. */
const bridge::pvector<CachedForeignKey>* remembered_fks(Oid relid) {
    const Registry* r = cache.built();
    if (!valid || r == nullptr) return nullptr;
    auto it = r->incoming.find(relid);
    return it == r->incoming.end() ? nullptr : &it->second;
}

}  // namespace

std::vector<ForeignKey> incoming_fks(Oid relid) {
    (void)lookup(relid); /* remembered, so an invalidation of the table drops the memo */
    if (const auto* kept = remembered_fks(relid)) {
        std::vector<ForeignKey> out;
        out.reserve(kept->size());
        for (const CachedForeignKey& fk : *kept) out.push_back(fk.get());
        return out;
    }
    uint64 seen = invalidations;
    uint64 seen_loads = loads;
    std::vector<ForeignKey> fks = read_fks("confrelid", relid);
    if (valid && invalidations == seen && loads == seen_loads) {
        Registry& r = cache.get(); /* no PostgreSQL call below */
        MemoryContext cxt = cache.context();
        bridge::pvector<CachedForeignKey> kept{bridge::PallocAllocator<CachedForeignKey>(cxt)};
        kept.reserve(fks.size());
        for (const ForeignKey& fk : fks) kept.emplace_back(fk, cxt);
        r.incoming.insert_or_assign(relid, std::move(kept));
    }
    return fks;
}

bool has_incoming_fks(Oid relid) {
    (void)lookup(relid); /* remembered, so an invalidation of the table reloads */
    if (const auto* kept = remembered_fks(relid)) return !kept->empty();
    return !incoming_fks(relid).empty();
}

std::vector<ForeignKey> outgoing_fks(Oid relid) { return read_fks("conrelid", relid); }

bool in_ri_context() {
    Oid user;
    int sec;
    GetUserIdAndSecContext(&user, &sec);
    return (sec & SECURITY_NOFORCE_RLS) != 0;
}

bool hard_delete_requested() { return gucs::hard_delete && !InSecurityRestrictedOperation(); }

bool hard_delete_honoured(Oid relid) {
    if (!hard_delete_requested() || !bridge::acting_as_outer_user()) return false;
    return bridge::owns(relid);
}

void refuse_hard_delete(Oid relid) {
    std::string table = bridge::qualified_relation_name(relid);
    if (!bridge::owns(relid)) {
        throw Error(sqlstate::insufficient_privilege,
                    fmt::format("permission denied to hard-delete from soft-delete table {}", table), {},
                    "Only the table's owner or a superuser may set lifecycle.hard_delete.");
    }
    throw Error(sqlstate::insufficient_privilege,
                fmt::format("lifecycle.hard_delete is not honoured here for soft-delete table {}", table),
                "It applies only to the table's owner acting directly: not inside a SECURITY DEFINER function, a "
                "foreign-key action, the worker or lifecycle.run_maintenance.",
                "Run the DELETE in the owner's own session, or use lifecycle.purge().");
}

void install_planner_hook();
void install_executor_finish_hook();
void install_executor_start_hook();
void define_settings();

void init() {
    define_settings();
    pg_call([] { CacheRegisterRelcacheCallback(relcache_callback, (Datum)0); });
    install_planner_hook();
    install_executor_finish_hook();
    install_executor_start_hook();
    citus::init();
}

}  // namespace pg_lifecycle::softdelete
