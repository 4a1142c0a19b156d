use crate::config::{OrgDefault, Scope};
use crm_domain::{DeptId, GroupId, Level, Module, RoleId, UserId, Value};
use serde::{Deserialize, Serialize};

/// Comparison in a criterion. Range operators are only accepted on ordered fields (numbers, money, dates), so
/// every engine orders them the same way. A comparison with a missing value (NULL) never matches, in Rust and in
/// SQL alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    Eq,
    Ne,
    In,
    NotIn,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Who a manual share names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ShareKey {
    User(UserId),
    Group(GroupId),
    Department(DeptId),
    Role(RoleId),
}

impl ShareKey {
    /// Compact text form stored in the shares table (`u:12`, `g:3`, …), so a share lookup is one indexed `IN`.
    pub fn encode(self) -> String {
        match self {
            ShareKey::User(i) => format!("u:{i}"),
            ShareKey::Group(i) => format!("g:{i}"),
            ShareKey::Department(i) => format!("d:{i}"),
            ShareKey::Role(i) => format!("r:{i}"),
        }
    }
    pub fn decode(s: &str) -> Option<ShareKey> {
        let (k, id) = s.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        Some(match k {
            "u" => ShareKey::User(id),
            "g" => ShareKey::Group(id),
            "d" => ShareKey::Department(id),
            "r" => ShareKey::Role(id),
            _ => return None,
        })
    }
}

/// Why a branch of a predicate grants or narrows access: the rule path an explanation names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Reason {
    /// "View all data" / "modify all data" of an administrator role.
    Administrator {
        role: RoleId,
        modify_all: bool,
    },
    /// The data scope a role grants for the action.
    RoleScope {
        role: RoleId,
        scope: Scope,
    },
    /// The organization-wide default of the module.
    OrgDefault {
        default: OrgDefault,
    },
    PartitionGrant {
        grant: i64,
    },
    SharingRule {
        rule: i64,
    },
    /// A manual share of the record with the user, one of their groups, departments or roles.
    ManualShare,
    /// Membership of the record's team.
    RecordTeam,
    /// The module is controlled by its parent: access follows the parent record.
    Parent {
        module: Module,
    },
    /// A restriction rule: a condition every record must meet.
    Restriction {
        rule: i64,
    },
}

/// A condition over one record, built from the policy for one user, module and action. The store renders the same
/// tree as SQL; [`crate::Access::decide`] evaluates it in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    Const(bool),
    And(Vec<Pred>),
    Or(Vec<Pred>),
    /// Labels a branch for explanations; transparent for evaluation and SQL.
    Because(Reason, Box<Pred>),
    /// The owner is one of these users (sorted, deduplicated).
    OwnerIn(Vec<UserId>),
    /// The owner belongs (primary or secondary) to one of these departments (sorted).
    OwnerInDepartments(Vec<DeptId>),
    /// The owner holds one of these roles (sorted).
    OwnerHasRole(Vec<RoleId>),
    /// The user is on the record's team at `min_level` or more.
    OnTeam {
        user: UserId,
        min_level: Level,
    },
    /// The record is shared with one of these keys at `min_level` or more.
    SharedWith {
        keys: Vec<ShareKey>,
        min_level: Level,
    },
    /// `field op values`; `values` has one element except for `In` / `NotIn`.
    Field {
        field: String,
        op: CmpOp,
        values: Vec<Value>,
    },
    /// The parent record referenced by `field` (of `module`) satisfies `pred`.
    Parent {
        field: &'static str,
        module: Module,
        pred: Box<Pred>,
    },
}

impl Pred {
    pub const TRUE: Pred = Pred::Const(true);
    pub const FALSE: Pred = Pred::Const(false);

    /// Disjunction with constant folding, so the SQL stays small and `true` short-circuits.
    pub fn any(items: Vec<Pred>) -> Pred {
        let mut out = Vec::with_capacity(items.len());
        for p in items {
            match p {
                Pred::Const(false) => {}
                Pred::Const(true) => return Pred::TRUE,
                Pred::Or(inner) => out.extend(inner),
                p => out.push(p),
            }
        }
        match out.len() {
            0 => Pred::FALSE,
            1 => out.pop().unwrap_or(Pred::FALSE),
            _ => Pred::Or(out),
        }
    }

    /// Conjunction with constant folding.
    pub fn all(items: Vec<Pred>) -> Pred {
        let mut out = Vec::with_capacity(items.len());
        for p in items {
            match p {
                Pred::Const(true) => {}
                Pred::Const(false) => return Pred::FALSE,
                Pred::And(inner) => out.extend(inner),
                p => out.push(p),
            }
        }
        match out.len() {
            0 => Pred::TRUE,
            1 => out.pop().unwrap_or(Pred::TRUE),
            _ => Pred::And(out),
        }
    }

    /// Labels `self` with a reason, keeping constants bare so folding still works.
    pub fn because(self, reason: Reason) -> Pred {
        match self {
            Pred::Const(b) => Pred::Const(b),
            p => Pred::Because(reason, Box::new(p)),
        }
    }

    /// The predicate is `false` for every record: the list path can answer without a query.
    pub fn is_never(&self) -> bool {
        matches!(self, Pred::Const(false))
    }
}

/// Labels a constant `true` (a branch such as "view all data" that grants everything) so it still explains itself.
/// Used where folding would lose the reason; evaluation and SQL treat it as `true`.
pub(crate) fn labelled_true(reason: Reason) -> Pred {
    Pred::Because(reason, Box::new(Pred::TRUE))
}

impl Pred {
    /// The same predicate without explanation labels, constants folded: what the store renders and what
    /// [`crate::Access::decide`] evaluates. Stripping labels cannot change the truth value (labels are transparent),
    /// which the property tests check.
    pub fn without_reasons(&self) -> Pred {
        match self {
            Pred::Because(_, p) => p.without_reasons(),
            Pred::And(items) => Pred::all(items.iter().map(Pred::without_reasons).collect()),
            Pred::Or(items) => Pred::any(items.iter().map(Pred::without_reasons).collect()),
            Pred::Parent { field, module, pred } => match pred.without_reasons() {
                Pred::Const(false) => Pred::FALSE,
                p => Pred::Parent { field, module: *module, pred: Box::new(p) },
            },
            p => p.clone(),
        }
    }
}
