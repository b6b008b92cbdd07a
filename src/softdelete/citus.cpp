/*
 * citus.cpp — soft delete on a Citus cluster (see citus.hpp for the design).
 *
 * Nothing here links to Citus: its catalogs (pg_dist_partition, pg_dist_shard,
 * pg_dist_local_group) are read with SQL, and only in a database where the
 * citus extension is installed.
 *
 * Recognising a shard.  Citus gives every shard (and, on the workers, the
 * shell table) the triggers of its table, renamed with the shard id: our
 * guard trigger (lifecycle.soft_delete_guard) on a relation that Citus knows
 * — a table in pg_dist_partition or a shard "<table>_<shardid>" in
 * pg_dist_shard — marks it as enabled.  The trigger is created by
 * soft_delete_enable (as the extension's owner) and, through Citus's DDL
 * propagation, on every shard in the same distributed transaction; shard
 * moves, splits and new nodes copy it with the rest of the table's DDL.
 * Its argument is 'show' for a table enabled with hide => false.
 */
#include "softdelete/citus.hpp"

#include "bridge/guard.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "counts/counts.hpp"
#include "softdelete/softdelete.hpp"

#include "bridge/cache.hpp"

#include <charconv>

namespace pg_lifecycle::softdelete::citus {

using bridge::pg_call;

namespace {

enum class Known { unknown, yes, no };
Known citus_installed = Known::unknown;
/* relid -> in pg_dist_partition; freed with the registry's load (reset()) */
struct CitusTables {
    explicit CitusTables(MemoryContext cxt) : in_dist_partition(bridge::PallocAllocator<char>(cxt)) {}
    bridge::pflat_map<Oid, bool> in_dist_partition;
};
bridge::BackendCache<CitusTables> citus_tables("soft delete Citus tables");
/* Inside our own catalog queries: their planning (the planner hook, lookups
 * of the catalogs they read) must not query again. */
int own_sql = 0;
struct OwnSql {
    OwnSql() { ++own_sql; }
    ~OwnSql() { --own_sql; }
    OwnSql(const OwnSql&) = delete;
    OwnSql& operator=(const OwnSql&) = delete;
};

Oid extension_function(const char* name) {
    Oid nsp = bridge::extension_schema();
    if (!OidIsValid(nsp)) return InvalidOid;
    return pg_call([nsp, name] {
        List* fname = list_make2(makeString(get_namespace_name(nsp)), makeString(pstrdup(name)));
        Oid fn = LookupFuncName(fname, 0, nullptr, true);
        return OidIsValid(fn) && get_func_namespace(fn) == nsp ? fn : InvalidOid;
    });
}

/* The logical table of a shard relation "<table>_<shardid>", or InvalidOid. */
Oid shard_owner(Oid relid) {
    OwnSql own;
    std::string name = pg_call([relid] {
        const char* n = get_rel_name(relid);
        return std::string(n ? n : "");
    });
    size_t underscore = name.rfind('_');
    if (underscore == std::string::npos || underscore + 1 >= name.size()) return InvalidOid;
    int64 shardid = 0;
    const char* first = name.data() + underscore + 1;
    const char* last = name.data() + name.size();
    auto [ptr, ec] = std::from_chars(first, last, shardid);
    if (ec != std::errc() || ptr != last || shardid <= 0) return InvalidOid;
    Oid types[1] = {INT8OID};
    Datum args[1] = {Int64GetDatum(shardid)};
    bridge::SpiConnection spi;
    bridge::execute_fresh(
        "SELECT logicalrelid::pg_catalog.oid FROM pg_catalog.pg_dist_shard "
        "WHERE shardid OPERATOR(pg_catalog.=) $1",
        1, types, args, true, 1);
    if (bridge::processed_rows() == 0) return InvalidOid;
    Oid logical = DatumGetObjectId(bridge::required_datum(0, 1));
    /* Same schema, and the name is the table's name with the shard id appended. */
    bool same = pg_call([&] {
        const char* table = get_rel_name(logical);
        return table != nullptr && get_rel_namespace(logical) == get_rel_namespace(relid) &&
               name.compare(0, underscore, table) == 0 && std::strlen(table) == underscore;
    });
    return same ? logical : InvalidOid;
}

}  // namespace

bool present() {
    if (citus_installed == Known::unknown) {
        bool yes = pg_call([] { return OidIsValid(get_extension_oid("citus", true)); });
        citus_installed = yes ? Known::yes : Known::no;
    }
    return citus_installed == Known::yes;
}

void reset() {
    citus_installed = Known::unknown;
    citus_tables.reset();
}

bool is_citus_table(Oid relid) {
    if (!present() || relid < FirstNormalObjectId) return false;
    const auto& known = citus_tables.get().in_dist_partition;
    if (auto it = known.find(relid); it != known.end()) return it->second;
    if (own_sql > 0) return false;
    OwnSql own;
    Oid types[1] = {OIDOID};
    Datum args[1] = {ObjectIdGetDatum(relid)};
    bool found;
    {
        bridge::SpiConnection spi;
        bridge::execute_fresh(
            "SELECT FROM pg_catalog.pg_dist_partition "
            "WHERE logicalrelid::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
            1, types, args, true, 1);
        found = bridge::processed_rows() > 0;
    }
    citus_tables.get().in_dist_partition[relid] = found; /* afresh: the query may have reset it */
    return found;
}

std::optional<bool> marked(Oid relid) {
    if (own_sql > 0 || relid < FirstNormalObjectId || !present()) return std::nullopt;
    Oid guard = extension_function("soft_delete_guard");
    if (!OidIsValid(guard)) return std::nullopt;
    Oid types[2] = {OIDOID, OIDOID};
    Datum args[2] = {ObjectIdGetDatum(relid), ObjectIdGetDatum(guard)};
    std::optional<std::string> arguments;
    {
        OwnSql own;
        bridge::SpiConnection spi;
        bridge::execute_fresh(
            "SELECT pg_catalog.encode(tgargs, 'escape') FROM pg_catalog.pg_trigger "
            "WHERE tgrelid OPERATOR(pg_catalog.=) $1 AND tgfoid OPERATOR(pg_catalog.=) $2 "
            "AND tgenabled OPERATOR(pg_catalog.<>) 'D'",
            2, types, args, true, 1);
        if (bridge::processed_rows() == 0) return std::nullopt;
        arguments = bridge::result_text(0, 1).value_or("");
    }
    /* Only relations Citus knows: elsewhere an unregistered table with our
     * trigger is a restore in progress (reattach_after_restore). */
    if (!is_citus_table(relid) && !OidIsValid(shard_owner(relid))) return std::nullopt;
    return arguments->rfind("show", 0) != 0;
}

bool copy_of_citus_table(Oid relid) {
    if (!present()) return false;
    if (is_citus_table(relid) || OidIsValid(shard_owner(relid))) return true;
    /* Citus's own connections (shards being created before their metadata). */
    const char* app = application_name;
    return app != nullptr && std::strncmp(app, "citus_internal gpid=", 20) == 0;
}

Oid stable_event_function() { return extension_function("_citus_delete_event"); }

const char* guard_arguments(bool hide) { return hide ? "" : "'show'"; }

bool guard_arguments_match(Oid relid, bool hide) {
    OwnSql own;
    Oid guard = extension_function("soft_delete_guard");
    Oid types[2] = {OIDOID, OIDOID};
    Datum args[2] = {ObjectIdGetDatum(relid), ObjectIdGetDatum(guard)};
    bridge::SpiConnection spi;
    bridge::execute_fresh(
        "SELECT pg_catalog.encode(tgargs, 'escape') FROM pg_catalog.pg_trigger "
        "WHERE tgrelid OPERATOR(pg_catalog.=) $1 AND tgfoid OPERATOR(pg_catalog.=) $2",
        2, types, args, true, 1);
    if (bridge::processed_rows() == 0) return true; /* none yet: it will be created with them */
    bool shows = bridge::result_text(0, 1).value_or("").rfind("show", 0) == 0;
    return shows == !hide;
}

int64 event_offset() {
    if (!present()) return 0;
    static int64 offset = 0; /* a worker's group id never changes once it is set */
    if (offset != 0 || own_sql > 0) return offset;
    OwnSql own;
    bridge::SpiConnection spi;
    bridge::execute_fresh("SELECT groupid::pg_catalog.int8 FROM pg_catalog.pg_dist_local_group", 0, nullptr, nullptr,
                          true, 1);
    if (bridge::processed_rows() == 0) return 0;
    int64 group = bridge::result_int64(0, 1).value_or(0);
    if (group <= 0 || group >= (int64{1} << 14)) return 0; /* the coordinator (0), or no room */
    offset = group << 48;
    return offset;
}

void with_triggers_allowed(const std::function<void()>& body) {
    if (!present()) {
        body();
        return;
    }
    bridge::with_setting("citus.enable_unsafe_triggers", "on", body);
}

Node* show_deleted_qual(int rti, AttrNumber deleted_at) {
    return pg_call([=] {
        auto test = [&](NullTestType type) {
            NullTest* nt = makeNode(NullTest);
            nt->arg = (Expr*)makeVar(rti, deleted_at, TIMESTAMPTZOID, -1, InvalidOid, 0);
            nt->nulltesttype = type;
            nt->argisrow = false;
            nt->location = -1;
            return (Expr*)nt;
        };
        return (Node*)makeBoolExpr(OR_EXPR, list_make2(test(IS_NULL), test(IS_NOT_NULL)), -1);
    });
}

namespace {

struct ShowSearch {
    int rti;
    AttrNumber deleted_at;
    bool found;
};

bool is_null_test_of(Node* node, NullTestType type, const ShowSearch& s) {
    if (node == nullptr || !IsA(node, NullTest)) return false;
    auto* nt = (NullTest*)node;
    if (nt->nulltesttype != type || nt->arg == nullptr || !IsA(nt->arg, Var)) return false;
    auto* var = (Var*)nt->arg;
    return var->varno == s.rti && var->varattno == s.deleted_at && var->varlevelsup == 0;
}

/* Never throws (it runs inside PostgreSQL's C walker). */
extern "C" bool find_show_deleted(Node* node, void* context) {
    if (node == nullptr) return false;
    auto* s = static_cast<ShowSearch*>(context);
    if (IsA(node, BoolExpr)) {
        auto* b = (BoolExpr*)node;
        if (b->boolop == OR_EXPR && list_length(b->args) == 2 &&
            is_null_test_of((Node*)linitial(b->args), IS_NULL, *s) &&
            is_null_test_of((Node*)lsecond(b->args), IS_NOT_NULL, *s)) {
            s->found = true;
            return true;
        }
    }
    if (IsA(node, Query)) return false; /* another query level */
    return expression_tree_walker(node, compat::walker(find_show_deleted), context);
}

}  // namespace

bool shows_deleted(Query* q, int rti, AttrNumber deleted_at) {
    if (q->jointree == nullptr) return false;
    ShowSearch s{rti, deleted_at, false};
    pg_call([&] { (void)find_show_deleted((Node*)q->jointree, &s); });
    return s.found;
}

namespace {

/* Collects the relation OIDs of every range-table entry of a query tree;
 * never throws (it runs inside PostgreSQL's C walker). */
extern "C" bool collect_relations(Node* node, void* context) {
    if (node == nullptr) return false;
    if (IsA(node, RangeTblEntry)) {
        auto* rte = (RangeTblEntry*)node;
        if (rte->rtekind == RTE_RELATION) {
            auto* found = static_cast<List**>(context);
            *found = lappend_oid(*found, rte->relid);
        }
        return false;
    }
    if (IsA(node, Query)) {
        return query_tree_walker((Query*)node, compat::walker(collect_relations), context, QTW_EXAMINE_RTES_BEFORE);
    }
    return expression_tree_walker(node, compat::walker(collect_relations), context);
}

}  // namespace

void refuse_local_join(Query* q) {
    if (!present() || own_sql > 0) return;
    List* relids = pg_call([q] {
        List* found = NIL;
        (void)collect_relations((Node*)q, &found);
        return found;
    });
    bool any_citus = false;
    Oid local_hidden = InvalidOid;
    ListCell* lc;
    foreach (lc, relids) {
        Oid relid = lfirst_oid(lc);
        if (relid < FirstNormalObjectId) continue;
        if (is_citus_table(relid)) {
            any_citus = true;
        } else if (!OidIsValid(local_hidden)) {
            const TableInfo* info = lookup(relid);
            if (info != nullptr && info->hide && !marked(relid)) local_hidden = relid;
        }
    }
    if (!any_citus || !OidIsValid(local_hidden)) return;
    std::string table = bridge::qualified_relation_name(local_hidden);
    throw Error(
        sqlstate::feature_not_supported,
        fmt::format("a query on a Citus table cannot read soft-delete table {}, which is not distributed", table),
        "Citus plans a local table joined with distributed ones in a way that does not keep (Citus 13.2: "
        "crashes on) the qual that hides "
        "its soft-deleted rows.",
        fmt::format("Make {} a reference or distributed table (soft delete keeps working there), or query "
                    "it separately.",
                    table));
}

/* Distributing a table that is already enabled.  Citus refuses to distribute
 * a table with triggers unless citus.enable_unsafe_triggers is on.  For a
 * call of create_distributed_table / create_reference_table /
 * citus_add_local_table_to_metadata (and their aliases) whose table is a
 * constant naming a soft-delete table whose only triggers are ours, the
 * setting is turned on for that call alone (a GUC nest level, like a
 * function's SET clause), through PostgreSQL's function-manager hook (the
 * one sepgsql uses): the shards get our triggers with the rest of the
 * table's DDL.  A table with other triggers gets Citus's own error. */
namespace {

needs_fmgr_hook_type prev_needs_fmgr_hook = nullptr;
fmgr_hook_type prev_fmgr_hook = nullptr;

constexpr const char* distributing_functions[] = {"create_distributed_table", "create_reference_table",
                                                  "citus_add_local_table_to_metadata",
                                                  "master_create_distributed_table"};

/* A few function OIDs remembered per backend (no allocation: this runs in
 * every function lookup). */
struct Remembered {
    Oid fn;
    bool distributing;
};
Remembered remembered[64];
int n_remembered = 0;

bool is_distributing_function(Oid fn) {
    for (int i = 0; i < n_remembered; ++i)
        if (remembered[i].fn == fn) return remembered[i].distributing;
    bool distributing = false;
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
    if (HeapTupleIsValid(tuple)) {
        auto* proc = (Form_pg_proc)GETSTRUCT(tuple);
        if (proc->pronamespace == PG_CATALOG_NAMESPACE) {
            for (const char* name : distributing_functions)
                if (std::strcmp(NameStr(proc->proname), name) == 0) distributing = true;
        }
        ReleaseSysCache(tuple);
    }
    if (n_remembered < static_cast<int>(sizeof(remembered) / sizeof(remembered[0]))) {
        remembered[n_remembered++] = Remembered{fn, distributing};
    }
    return distributing;
}

extern "C" bool lifecycle_needs_fmgr_hook(Oid fn) {
    if (prev_needs_fmgr_hook != nullptr && prev_needs_fmgr_hook(fn)) return true;
    return is_distributing_function(fn);
}

/* The table a distributing call names, when it is a constant. */
Oid distributed_table_argument(FmgrInfo* flinfo) {
    Node* expr = flinfo->fn_expr;
    if (expr == nullptr || !IsA(expr, FuncExpr)) return InvalidOid;
    List* args = ((FuncExpr*)expr)->args;
    if (list_length(args) < 1 || !IsA(linitial(args), Const)) return InvalidOid;
    auto* c = (Const*)linitial(args);
    if (c->constisnull || c->consttype != REGCLASSOID) return InvalidOid;
    return DatumGetObjectId(c->constvalue);
}

/* Whether relid's triggers are all ours (and it has ours). */
bool only_our_triggers(Oid relid) {
    OwnSql own;
    Oid types[2] = {OIDOID, OIDOID};
    Datum args[2] = {ObjectIdGetDatum(relid), ObjectIdGetDatum(bridge::extension_schema())};
    bridge::SpiConnection spi;
    bridge::execute_fresh(
        "SELECT pg_catalog.bool_and(p.pronamespace OPERATOR(pg_catalog.=) $2) "
        "FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid "
        "WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND NOT t.tgisinternal",
        2, types, args, true, 1);
    return bridge::result_datum(0, 1).has_value() && DatumGetBool(bridge::required_datum(0, 1));
}

int allow_for_call(FmgrInfo* flinfo) {
    Oid relid = distributed_table_argument(flinfo);
    if (OidIsValid(relid) && present()) counts::citus::refuse_distributing(relid);
    if (!OidIsValid(relid) || !present() || lookup(relid) == nullptr || !only_our_triggers(relid)) return 0;
    return pg_call([] {
        int n = NewGUCNestLevel();
        (void)set_config_option("citus.enable_unsafe_triggers", "on", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true,
                                0, false);
        return n;
    });
}

extern "C" void lifecycle_fmgr_hook(FmgrHookEventType event, FmgrInfo* flinfo, Datum* arg) {
    if (prev_fmgr_hook != nullptr) prev_fmgr_hook(event, flinfo, arg);
    if (!is_distributing_function(flinfo->fn_oid)) return;
    if (event == FHET_START) {
        *arg = Int32GetDatum(bridge::entry_guard([flinfo] { return allow_for_call(flinfo); }));
    } else if (event == FHET_END && DatumGetInt32(*arg) > 0) {
        AtEOXact_GUC(true, DatumGetInt32(*arg));
        *arg = Int32GetDatum(0);
    }
    /* FHET_ABORT: the (sub)transaction's abort rolls the nest level back. */
}

}  // namespace

void init() {
    prev_needs_fmgr_hook = needs_fmgr_hook;
    needs_fmgr_hook = lifecycle_needs_fmgr_hook;
    prev_fmgr_hook = fmgr_hook;
    fmgr_hook = lifecycle_fmgr_hook;
}

}  // namespace pg_lifecycle::softdelete::citus
