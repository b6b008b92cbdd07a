/*
 * planner.cpp — the planner hook that makes soft delete work for every
 * client: after parse analysis and rewriting (views expanded, RLS applied),
 *
 *  - a DELETE whose target is an enabled table becomes
 *        UPDATE … SET deleted_at = now(), deleted_by = lifecycle._current_actor(),
 *                     delete_event = lifecycle._current_delete_event()
 *        WHERE <the DELETE's quals> AND deleted_at IS NULL
 *    keeping RETURNING and the DELETE's permission check.  The command tag is
 *    taken from the raw statement, so the client sees "DELETE n" with n the
 *    rows soft-deleted; prepared statements are replanned when a table is
 *    enabled (relcache invalidation), so no cached plan hard-deletes.
 *  - every scan of an enabled table with hide = true gets the security qual
 *    deleted_at IS NULL (applied at the scan, like RLS, so outer joins stay
 *    right), unless lifecycle.include_deleted is on or the query is a
 *    foreign-key check (which must see every row).
 */
#include "bridge/guard.hpp"
#include "bridge/security.hpp"
#include "bridge/spi.hpp"
#include "gucs.hpp"
#include "softdelete/citus.hpp"
#include "softdelete/softdelete.hpp"

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

planner_hook_type prev_planner_hook = nullptr;

Var* column_var(int rti, AttrNumber attnum, Oid type) {
    return pg_call([=] { return makeVar(rti, attnum, type, -1, InvalidOid, 0); });
}

Node* is_null(Var* var) {
    return pg_call([var] {
        NullTest* nt = makeNode(NullTest);
        nt->arg = (Expr*)var;
        nt->nulltesttype = IS_NULL;
        nt->argisrow = false;
        nt->location = -1;
        return (Node*)nt;
    });
}

/* Set when a plan hard-deletes because lifecycle.hard_delete is honoured for
 * the current role: the plan is then valid for that role only. */
bool plan_depends_on_role = false;

/* The SET list of a soft delete of the target table rte:
 * deleted_at = now(), deleted_by = lifecycle._current_actor(),
 * delete_event = lifecycle._current_delete_event(), in attribute order (as the
 * planner expects an UPDATE's target list); the columns are marked updated
 * (UPDATE OF triggers, generated columns).  The range-table entry's required
 * permission stays DELETE: DELETE privilege is what a soft delete needs. */
List* soft_delete_targetlist(Query* q, RangeTblEntry* rte, const TableInfo& info, Oid actor, Oid event) {
    return pg_call([&] {
        Expr* now_expr = (Expr*)makeFuncExpr(F_NOW, TIMESTAMPTZOID, NIL, InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
        Expr* actor_expr =
            (Expr*)makeFuncExpr(actor, TEXTOID, NIL, InvalidOid, DEFAULT_COLLATION_OID, COERCE_EXPLICIT_CALL);
        /* deleted_by may be varchar(n): the actor as its type, as an UPDATE would assign it. */
        Oid by_type;
        int32 by_typmod;
        Oid by_collation;
        get_atttypetypmodcoll(rte->relid, info.deleted_by, &by_type, &by_typmod, &by_collation);
        if (by_type != TEXTOID || by_typmod >= 0) {
            actor_expr = (Expr*)coerce_to_target_type(nullptr, (Node*)actor_expr, TEXTOID, by_type, by_typmod,
                                                      COERCION_ASSIGNMENT, COERCE_IMPLICIT_CAST, -1);
        }
        Expr* event_expr = (Expr*)makeFuncExpr(event, INT8OID, NIL, InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
        struct Set {
            AttrNumber attnum;
            Expr* expr;
            const char* name;
        } sets[3] = {{info.deleted_at, now_expr, "deleted_at"},
                     {info.deleted_by, actor_expr, "deleted_by"},
                     {info.delete_event, event_expr, "delete_event"}};
        for (int i = 0; i < 3; ++i)
            for (int j = i + 1; j < 3; ++j)
                if (sets[j].attnum < sets[i].attnum) std::swap(sets[i], sets[j]);
        List* tlist = NIL;
        for (const Set& set : sets) {
            tlist = lappend(tlist, makeTargetEntry(set.expr, set.attnum, pstrdup(set.name), false));
            compat::add_updated_column(q, rte, set.attnum);
        }
        return tlist;
    });
}

/* RETURNING of a soft DELETE reads like a DELETE's: on PostgreSQL 18, where
 * RETURNING can name OLD and NEW, NEW is NULL (there is no row after a
 * delete), OLD is the row before.  Unqualified columns keep the meaning they
 * have on every version: the row as the soft delete left it (deleted_at set).
 * Never throws (it runs inside PostgreSQL's C mutator). */
struct ReturningContext {
    int rti;
};
extern "C" Node* null_returning_new(Node* node, void* context) {
    if (node == nullptr) return nullptr;
    if (IsA(node, Var)) {
        auto* var = (Var*)node;
        if (var->varno == static_cast<ReturningContext*>(context)->rti && var->varlevelsup == 0 &&
            compat::is_returning_new(var)) {
            return (Node*)makeNullConst(var->vartype, var->vartypmod, var->varcollid);
        }
        return node;
    }
    return expression_tree_mutator(node, compat::mutator(null_returning_new), context);
}

/* Returns true if q was turned into a soft-deleting UPDATE. */
bool convert_delete(Query* q, bool hide) {
    RangeTblEntry* rte = rt_fetch(q->resultRelation, q->rtable);
    const TableInfo* found = lookup(rte->relid);
    if (found == nullptr) return false;
    TableInfo info = *found;

    /* Our own purge: its statements delete rows that are soft-deleted already. */
    if (purging(rte->relid)) return false;
    if (in_ri_context()) {
        /* ON DELETE CASCADE from a parent that is being hard-deleted: the plan
         * (kept by the foreign key) stays a DELETE, and the guard trigger
         * refuses each row it would remove — none, if no row references the
         * parent. */
        return false;
    }
    if (hard_delete_requested()) {
        if (!hard_delete_honoured(rte->relid)) refuse_hard_delete(rte->relid);
        plan_depends_on_role = true;
        return false; /* an ordinary DELETE */
    }

    Oid actor = actor_function();
    Oid event = event_function();
    if (!OidIsValid(actor) || !OidIsValid(event)) return false;
    /* A Citus table: Citus refuses VOLATILE functions in a distributed UPDATE
     * and drops security quals from the shard queries it writes.  The event
     * comes from the STABLE twin of _current_delete_event (Citus evaluates it
     * once, here), and "deleted_at IS NULL" is a real WHERE clause. */
    bool on_citus = citus::present() && citus::is_citus_table(rte->relid);
    if (on_citus) {
        Oid stable = citus::stable_event_function();
        if (OidIsValid(stable)) event = stable;
    }

    int rti = q->resultRelation;
    List* tlist = soft_delete_targetlist(q, rte, info, actor, event);
    pg_call([&] {
        q->targetList = tlist;
        q->commandType = CMD_UPDATE;
        ReturningContext context{rti};
        q->returningList = (List*)null_returning_new((Node*)q->returningList, &context);
    });
    /* Deleting a deleted row is a no-op (and not counted).  With hide on,
     * process_query adds the same test as a security qual. */
    if (!(hide && info.hide) || on_citus) {
        Node* live = is_null(column_var(rti, info.deleted_at, TIMESTAMPTZOID));
        pg_call([q, live] { q->jointree->quals = make_and_qual(q->jointree->quals, live); });
    }
    return true;
}

constexpr const char* hidden_row_policy = "pg_lifecycle: the row is soft-deleted";

/* MERGE … THEN DELETE on an enabled table: each DELETE action becomes an
 * UPDATE action with the soft delete's SET list, so the row is kept, hidden,
 * cascaded, restorable, and counted in the command tag ("MERGE n") like any
 * action.  A deleted row is not deleted again: with hide on it is not matched
 * at all; with hide off the action's condition gets AND deleted_at IS NULL.
 * Refused (0A000) when row-level security checks the DELETE (an UPDATE action
 * would not run the DELETE policies). */
void convert_merge_deletes(Query* q, bool hide) {
    if (q->resultRelation <= 0) return;
    bool any_delete = false;
    ListCell* lc;
    foreach (lc, q->mergeActionList) {
        if (((MergeAction*)lfirst(lc))->commandType == CMD_DELETE) any_delete = true;
    }
    if (!any_delete) return;
    RangeTblEntry* rte = rt_fetch(q->resultRelation, q->rtable);
    const TableInfo* found = lookup(rte->relid);
    if (found == nullptr) return;
    TableInfo info = *found;
    if (purging(rte->relid) || in_ri_context()) return;
    if (hard_delete_requested()) {
        if (!hard_delete_honoured(rte->relid)) refuse_hard_delete(rte->relid);
        plan_depends_on_role = true;
        return; /* an ordinary MERGE … DELETE */
    }
    Oid actor = actor_function();
    Oid event = event_function();
    if (!OidIsValid(actor) || !OidIsValid(event)) return;

    foreach (lc, q->withCheckOptions) {
        auto* wco = (WithCheckOption*)lfirst(lc);
        if (wco->kind == WCO_RLS_MERGE_DELETE_CHECK &&
            (wco->polname == nullptr || std::strcmp(wco->polname, hidden_row_policy) != 0)) {
            std::string relname = pg_call([&] { return std::string(get_rel_name(rte->relid)); });
            throw Error(sqlstate::feature_not_supported,
                        fmt::format("MERGE with a DELETE action is not supported on soft-delete table \"{}\" under "
                                    "row-level security",
                                    relname),
                        "A soft delete is an UPDATE underneath, and MERGE would check the row against the "
                        "UPDATE policies instead of the DELETE policies.",
                        "Use DELETE for the rows to delete.");
        }
    }

    int rti = q->resultRelation;
    foreach (lc, q->mergeActionList) {
        auto* action = (MergeAction*)lfirst(lc);
        if (action->commandType != CMD_DELETE) continue;
        List* tlist = soft_delete_targetlist(q, rte, info, actor, event);
        Node* live = (hide && info.hide) ? nullptr : is_null(column_var(rti, info.deleted_at, TIMESTAMPTZOID));
        pg_call([&] {
            action->commandType = CMD_UPDATE;
            action->targetList = tlist;
            action->updateColnos = NIL; /* filled in by the planner (preprocess_targetlist) */
            if (live != nullptr) action->qual = (Node*)make_and_qual(action->qual, live);
        });
    }
}

/* Collects the Query nodes of sublinks; never throws (it runs inside
 * PostgreSQL's C walker). */
extern "C" bool collect_sublink_queries(Node* node, void* context) {
    if (node == nullptr) return false;
    if (IsA(node, Query)) {
        auto* found = static_cast<List**>(context);
        *found = lappend(*found, node);
        return false;
    }
    return expression_tree_walker(node, compat::walker(collect_sublink_queries), context);
}

bool process_query(Query* q, bool hide) {
    bool converted = q->commandType == CMD_DELETE && q->resultRelation > 0 && convert_delete(q, hide);
    if (q->commandType == CMD_MERGE) convert_merge_deletes(q, hide);

    int rti = 0;
    ListCell* lc;
    foreach (lc, q->rtable) {
        ++rti;
        auto* rte = (RangeTblEntry*)lfirst(lc);
        if (rte->rtekind == RTE_RELATION && hide) {
            const TableInfo* info = lookup(rte->relid);
            /* On Citus: a Citus table's rows are hidden by the nodes that
             * plan its shard queries (Citus drops security quals, and
             * crashes on some of them in joins); a shard query whose node
             * showed deleted rows says so with an always-true qual (citus.hpp). */
            if (info != nullptr && info->hide &&
                !(citus::present() &&
                  (citus::is_citus_table(rte->relid) || citus::shows_deleted(q, rti, info->deleted_at)))) {
                Node* qual = is_null(column_var(rti, info->deleted_at, TIMESTAMPTZOID));
                pg_call([rte, qual] { rte->securityQuals = lappend(rte->securityQuals, qual); });
            }
        } else if (rte->rtekind == RTE_RELATION && citus::present() && q->commandType != CMD_MERGE &&
                   !(q->commandType == CMD_INSERT && rti == q->resultRelation) && q->jointree != nullptr) {
            /* Deleted rows shown here (include_deleted, a foreign-key check,
             * restore): tell the nodes that plan the shard queries. */
            const TableInfo* info = lookup(rte->relid);
            if (info != nullptr && info->hide && citus::is_citus_table(rte->relid)) {
                Node* qual = citus::show_deleted_qual(rti, info->deleted_at);
                pg_call([q, qual] { q->jointree->quals = make_and_qual(q->jointree->quals, qual); });
            }
        } else if (rte->rtekind == RTE_SUBQUERY && rte->subquery != nullptr) {
            process_query(rte->subquery, hide);
        }
    }
    foreach (lc, q->cteList) {
        auto* cte = (CommonTableExpr*)lfirst(lc);
        if (cte->ctequery != nullptr && IsA(cte->ctequery, Query)) process_query((Query*)cte->ctequery, hide);
    }
    List* sublinks = pg_call([q] {
        List* found = NIL;
        (void)query_tree_walker(q, compat::walker(collect_sublink_queries), &found,
                                QTW_IGNORE_RANGE_TABLE | QTW_IGNORE_CTE_SUBQUERIES);
        return found;
    });
    foreach (lc, sublinks) process_query((Query*)lfirst(lc), hide);
    return converted;
}

/* An upsert or MERGE on a table whose deleted rows are hidden must not
 * modify a hidden row: like row-level security's USING policy, a check on
 * the existing row raises 42501 for it (an ON CONFLICT DO UPDATE that
 * conflicts with a hidden row, a MERGE action on one). */
void protect_hidden_rows(Query* q) {
    if (q->resultRelation <= 0) return;
    bool upsert =
        q->commandType == CMD_INSERT && q->onConflict != nullptr && q->onConflict->action == ONCONFLICT_UPDATE;
    bool merge = q->commandType == CMD_MERGE;
    if (!upsert && !merge) return;
    RangeTblEntry* rte = rt_fetch(q->resultRelation, q->rtable);
    const TableInfo* info = lookup(rte->relid);
    if (info == nullptr || !info->hide) return;
    AttrNumber deleted_at = info->deleted_at;
    int rti = q->resultRelation;
    std::string relname = pg_call([rte] { return std::string(get_rel_name(rte->relid)); });
    pg_call([&] {
        auto add = [&](WCOKind kind) {
            WithCheckOption* wco = makeNode(WithCheckOption);
            wco->kind = kind;
            wco->relname = pstrdup(relname.c_str());
            wco->polname = pstrdup(hidden_row_policy);
            NullTest* nt = makeNode(NullTest);
            nt->arg = (Expr*)makeVar(rti, deleted_at, TIMESTAMPTZOID, -1, InvalidOid, 0);
            nt->nulltesttype = IS_NULL;
            nt->location = -1;
            wco->qual = (Node*)nt;
            wco->cascaded = false;
            q->withCheckOptions = lappend(q->withCheckOptions, wco);
        };
        if (upsert) add(WCO_RLS_CONFLICT_CHECK);
        if (merge) {
            add(WCO_RLS_MERGE_UPDATE_CHECK);
            add(WCO_RLS_MERGE_DELETE_CHECK);
        }
    });
}

/* Returns true if the statement itself was a DELETE made soft. */
bool rewrite(Query* parse) {
    if (!any_enabled()) return false;
    bool ri = in_ri_context();
    bool hide = !gucs::include_deleted && !ri;
    if (hide && citus::present()) citus::refuse_local_join(parse);
    if (hide) protect_hidden_rows(parse);
    return process_query(parse, hide);
}

extern "C" PlannedStmt* lifecycle_planner(Query* parse, const char* query_string, int cursor_options,
                                          ParamListInfo bound_params) {
    plan_depends_on_role = false;
    bool soft_delete = bridge::entry_guard([parse] { return rewrite(parse); });
    bool by_role = plan_depends_on_role;
    PlannedStmt* plan = prev_planner_hook ? prev_planner_hook(parse, query_string, cursor_options, bound_params)
                                          : standard_planner(parse, query_string, cursor_options, bound_params);
    /* The ModifyTable node updates; the statement stays a DELETE for the
     * command tag ("DELETE n"), SPI (SPI_OK_DELETE) and read-only checks. */
    if (soft_delete) plan->commandType = CMD_DELETE;
    /* A hard DELETE allowed for this role is replanned for another. */
    if (by_role) plan->dependsOnRole = true;
    return plan;
}

}  // namespace

void install_planner_hook() {
    prev_planner_hook = planner_hook;
    planner_hook = lifecycle_planner;
}

}  // namespace pg_lifecycle::softdelete
