/*
 * executor_start.cpp — an ExecutorStart hook that spares a soft DELETE the
 * cascade trigger where that trigger cannot do anything.
 *
 * A soft DELETE is an UPDATE that sets exactly deleted_at = now(),
 * deleted_by = <the actor> and delete_event = lifecycle._current_delete_event()
 * (planner.cpp).  Neither now() nor the event is ever NULL, so for such an
 * UPDATE the cascade trigger's WHEN reduces to "OLD.deleted_at IS NULL and a
 * foreign key references the table": on a table (or partition) that no
 * foreign key references it is false for every row.  PostgreSQL would still,
 * for each row, fetch the old row again for the AFTER UPDATE trigger and
 * evaluate the WHEN, and parse and compile that WHEN once per statement —
 * about a third of a single-row soft DELETE's time.
 *
 * So when such a statement starts, the trigger is disabled in the executor's
 * own copy of the table's triggers (ResultRelInfo.ri_TrigDesc, a copy made
 * for this statement alone); the catalog is untouched.  This is how
 * PostgreSQL itself treats foreign keys: a statement's foreign-key actions
 * are fixed when it starts (adding a key needs a lock the UPDATE's lock
 * conflicts with).  Any other statement keeps the trigger: an application's
 * own soft delete or restore, MERGE, a table with a user's BEFORE UPDATE row
 * trigger (it could change NEW), a Citus table (its plan is Citus's own).
 */
#include "bridge/guard.hpp"
#include "softdelete/softdelete.hpp"

namespace pg_lifecycle::softdelete {

using bridge::pg_call;

namespace {

ExecutorStart_hook_type prev_executor_start = nullptr;

bool is_call(const Expr* expr, Oid function) {
    return expr != nullptr && IsA(expr, FuncExpr) && reinterpret_cast<const FuncExpr*>(expr)->funcid == function;
}

/* Whether the table of `info`, updated into the columns `colnos` by the rows
 * `plan` emits (its first entries are the new values, in that order), gets
 * exactly a soft delete's SET list.  Under an Append (a partitioned or
 * inherited table) every child must compute them. */
bool soft_delete_shape(const TableInfo& info, List* colnos, Plan* plan, Oid event) {
    if (plan == nullptr) return false;
    if (IsA(plan, Append)) {
        List* children = reinterpret_cast<Append*>(plan)->appendplans;
        if (children == NIL) return false;
        ListCell* lc;
        foreach (lc, children) {
            if (!soft_delete_shape(info, colnos, static_cast<Plan*>(lfirst(lc)), event)) return false;
        }
        return true;
    }
    List* tlist = plan->targetlist;
    if (list_length(colnos) != 3 || list_length(tlist) < 3) return false;
    bool at = false, by = false, ev = false;
    for (int k = 0; k < 3; ++k) {
        auto* tle = static_cast<TargetEntry*>(list_nth(tlist, k));
        if (tle->resjunk) return false;
        AttrNumber attnum = static_cast<AttrNumber>(list_nth_int(colnos, k));
        if (attnum == info.deleted_at) {
            at = is_call(tle->expr, F_NOW);
        } else if (attnum == info.delete_event) {
            ev = is_call(tle->expr, event);
        } else if (attnum == info.deleted_by) {
            by = true;
        }
    }
    return at && by && ev;
}

/* Disables the cascade trigger in this statement's copy of rri's triggers
 * unless another BEFORE UPDATE row trigger than the flag trigger is there. */
void disable_cascade(ResultRelInfo* rri) {
    TriggerDesc* td = rri->ri_TrigDesc;
    if (td == nullptr || rri->ri_TrigInstrument != nullptr) return; /* EXPLAIN ANALYZE: leave it as it is */
    Trigger* cascade = nullptr;
    bool other_after_update_row = false;
    for (int i = 0; i < td->numtriggers; ++i) {
        Trigger* trigger = &td->triggers[i];
        if (std::strcmp(trigger->tgname, cascade_trigger) == 0) {
            cascade = trigger;
            continue;
        }
        if (TRIGGER_TYPE_MATCHES(trigger->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_BEFORE, TRIGGER_TYPE_UPDATE) &&
            std::strcmp(trigger->tgname, flag_trigger) != 0) {
            return;
        }
        if (TRIGGER_TYPE_MATCHES(trigger->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_AFTER, TRIGGER_TYPE_UPDATE)) {
            other_after_update_row = true;
        }
    }
    if (cascade == nullptr) return;
    cascade->tgenabled = TRIGGER_DISABLED;
    /* No AFTER UPDATE row trigger left: PostgreSQL then does not fetch the
     * old row again for each updated row. */
    if (!other_after_update_row) td->trig_update_after_row = false;
}

void spare_idle_cascades(ModifyTable* mt, EState* estate, Oid event) {
    if (mt->operation != CMD_UPDATE || outerPlan(mt) == nullptr) return;
    if (list_length(mt->updateColnosLists) != list_length(mt->resultRelations)) return;
    for (int i = 0; i < list_length(mt->resultRelations); ++i) {
        Index rti = static_cast<Index>(list_nth_int(mt->resultRelations, i));
        if (rti == 0 || rti > estate->es_range_table_size) continue;
        ResultRelInfo* rri = estate->es_result_relations[rti - 1];
        if (rri == nullptr || rri->ri_TrigDesc == nullptr || !rri->ri_TrigDesc->trig_update_after_row) continue;
        Oid relid = RelationGetRelid(rri->ri_RelationDesc);
        const TableInfo* found = lookup(relid);
        if (found == nullptr) continue;
        TableInfo info = *found;
        auto* colnos = static_cast<List*>(list_nth(mt->updateColnosLists, i));
        if (!soft_delete_shape(info, colnos, outerPlan(mt), event)) continue;
        if (has_incoming_fks(relid)) continue;
        disable_cascade(rri);
    }
}

void spare(QueryDesc* qd) {
    PlannedStmt* stmt = qd->plannedstmt;
    EState* estate = qd->estate;
    if (stmt == nullptr || estate == nullptr || estate->es_result_relations == nullptr) return;
    if (!any_enabled()) return;
    Oid event = event_function();
    if (!OidIsValid(event)) return;
    /* The statement's own target, and data-modifying CTEs (subplans). */
    if (stmt->planTree != nullptr && IsA(stmt->planTree, ModifyTable)) {
        spare_idle_cascades(reinterpret_cast<ModifyTable*>(stmt->planTree), estate, event);
    }
    if (!stmt->hasModifyingCTE) return;
    ListCell* lc;
    foreach (lc, stmt->subplans) {
        auto* plan = static_cast<Plan*>(lfirst(lc));
        if (plan != nullptr && IsA(plan, ModifyTable)) {
            spare_idle_cascades(reinterpret_cast<ModifyTable*>(plan), estate, event);
        }
    }
}

}  // namespace

extern "C" void lifecycle_softdelete_executor_start(QueryDesc* qd, int eflags) {
    bridge::entry_guard([qd, eflags] {
        pg_call([qd, eflags] {
            if (prev_executor_start) {
                prev_executor_start(qd, eflags);
            } else {
                standard_ExecutorStart(qd, eflags);
            }
        });
        spare(qd);
    });
}

void install_executor_start_hook() {
    prev_executor_start = ExecutorStart_hook;
    ExecutorStart_hook = lifecycle_softdelete_executor_start;
}

}  // namespace pg_lifecycle::softdelete
