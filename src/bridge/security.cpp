/*
 * security.cpp — ownership lookups (see security.hpp).
 */
#include "bridge/security.hpp"

#include "bridge/spi.hpp"

namespace pg_lifecycle::bridge {

char require_table(Oid relid, const char* feature) {
    char kind = pg_call([relid] { return get_rel_relkind(relid); });
    if (kind == '\0') {
        throw Error(sqlstate::undefined_table, fmt::format("relation with OID {} does not exist", relid));
    }
    if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE) {
        throw Error(make_sqlstate("42809"), fmt::format("\"{}\" is not a table", qualified_relation_name(relid)),
                    {}, fmt::format("{} works on plain and partitioned tables.", feature));
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

Oid extension_owner() {
    /* The extension's tables are created by, and owned by, the extension's owner. */
    Oid relid = pg_call([] {
        Oid nsp = get_namespace_oid("lifecycle", false);
        return get_relname_relid("job_runs", nsp);
    });
    if (relid == InvalidOid) {
        throw Error(sqlstate::wrong_object_state, "extension \"pg_lifecycle\" is not installed in this database",
                    {}, "CREATE EXTENSION pg_lifecycle;");
    }
    return relation_owner(relid);
}

void require_owner(Oid relid, const char* action) {
    bool owner = pg_call([relid] { return pg_class_ownercheck(relid, GetUserId()); });
    if (!owner) {
        throw Error(sqlstate::insufficient_privilege,
                    fmt::format("must be owner of table {} to {}", qualified_relation_name(relid), action));
    }
}

}  // namespace pg_lifecycle::bridge
