//! In-memory evaluation of a [`Pred`] for one record, and explanations.

use crate::directory::Directory;
use crate::pred::{CmpOp, Pred, Reason, ShareKey};
use crm_domain::{Level, Record, UserId, Value};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TeamEntry {
    pub user: UserId,
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ShareEntry {
    pub key: ShareKey,
    pub level: Level,
}

/// What the policy needs to know about one record: the record, its team and shares, and its parent record (for
/// modules controlled by their parent). The store loads it for single-record decisions.
#[derive(Debug, Clone)]
pub struct RecordFacts {
    pub record: Record,
    pub team: Vec<TeamEntry>,
    pub shares: Vec<ShareEntry>,
    pub parent: Option<Box<RecordFacts>>,
}

impl RecordFacts {
    pub fn new(record: Record) -> RecordFacts {
        RecordFacts { record, team: Vec::new(), shares: Vec::new(), parent: None }
    }
}

/// The decision with the rule path that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub allowed: bool,
    /// The user's roles grant the action on the module at all.
    pub module_permission: bool,
    /// Every source that grants access to this record.
    pub granted_by: Vec<Reason>,
    /// Restriction rules the record fails.
    pub denied_by: Vec<Reason>,
}

pub(crate) fn eval(pred: &Pred, facts: &RecordFacts, dir: &Directory) -> bool {
    let r = &facts.record;
    match pred {
        Pred::Const(b) => *b,
        Pred::And(items) => items.iter().all(|p| eval(p, facts, dir)),
        Pred::Or(items) => items.iter().any(|p| eval(p, facts, dir)),
        Pred::Because(_, p) => eval(p, facts, dir),
        Pred::OwnerIn(users) => users.binary_search(&r.owner_id).is_ok(),
        Pred::OwnerInDepartments(depts) => {
            dir.user(r.owner_id).is_some_and(|u| u.departments.iter().any(|d| depts.binary_search(d).is_ok()))
        }
        Pred::OwnerHasRole(roles) => {
            dir.user(r.owner_id).is_some_and(|u| u.roles.iter().any(|x| roles.binary_search(x).is_ok()))
        }
        Pred::OnTeam { user, min_level } => facts.team.iter().any(|t| t.user == *user && t.level >= *min_level),
        Pred::SharedWith { keys, min_level } => {
            facts.shares.iter().any(|s| s.level >= *min_level && keys.binary_search(&s.key).is_ok())
        }
        Pred::Field { field, op, values } => compare(&r.value(field), *op, values),
        Pred::Parent { field, module, pred } => match (&facts.parent, r.value(field).as_int()) {
            (Some(parent), Some(id))
                if parent.record.id == id && parent.record.org_id == r.org_id && parent.record.module == *module =>
            {
                eval(pred, parent, dir)
            }
            _ => false,
        },
    }
}

/// SQL semantics: a comparison with NULL is never true, and values of another type never match.
fn compare(v: &Value, op: CmpOp, values: &[Value]) -> bool {
    if v.is_null() {
        return false;
    }
    let same_type = |x: &Value| std::mem::discriminant(x) == std::mem::discriminant(v);
    let first = match values.first() {
        Some(x) if same_type(x) => x,
        _ if matches!(op, CmpOp::In | CmpOp::NotIn) => &Value::Null,
        _ => return false,
    };
    match op {
        CmpOp::Eq => v == first,
        CmpOp::Ne => v != first,
        CmpOp::In => values.contains(v),
        CmpOp::NotIn => !values.contains(v) && values.iter().all(|x| !x.is_null()),
        CmpOp::Gt => v > first,
        CmpOp::Gte => v >= first,
        CmpOp::Lt => v < first,
        CmpOp::Lte => v <= first,
    }
}

/// Collects the rule path into `out`: every labelled grant the record meets, every restriction it fails. Where a
/// record is controlled by its parent and the parent is not accessible, the restrictions the parent fails go to
/// `parent_denied`; the caller names them only when the record is denied (they may not be what decides).
pub(crate) fn explain(
    pred: &Pred,
    facts: &RecordFacts,
    dir: &Directory,
    out: &mut Explanation,
    parent_denied: &mut Vec<Reason>,
) {
    match pred {
        Pred::Because(reason @ Reason::Restriction { .. }, p) if !eval(p, facts, dir) => {
            out.denied_by.push(reason.clone());
        }
        Pred::Because(reason, p) => {
            let granted = eval(p, facts, dir);
            if granted {
                out.granted_by.push(reason.clone());
            }
            if let Pred::Parent { field, pred, .. } = p.as_ref() {
                match &facts.parent {
                    Some(parent) if granted => explain(pred, parent, dir, out, parent_denied),
                    Some(parent) if facts.record.value(field).as_int() == Some(parent.record.id) => {
                        let mut inner = Explanation { granted_by: Vec::new(), denied_by: Vec::new(), ..out.clone() };
                        explain(pred, parent, dir, &mut inner, parent_denied);
                        parent_denied.extend(inner.denied_by);
                    }
                    _ => {}
                }
            }
        }
        Pred::And(items) | Pred::Or(items) => items.iter().for_each(|p| explain(p, facts, dir, out, parent_denied)),
        _ => {}
    }
}
