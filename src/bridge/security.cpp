/*
 * security.cpp — running SQL as somebody else, and ownership checks (see
 * security.hpp).
 */
#include "bridge/security.hpp"

#include "bridge/spi.hpp"

namespace pg_lifecycle::bridge {

namespace {

bool callers_search_path = false;

/* A GUC nest level; with `pin`, search_path = pg_catalog, pg_temp inside it. */
int open_nest_level(bool pin) {
    return pg_call([pin] {
        int nest = NewGUCNestLevel();
        if (pin) {
            (void)set_config_option("search_path", pinned_search_path, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                                    true, 0, false);
        }
        return nest;
    });
}

/* Rolls back every setting changed in the nest level.  Restoring saved values
 * runs only assign hooks, which do not fail; it is safe on an error path too,
 * before the (sub)transaction's abort would do the same. */
void close_nest_level(int nest) noexcept { AtEOXact_GUC(false, nest); }

/* What pg_extension says about pg_lifecycle: its oid, schema and owner, in
 * one scan of its row by name (get_extension_oid's scan). */
struct ExtensionRow {
    Oid oid = InvalidOid;
    Oid schema = InvalidOid;
    Oid owner = InvalidOid;
};

ExtensionRow extension_row() {
    return pg_call([] {
        ExtensionRow row;
        Relation rel = table_open(ExtensionRelationId, AccessShareLock);
        ScanKeyData key;
        ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ, CStringGetDatum("pg_lifecycle"));
        SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
        HeapTuple tup = systable_getnext(scan);
        if (HeapTupleIsValid(tup)) {
            auto* form = (Form_pg_extension)GETSTRUCT(tup);
            row.oid = form->oid;
            row.schema = form->extnamespace;
            row.owner = form->extowner;
        }
        systable_endscan(scan);
        table_close(rel, AccessShareLock);
        return row;
    });
}

}  // namespace

AsRole::AsRole(Oid role, int flags, int) {
    GetUserIdAndSecContext(&saved_user_, &saved_context_);
    nest_ = open_nest_level(!callers_search_path);
    SetUserIdAndSecContext(role, saved_context_ | SECURITY_LOCAL_USERID_CHANGE | flags);
}

AsRole::~AsRole() {
    SetUserIdAndSecContext(saved_user_, saved_context_);
    close_nest_level(nest_);
}

CallersSearchPath::CallersSearchPath() : saved_(callers_search_path) { callers_search_path = true; }
CallersSearchPath::~CallersSearchPath() { callers_search_path = saved_; }

/* Where search_path is pinned already (a SECURITY DEFINER function of ours,
 * the worker, a statement after another in the same AsRole scope) there is
 * nothing to set: the statement runs as it is, and settings its code changes
 * are rolled back by the enclosing scope (AsRole, the function's own nest
 * level).  A statement that changed search_path makes the next one pin it
 * again. */
StatementScope::StatementScope()
    : nest_(!callers_search_path && namespace_search_path != nullptr &&
                    std::strcmp(namespace_search_path, pinned_search_path) == 0
                ? -1
                : open_nest_level(!callers_search_path)) {}
StatementScope::~StatementScope() {
    if (nest_ >= 0) close_nest_level(nest_);
}

char require_table(Oid relid, const char* feature) {
    char kind = pg_call([relid] { return get_rel_relkind(relid); });
    if (kind == '\0') {
        throw Error(sqlstate::undefined_table, fmt::format("relation with OID {} does not exist", relid));
    }
    if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE) {
        throw Error(ERRCODE_WRONG_OBJECT_TYPE, fmt::format("\"{}\" is not a table", qualified_relation_name(relid)), {},
                    fmt::format("{} works on plain and partitioned tables.", feature));
    }
    return kind;
}

Oid relation_owner(Oid relid) {
    Oid owner = pg_call([relid] {
        HeapTuple tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
        if (!HeapTupleIsValid(tup)) return InvalidOid;
        Oid o = ((Form_pg_class)GETSTRUCT(tup))->relowner;
        ReleaseSysCache(tup);
        return o;
    });
    if (owner == InvalidOid) {
        throw Error(sqlstate::undefined_table, fmt::format("relation with OID {} does not exist", relid));
    }
    return owner;
}

Oid extension_oid() { return extension_row().oid; }

Oid extension_schema() {
    /* Cached: the schema of a non-relocatable extension only goes away with
     * the extension (DROP EXTENSION, DROP SCHEMA ... CASCADE), so while the
     * cached schema exists it is still ours. */
    static Oid cached = InvalidOid;
    if (OidIsValid(cached) && pg_call([] { return SearchSysCacheExists1(NAMESPACEOID, ObjectIdGetDatum(cached)); })) {
        return cached;
    }
    cached = extension_row().schema;
    return cached;
}

Oid extension_relation(const char* name) {
    Oid nsp = extension_schema();
    if (!OidIsValid(nsp)) return InvalidOid;
    return pg_call([name, nsp] { return get_relname_relid(name, nsp); });
}

Oid extension_owner() {
    ExtensionRow row = extension_row();
    if (!OidIsValid(row.oid)) {
        throw Error(sqlstate::object_not_in_prerequisite_state,
                    "extension \"pg_lifecycle\" is not installed in this database", {},
                    "CREATE EXTENSION pg_lifecycle;");
    }
    return row.owner;
}

bool owns(Oid relid) {
    return pg_call([relid] { return object_ownercheck(RelationRelationId, relid, GetUserId()); });
}

void require_owner(Oid relid, const char* action) {
    if (!owns(relid)) {
        throw Error(sqlstate::insufficient_privilege,
                    fmt::format("must be owner of table {} to {}", qualified_relation_name(relid), action));
    }
}

std::string qualified_operator(Oid opno) {
    std::string name, schema;
    pg_call([&] {
        HeapTuple tup = SearchSysCache1(OPEROID, ObjectIdGetDatum(opno));
        if (!HeapTupleIsValid(tup)) elog(ERROR, "cache lookup failed for operator %u", opno);
        auto* form = (Form_pg_operator)GETSTRUCT(tup);
        name = NameStr(form->oprname);
        char* nsp = get_namespace_name(form->oprnamespace);
        schema = nsp ? nsp : "";
        ReleaseSysCache(tup);
    });
    return fmt::format("OPERATOR({}.{})", quote_ident(schema), name);
}

std::string equality_operator(Oid type) {
    Oid opno = pg_call([type] { return lookup_type_cache(type, TYPECACHE_EQ_OPR)->eq_opr; });
    if (!OidIsValid(opno)) {
        std::string shown = pg_call([type] { return std::string(format_type_be(type)); });
        throw Error(sqlstate::undefined_function,
                    fmt::format("could not identify an equality operator for type {}", shown));
    }
    return qualified_operator(opno);
}

bool acting_as_outer_user() {
    Oid user;
    int context;
    GetUserIdAndSecContext(&user, &context);
    if (context & (SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION | SECURITY_NOFORCE_RLS)) return false;
    if (AmBackgroundWorkerProcess()) return false;
    return user == GetOuterUserId();
}

void with_setting(const char* name, const char* value, const std::function<void()>& body) {
    int nest = pg_call([name, value] {
        int n = NewGUCNestLevel();
        (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
        return n;
    });
    try {
        body();
    } catch (...) {
        AtEOXact_GUC(false, nest);
        throw;
    }
    AtEOXact_GUC(false, nest);
}

}  // namespace pg_lifecycle::bridge
