//! The organization's people as the policy needs them: users with manager, departments and roles, and the
//! department tree. Loaded by the store, cached by policy version, shared between requests.

use crm_domain::{DeptId, OrgId, RoleId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    /// Locked by an administrator: no sign-in, no access, records stay visible to others.
    Locked,
    /// Deactivated: no sign-in, no access, records stay visible to others.
    Deactivated,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Locked => "locked",
            UserStatus::Deactivated => "deactivated",
        }
    }
    pub fn parse(s: &str) -> Option<UserStatus> {
        [UserStatus::Active, UserStatus::Locked, UserStatus::Deactivated].into_iter().find(|u| u.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirUser {
    pub id: UserId,
    pub manager: Option<UserId>,
    /// Primary department first, then secondary ones.
    pub departments: Vec<DeptId>,
    pub roles: Vec<RoleId>,
    pub status: UserStatus,
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub org: OrgId,
    users: HashMap<UserId, DirUser>,
    parent_of: HashMap<DeptId, Option<DeptId>>,
    children_of: HashMap<DeptId, Vec<DeptId>>,
    reports_of: HashMap<UserId, Vec<UserId>>,
}

impl Directory {
    /// Builds the directory; `departments` are (id, parent) pairs.
    pub fn new(org: OrgId, users: Vec<DirUser>, departments: Vec<(DeptId, Option<DeptId>)>) -> Directory {
        let mut children_of: HashMap<DeptId, Vec<DeptId>> = HashMap::new();
        for (id, parent) in &departments {
            if let Some(p) = parent {
                children_of.entry(*p).or_default().push(*id);
            }
        }
        let mut reports_of: HashMap<UserId, Vec<UserId>> = HashMap::new();
        for u in &users {
            if let Some(m) = u.manager {
                reports_of.entry(m).or_default().push(u.id);
            }
        }
        Directory {
            org,
            users: users.into_iter().map(|u| (u.id, u)).collect(),
            parent_of: departments.into_iter().collect(),
            children_of,
            reports_of,
        }
    }

    pub fn user(&self, id: UserId) -> Option<&DirUser> {
        self.users.get(&id)
    }

    pub fn users(&self) -> impl Iterator<Item = &DirUser> {
        self.users.values()
    }

    pub fn has_department(&self, id: DeptId) -> bool {
        self.parent_of.contains_key(&id)
    }

    pub fn department_parent(&self, id: DeptId) -> Option<DeptId> {
        self.parent_of.get(&id).copied().flatten()
    }

    /// The department and all below it, sorted. Safe on cycles (which the store refuses anyway).
    pub fn subtree(&self, root: DeptId) -> Vec<DeptId> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if seen.insert(d) {
                stack.extend(self.children_of.get(&d).into_iter().flatten().copied());
            }
        }
        seen.into_iter().collect()
    }

    /// True when `ancestor` is `dept` or above it.
    pub fn is_within(&self, dept: DeptId, ancestor: DeptId) -> bool {
        let mut cur = Some(dept);
        let mut steps = 0;
        while let Some(d) = cur {
            if d == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.parent_of.len() {
                return false;
            }
            cur = self.department_parent(d);
        }
        false
    }

    /// Everyone below `manager` in the reporting line, transitively, sorted; never `manager` itself.
    pub fn subordinates(&self, manager: UserId) -> Vec<UserId> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<UserId> = self.reports_of.get(&manager).cloned().unwrap_or_default();
        while let Some(u) = stack.pop() {
            if u != manager && seen.insert(u) {
                stack.extend(self.reports_of.get(&u).into_iter().flatten().copied());
            }
        }
        seen.into_iter().collect()
    }

    /// Would making `manager` the manager of `user` create a cycle in the reporting line?
    pub fn manager_cycle(&self, user: UserId, manager: UserId) -> bool {
        user == manager || self.subordinates(user).contains(&manager)
    }

    /// Would moving `dept` under `parent` create a cycle in the department tree?
    pub fn department_cycle(&self, dept: DeptId, parent: DeptId) -> bool {
        self.is_within(parent, dept)
    }
}
