//! What users do, one organization built by hand per scenario (permission model, sections 2 and 3).

use super::world::*;
use crm_domain::Action::{Create, Delete, Edit, Export, Share, Transfer, View};
use crm_domain::Module::{Contacts, Customers, Opportunities, Tickets};
use crm_domain::{Level, Value};
use crm_policy::{CmpOp, FieldAccess, Grantee, OrgDefault, Reason, RuleSource, Scope, ShareKey, UserStatus};
use serde_json::json;

/// Money is stored in cents.
const YUAN: i64 = 100;

#[test]
fn a_sales_representative_sees_only_own_customers() {
    let mut w = World::new();
    let sales = w.department(None);
    let rep = w.role("sales representative", |r| r.allow(Customers, VIEW_EDIT, Scope::Own));
    let alice = w.user(sales, &[rep]);
    let bob = w.user(sales, &[rep]);
    let mine = w.customer(alice);
    let his = w.customer(bob);

    assert!(w.allows(alice, View, &mine));
    assert!(w.allows(alice, Edit, &mine));
    assert!(!w.allows(alice, View, &his), "a colleague's customer, even in the same department");
    assert!(!w.allows(alice, Edit, &his));
    assert!(!w.allows(alice, Delete, &mine), "no delete permission on the module");
    assert!(!w.access(alice).can(Customers, Delete));
    assert_eq!(granted_by(&w, alice, View, &mine), vec![Reason::RoleScope { role: rep, scope: Scope::Own }]);
}

#[test]
fn a_sales_manager_sees_the_whole_teams_customers_department_tree() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let east_team = w.department(Some(east));
    let west = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, VIEW_EDIT, Scope::Own));
    let manager_role = w.role("sales manager", |r| r.allow(Customers, VIEW_EDIT, Scope::DepartmentTree));
    let local_manager_role = w.role("local manager", |r| r.allow(Customers, VIEW_EDIT, Scope::Department));
    let manager = w.user(east, &[manager_role]);
    let local = w.user(east, &[local_manager_role]);
    let east_rep = w.user(east_team, &[rep]);
    let east_desk = w.user(east, &[rep]);
    let west_rep = w.user(west, &[rep]);
    let east_customer = w.customer(east_rep);
    let desk_customer = w.customer(east_desk);
    let west_customer = w.customer(west_rep);

    assert!(w.allows(manager, View, &east_customer), "a sub-department's customer");
    assert!(w.allows(manager, Edit, &east_customer));
    assert!(w.allows(manager, View, &desk_customer), "the manager's own department");
    assert!(!w.allows(manager, View, &west_customer), "another branch of the tree");
    assert_eq!(
        granted_by(&w, manager, View, &east_customer),
        vec![Reason::RoleScope { role: manager_role, scope: Scope::DepartmentTree }]
    );

    // `department` (without the tree) stops at the manager's own department.
    assert!(w.allows(local, View, &desk_customer));
    assert!(!w.allows(local, View, &east_customer));
    assert!(!w.allows(east_rep, View, &desk_customer), "a rep sees nothing of the team");
}

#[test]
fn customer_service_reads_customers_works_tickets_and_cannot_open_opportunities() {
    let mut w = World::new();
    let company = w.department(None);
    let service_dept = w.department(Some(company));
    let rep =
        w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own).allow(Opportunities, ALL_ACTIONS, Scope::Own));
    let service =
        w.role("customer service", |r| r.allow(Customers, &[View], Scope::All).allow(Tickets, ALL_ACTIONS, Scope::All));
    let seller = w.user(company, &[rep]);
    let agent = w.user(service_dept, &[service]);
    let account = w.customer(seller);
    let deal = w.child(Opportunities, seller, &account, &[("name", text("deal")), ("stage", text("initial"))]);
    let ticket = w.child(
        Tickets,
        seller,
        &account,
        &[("subject", text("broken")), ("priority", text("high")), ("status", text("open"))],
    );

    let access = w.access(agent);
    assert!(w.allows(agent, View, &account));
    assert!(!w.allows(agent, Edit, &account), "read-only on customers");
    assert!(!access.can(Customers, Edit));
    for action in [View, Create, Edit, Delete, Transfer] {
        assert!(access.can(Tickets, action));
        assert!(w.allows(agent, action, &ticket), "{action} on a ticket");
    }
    assert!(!access.can(Opportunities, View), "opportunities do not exist for customer service");
    for action in ALL_ACTIONS {
        assert!(!w.allows(agent, *action, &deal));
    }
    assert_eq!(access.field_access(Opportunities, "amount"), FieldAccess::Hidden);
    assert_eq!(access.field_access(Opportunities, "id"), FieldAccess::Hidden);
    assert!(!w.access(agent).explain(Opportunities, View, &deal).module_permission);
}

#[test]
fn a_read_only_partition_grant_allows_view_and_refuses_edit() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, &[View, Edit, Export], Scope::Own));
    let alice = w.user(east, &[rep]);
    let other = w.user(company, &[rep]);
    let grant =
        w.partition_grant(Grantee::Department { id: east, include_sub: false }, &[("region", &["华东"])], Level::Read);
    let shanghai = w.customer_with(other, &[("region", text("华东"))]);
    let beijing = w.customer_with(other, &[("region", text("华北"))]);
    let unknown = w.customer(other);

    assert!(w.allows(alice, View, &shanghai));
    assert!(w.allows(alice, Export, &shanghai), "export reads");
    assert!(!w.allows(alice, Edit, &shanghai), "只读访问: read-only");
    assert!(!w.allows(alice, View, &beijing));
    assert!(!w.allows(alice, View, &unknown), "a record without a region is in no partition");
    assert_eq!(granted_by(&w, alice, View, &shanghai), vec![Reason::PartitionGrant { grant }]);

    // Dimensions are AND-ed: region = 华东 AND business_line = cloud.
    let bob = w.user(company, &[rep]);
    w.partition_grant(Grantee::User { id: bob }, &[("region", &["华东"]), ("business_line", &["cloud"])], Level::Edit);
    let cloud = w.customer_with(other, &[("region", text("华东")), ("business_line", text("cloud"))]);
    assert!(!w.allows(bob, View, &shanghai), "business line missing");
    assert!(w.allows(bob, View, &cloud));
    assert!(w.allows(bob, Edit, &cloud), "an edit-level grant edits");
    assert!(!w.allows(bob, Delete, &cloud));
}

#[test]
fn removing_a_user_from_a_department_revokes_access() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let west = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, VIEW_EDIT, Scope::Own));
    let manager_role = w.role("manager", |r| r.allow(Customers, VIEW_EDIT, Scope::Department));
    let manager = w.user(east, &[manager_role]);
    let alice = w.user(east, &[rep]);
    let customer = w.customer(alice);
    let partition = w.customer_with(manager, &[("region", text("华东"))]);
    w.partition_grant(Grantee::Department { id: east, include_sub: true }, &[("region", &["华东"])], Level::Read);
    assert!(w.allows(manager, View, &customer));
    assert!(w.allows(alice, View, &partition));

    // Alice moves to the west: the manager loses her customers and she loses the east's partition, on the very
    // next compilation (a new directory), with nothing else changed.
    w.user_mut(alice).departments = vec![west];
    assert!(!w.allows(manager, View, &customer));
    assert!(!w.allows(alice, View, &partition));
    assert!(w.allows(alice, View, &customer), "her own customers stay hers");

    // A secondary department counts like a primary one, and removing it revokes again.
    w.user_mut(alice).departments = vec![west, east];
    assert!(w.allows(manager, View, &customer));
    w.user_mut(alice).departments = vec![west];
    assert!(!w.allows(manager, View, &customer));
}

#[test]
fn subordinates_scope_follows_the_manager_chain_transitively() {
    let mut w = World::new();
    let company = w.department(None);
    let boss = w.role("boss", |r| r.allow(Customers, VIEW_EDIT, Scope::Subordinates));
    let director = w.user(company, &[boss]);
    let manager = w.user(company, &[boss]);
    let rep = w.user(company, &[boss]);
    let peer = w.user(company, &[boss]);
    w.reports_to(manager, director);
    w.reports_to(rep, manager);
    let reps = w.customer(rep);
    let peers = w.customer(peer);
    let directors = w.customer(director);

    assert!(w.allows(director, View, &reps), "two levels down");
    assert!(w.allows(director, Edit, &reps));
    assert!(w.allows(manager, View, &reps));
    assert!(w.allows(director, View, &directors), "own records are part of the scope");
    assert!(!w.allows(director, View, &peers), "outside the reporting line");
    assert!(!w.allows(rep, View, &directors), "never upwards");
    assert!(!w.allows(manager, View, &directors));

    // The chain is read at compile time: cut the middle link and the director loses the rep.
    w.user_mut(rep).manager = None;
    assert!(!w.allows(director, View, &reps));
    let managers = w.customer(manager);
    assert!(w.allows(manager, View, &managers));
}

#[test]
fn an_org_wide_public_read_default_allows_view_but_not_edit() {
    let mut w = World::new();
    let company = w.department(None);
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let alice = w.user(company, &[rep]);
    let bob = w.user(company, &[rep]);
    let his = w.customer(bob);
    assert!(!w.allows(alice, View, &his), "private by default");

    w.default_for(Customers, OrgDefault::PublicRead);
    assert!(w.allows(alice, View, &his));
    assert!(!w.allows(alice, Edit, &his));
    assert_eq!(granted_by(&w, alice, View, &his), vec![Reason::OrgDefault { default: OrgDefault::PublicRead }]);

    w.default_for(Customers, OrgDefault::PublicReadWrite);
    assert!(w.allows(alice, Edit, &his));
    assert!(!w.allows(alice, Delete, &his), "delete needs full access");

    // The default widens record access, not module permissions: no role, nothing.
    let nobody = w.user(company, &[]);
    assert!(!w.allows(nobody, View, &his));
}

#[test]
fn a_sharing_rule_by_owner_department_shares_with_another_department() {
    let mut w = World::new();
    let company = w.department(None);
    let sales = w.department(Some(company));
    let sales_team = w.department(Some(sales));
    let finance = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let seller = w.user(sales_team, &[rep]);
    let accountant = w.user(finance, &[rep]);
    let outsider = w.user(company, &[rep]);
    let rule = w.sharing_rule(
        Customers,
        RuleSource::OwnedBy { owners: Grantee::Department { id: sales, include_sub: true } },
        Grantee::Department { id: finance, include_sub: false },
        Level::Read,
    );
    let customer = w.customer(seller);

    assert!(w.allows(accountant, View, &customer));
    assert!(!w.allows(accountant, Edit, &customer), "shared at read");
    assert!(!w.allows(outsider, View, &customer));
    assert_eq!(granted_by(&w, accountant, View, &customer), vec![Reason::SharingRule { rule }]);

    // Without sub-departments the rule no longer covers the team's records.
    w.config.sharing_rules[0].source =
        RuleSource::OwnedBy { owners: Grantee::Department { id: sales, include_sub: false } };
    assert!(!w.allows(accountant, View, &customer));
}

#[test]
fn a_sharing_rule_by_criteria_shares_opportunities_over_one_million() {
    let mut w = World::new();
    let company = w.department(None);
    let rep =
        w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own).allow(Opportunities, ALL_ACTIONS, Scope::Own));
    let director_role = w.role("sales director", |r| r.allow(Opportunities, VIEW_EDIT, Scope::Own));
    let seller = w.user(company, &[rep]);
    let director = w.user(company, &[director_role]);
    let rule = w.sharing_rule(
        Opportunities,
        RuleSource::Criteria { criteria: vec![crit("amount", CmpOp::Gt, json!(1_000_000 * YUAN))] },
        Grantee::Role { id: director_role },
        Level::Edit,
    );
    let account = w.customer(seller);
    let mut deal = |amount: Option<i64>| {
        let mut fields = vec![("name", text("deal")), ("stage", text("proposal"))];
        if let Some(a) = amount {
            fields.push(("amount", Value::Int(a * YUAN)));
        }
        w.child(Opportunities, seller, &account, &fields)
    };
    let big = deal(Some(2_500_000));
    let exactly = deal(Some(1_000_000));
    let small = deal(Some(20_000));
    let unknown = deal(None);

    assert!(w.allows(director, View, &big));
    assert!(w.allows(director, Edit, &big), "shared at edit");
    assert!(!w.allows(director, Delete, &big));
    assert!(!w.allows(director, View, &exactly), "greater than, not equal");
    assert!(!w.allows(director, View, &small));
    assert!(!w.allows(director, View, &unknown), "a missing amount matches no criterion");
    assert_eq!(granted_by(&w, director, View, &big), vec![Reason::SharingRule { rule }]);
    assert!(!w.allows(director, View, &account), "sharing an opportunity does not share its account");
}

#[test]
fn a_manual_share_to_a_group_reaches_a_member_through_a_department_with_sub_departments() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let east_team = w.department(Some(east));
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let owner = w.user(company, &[rep]);
    let member = w.user(east_team, &[rep]);
    let stranger = w.user(company, &[rep]);
    let group = w.group(&[], &[(east, true)]);
    let customer = shared(w.customer(owner), ShareKey::Group(group), Level::Read);

    let access = w.access(member);
    assert!(access.groups.contains(&group));
    assert!(access.share_keys().contains(&ShareKey::Group(group)));
    assert!(w.allows(member, View, &customer));
    assert!(!w.allows(member, Edit, &customer), "shared at read");
    assert!(!w.allows(stranger, View, &customer));
    assert_eq!(granted_by(&w, member, View, &customer), vec![Reason::ManualShare]);

    // Without sub-departments the team member is not in the group.
    w.config.groups[0].departments = vec![(east, false)];
    assert!(!w.allows(member, View, &customer));

    // A share at full level allows delete and share.
    let direct = shared(w.customer(owner), ShareKey::User(stranger), Level::Full);
    for action in [View, Edit, Delete, Share, Transfer] {
        assert!(w.allows(stranger, action, &direct), "{action}");
    }
}

#[test]
fn a_record_team_member_at_read_level_can_view_but_not_edit() {
    let mut w = World::new();
    let company = w.department(None);
    let rep =
        w.role("rep", |r| r.allow(Opportunities, ALL_ACTIONS, Scope::Own).allow(Customers, ALL_ACTIONS, Scope::Own));
    let owner = w.user(company, &[rep]);
    let reader = w.user(company, &[rep]);
    let editor = w.user(company, &[rep]);
    let account = w.customer(owner);
    let deal = w.child(Opportunities, owner, &account, &[("name", text("deal")), ("stage", text("initial"))]);
    let deal = with_team(with_team(deal, reader, Level::Read), editor, Level::Edit);

    assert!(w.allows(reader, View, &deal));
    assert!(!w.allows(reader, Edit, &deal));
    assert_eq!(granted_by(&w, reader, View, &deal), vec![Reason::RecordTeam]);
    assert!(w.allows(editor, Edit, &deal));
    assert!(!w.allows(editor, Delete, &deal));
    assert!(w.allows(owner, Delete, &deal), "the owner has full access");
}

#[test]
fn contacts_controlled_by_parent_are_visible_exactly_when_their_account_is() {
    let mut w = World::new();
    let company = w.department(None);
    let rep = w.role("rep", |r| r.allow(Customers, VIEW_EDIT, Scope::Own).allow(Contacts, ALL_ACTIONS, Scope::Own));
    let alice = w.user(company, &[rep]);
    let bob = w.user(company, &[rep]);
    w.default_for(Contacts, OrgDefault::ControlledByParent);
    let alices_account = w.customer(alice);
    let bobs_account = w.customer(bob);
    // Bob owns a contact on Alice's account; Alice owns one on Bob's.
    let on_alices = w.child(Contacts, bob, &alices_account, &[("name", text("c1"))]);
    let on_bobs = w.child(Contacts, alice, &bobs_account, &[("name", text("c2"))]);

    assert!(w.allows(alice, View, &on_alices), "her account, someone else's contact");
    assert!(!w.allows(alice, View, &on_bobs), "her own contact on an account she cannot see");
    assert!(w.allows(alice, Edit, &on_alices), "edit follows edit on the account");
    assert_eq!(
        granted_by(&w, alice, View, &on_alices),
        vec![Reason::Parent { module: Customers }, Reason::RoleScope { role: rep, scope: Scope::Own }]
    );

    // Whatever makes the account visible makes its contacts visible.
    let shared_account = shared(bobs_account.clone(), ShareKey::User(alice), Level::Read);
    let mut via_share = on_bobs.clone();
    via_share.parent = Some(Box::new(shared_account));
    assert!(w.allows(alice, View, &via_share));
    assert!(!w.allows(alice, Edit, &via_share), "the account is shared read-only");

    // A contact whose account is not loaded, or is another record, is not visible.
    let mut orphan = on_alices.clone();
    orphan.parent = None;
    assert!(!w.allows(alice, View, &orphan));
    let mut mismatched = on_alices.clone();
    mismatched.record.fields.insert("account_id", Value::Int(bobs_account.record.id));
    assert!(!w.allows(alice, View, &mismatched));
}

#[test]
fn administrators_view_all_sees_everything_but_a_restriction_rule_still_narrows_unless_exempt() {
    let mut w = World::new();
    let company = w.department(None);
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let admin_role = w.role("auditor", |r| r.view_all().allow(Customers, &[Edit], Scope::All));
    let seller = w.user(company, &[rep]);
    let admin = w.user(company, &[admin_role]);
    let government = w.customer_with(seller, &[("customer_type", text("government"))]);
    let smb = w.customer_with(seller, &[("customer_type", text("smb"))]);

    assert!(w.allows(admin, View, &government));
    assert!(w.allows(admin, Export, &smb));
    assert!(!w.allows(admin, Delete, &smb), "view-all is not modify-all");
    assert_eq!(granted_by(&w, admin, View, &smb), vec![Reason::Administrator { role: admin_role, modify_all: false }]);
    assert_eq!(granted_by(&w, admin, Edit, &smb), vec![Reason::RoleScope { role: admin_role, scope: Scope::All }]);

    // Nothing outside the organization.
    let mut foreign = smb.clone();
    foreign.record.org_id = ORG + 1;
    assert!(!w.allows(admin, View, &foreign));

    let rule = w.restriction(
        Customers,
        Grantee::Role { id: admin_role },
        vec![crit("customer_type", CmpOp::Ne, json!("government"))],
        false,
    );
    assert!(!w.allows(admin, View, &government), "view-all is narrowed");
    assert!(w.allows(admin, View, &smb));
    assert_eq!(denied_by(&w, admin, View, &government), vec![Reason::Restriction { rule }]);

    w.config.restriction_rules[0].exempt_administrators = true;
    assert!(w.allows(admin, View, &government), "the rule exempts administrators");
    // The exemption is of view-all: editing comes from the role scope, which the rule still narrows.
    assert!(!w.allows(admin, Edit, &government));
    assert!(w.allows(admin, Edit, &smb));
}

#[test]
fn a_restriction_rule_takes_access_away_from_every_source() {
    // "Service agents never see customers of type government."
    let mut w = World::new();
    let company = w.department(None);
    let service = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let agent_role = w.role("service agent", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let seller = w.user(company, &[rep]);
    let agent = w.user(service, &[agent_role]);
    let group = w.group(&[agent], &[]);
    w.default_for(Customers, OrgDefault::PublicReadWrite);
    w.partition_grant(Grantee::Role { id: agent_role }, &[("customer_type", &["government", "smb"])], Level::Full);
    w.sharing_rule(
        Customers,
        RuleSource::OwnedBy { owners: Grantee::User { id: seller } },
        Grantee::Group { id: group },
        Level::Full,
    );
    w.sharing_rule(
        Customers,
        RuleSource::Criteria { criteria: vec![crit("customer_type", CmpOp::Eq, json!("government"))] },
        Grantee::Department { id: service, include_sub: true },
        Level::Full,
    );
    let gov = |w: &mut World, owner| w.customer_with(owner, &[("customer_type", text("government"))]);
    let everything = with_team(shared(gov(&mut w, seller), ShareKey::User(agent), Level::Full), agent, Level::Full);
    let own = gov(&mut w, agent);
    let smb = w.customer_with(seller, &[("customer_type", text("smb"))]);

    for facts in [&everything, &own] {
        assert!(w.allows(agent, View, facts), "before the rule");
    }
    assert!(granted_by(&w, agent, View, &everything).len() >= 5, "{:?}", granted_by(&w, agent, View, &everything));

    let rule = w.restriction(
        Customers,
        Grantee::Role { id: agent_role },
        vec![crit("customer_type", CmpOp::Ne, json!("government"))],
        false,
    );
    for facts in [&everything, &own] {
        for action in ALL_ACTIONS {
            assert!(!w.allows(agent, *action, facts), "{action} after the rule");
        }
        assert_eq!(denied_by(&w, agent, View, facts), vec![Reason::Restriction { rule }]);
    }
    assert!(!granted_by(&w, agent, View, &everything).is_empty(), "the grants are still named");
    assert!(w.allows(agent, Edit, &smb), "other customers are untouched");
    assert!(w.allows(seller, View, &everything), "the rule applies to service agents only");

    // A customer with no type is not `!= government` in SQL either: hidden too.
    let untyped = w.customer(seller);
    assert!(!w.allows(agent, View, &untyped));

    // Contacts controlled by the account follow it, and the explanation names the account's restriction.
    w.config.roles[1].permissions.entry(Contacts).or_default().insert(View, Scope::All);
    w.default_for(Contacts, OrgDefault::ControlledByParent);
    let contact = w.child(Contacts, seller, &everything, &[("name", text("c"))]);
    assert!(!w.allows(agent, View, &contact));
    assert_eq!(denied_by(&w, agent, View, &contact), vec![Reason::Restriction { rule }]);
    let smb_contact = w.child(Contacts, seller, &smb, &[("name", text("c"))]);
    assert!(w.allows(agent, View, &smb_contact));
}

#[test]
fn an_administrator_sees_the_contacts_of_an_account_exactly_when_the_account_is_visible() {
    let mut w = World::new();
    let company = w.department(None);
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own).allow(Contacts, ALL_ACTIONS, Scope::Own));
    let admin_role = w.role("admin", |r| r.view_all());
    let seller = w.user(company, &[rep]);
    let admin = w.user(company, &[admin_role]);
    w.default_for(Contacts, OrgDefault::ControlledByParent);
    let gov = w.customer_with(seller, &[("customer_type", text("government"))]);
    let contact = w.child(Contacts, seller, &gov, &[("name", text("c"))]);
    assert!(w.allows(admin, View, &contact));
    assert_eq!(
        granted_by(&w, admin, View, &contact),
        vec![Reason::Parent { module: Customers }, Reason::Administrator { role: admin_role, modify_all: false }]
    );
    assert!(!w.allows(admin, Edit, &contact), "view-all does not edit");

    let rule = w.restriction(
        Customers,
        Grantee::Role { id: admin_role },
        vec![crit("customer_type", CmpOp::Ne, json!("government"))],
        false,
    );
    assert!(!w.allows(admin, View, &gov));
    assert!(!w.allows(admin, View, &contact), "the hidden account's contacts are hidden too");
    assert_eq!(denied_by(&w, admin, View, &contact), vec![Reason::Restriction { rule }]);
    w.config.restriction_rules[0].exempt_administrators = true;
    assert!(w.allows(admin, View, &contact));
}

#[test]
fn a_deactivated_or_locked_user_gets_nothing() {
    let mut w = World::new();
    let company = w.department(None);
    let boss = w.role("boss", |r| {
        r.modify_all().allow(Customers, ALL_ACTIONS, Scope::All).field(Customers, "phone", FieldAccess::Editable)
    });
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let manager_role = w.role("manager", |r| r.allow(Customers, ALL_ACTIONS, Scope::Subordinates));
    let admin = w.user(company, &[boss]);
    let manager = w.user(company, &[manager_role]);
    let leaver = w.user(company, &[rep]);
    w.reports_to(leaver, manager);
    w.default_for(Customers, OrgDefault::PublicReadWrite);
    let theirs = with_team(shared(w.customer(leaver), ShareKey::User(leaver), Level::Full), leaver, Level::Full);
    let admins = w.customer(admin);

    for status in [UserStatus::Locked, UserStatus::Deactivated] {
        for user in [admin, leaver] {
            w.user_mut(user).status = status;
            let access = w.access(user);
            assert!(!access.active);
            for action in ALL_ACTIONS {
                assert!(!access.can(Customers, *action));
                for facts in [&theirs, &admins] {
                    assert!(!w.allows(user, *action, facts), "{status:?} user {user}: {action}");
                }
            }
            assert_eq!(access.field_access(Customers, "phone"), FieldAccess::Hidden);
            assert_eq!(access.field_access(Customers, "id"), FieldAccess::Hidden);
            assert!(!access.may_assign_owner(Customers, user));
            assert!(!access.may_reveal(Customers));
        }
        // Their records stay visible to whoever could see them, and nobody can be made owner of a new record.
        assert!(w.allows(manager, Edit, &theirs));
        assert!(!w.access(manager).may_assign_owner(Customers, leaver));
        w.user_mut(admin).status = UserStatus::Active;
        w.user_mut(leaver).status = UserStatus::Active;
    }

    // Someone missing from the directory gets nothing either.
    let ghost = 9_999;
    assert!(!w.access(ghost).active);
    assert!(!w.allows(ghost, View, &theirs));
}

#[test]
fn may_assign_owner_respects_the_transfer_scope() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let east_team = w.department(Some(east));
    let west = w.department(Some(company));
    let rep = w.role("rep", |r| r.allow(Customers, &[View, Create, Edit], Scope::Own));
    let lead = w.role("team lead", |r| r.allow(Customers, &[View, Create, Transfer], Scope::Subordinates));
    let head = w.role("department head", |r| r.allow(Customers, &[Transfer], Scope::Department));
    let regional = w.role("regional director", |r| r.allow(Customers, &[Transfer], Scope::DepartmentTree));
    let everyone = w.role("sales operations", |r| r.allow(Customers, &[Transfer], Scope::All));
    let admin_role = w.role("admin", |r| r.modify_all());
    let team_lead = w.user(east, &[lead]);
    let east_head = w.user(east, &[head]);
    let director = w.user(east, &[regional]);
    let ops = w.user(company, &[everyone]);
    let admin = w.user(company, &[admin_role]);
    let report = w.user(east_team, &[rep]);
    let east_peer = w.user(east, &[rep]);
    let westerner = w.user(west, &[rep]);
    let gone = w.user(east_team, &[rep]);
    w.reports_to(report, team_lead);
    w.reports_to(gone, team_lead);
    w.user_mut(gone).status = UserStatus::Deactivated;

    let may = |user, owner| w.access(user).may_assign_owner(Customers, owner);
    assert!(may(report, report), "oneself, always");
    assert!(!may(report, east_peer), "a rep's transfer scope is empty");
    assert!(may(team_lead, report), "subordinates");
    assert!(!may(team_lead, east_peer));
    assert!(!may(team_lead, gone), "never to an inactive user");
    assert!(may(east_head, east_peer), "same department");
    assert!(!may(east_head, report), "`department` does not reach the sub-department");
    assert!(may(director, report), "`department_tree` does");
    assert!(!may(director, westerner));
    assert!(may(ops, westerner), "`all`");
    assert!(!may(ops, gone));
    assert!(!may(ops, 9_999), "nobody outside the directory");
    assert!(may(admin, westerner), "modify-all");
    // Oneself needs a module permission to create, import or transfer.
    let blind_role = w.role("no customers", |r| r.allow(Tickets, ALL_ACTIONS, Scope::Own));
    let blind = w.user(company, &[blind_role]);
    assert!(!w.access(blind).may_assign_owner(Customers, blind));
    assert!(w.access(blind).may_assign_owner(Tickets, blind));
}

#[test]
fn field_access_is_the_union_across_roles_and_hidden_when_no_role_views_the_module() {
    let mut w = World::new();
    let company = w.department(None);
    let narrow = w.role("narrow", |r| {
        r.allow(Customers, &[View], Scope::Own)
            .field(Customers, "phone", FieldAccess::Masked)
            .field(Customers, "email", FieldAccess::Hidden)
            .field(Customers, "annual_revenue", FieldAccess::Hidden)
    });
    let wider = w.role("wider", |r| {
        r.allow(Customers, &[View], Scope::Own).field(Customers, "phone", FieldAccess::ReadOnly).field(
            Customers,
            "annual_revenue",
            FieldAccess::Hidden,
        )
    });
    // Field permissions of a role without `view` on the module do not count.
    let blind = w.role("blind", |r| r.allow(Customers, &[Create], Scope::Own));
    let one = w.user(company, &[narrow]);
    let both = w.user(company, &[narrow, wider, blind]);
    let nothing = w.user(company, &[blind]);

    let a = w.access(one);
    assert_eq!(a.field_access(Customers, "phone"), FieldAccess::Masked);
    assert_eq!(a.field_access(Customers, "email"), FieldAccess::Hidden);
    assert_eq!(a.field_access(Customers, "name"), FieldAccess::Editable, "unlisted fields are editable");
    assert_eq!(a.field_access(Customers, "owner_id"), FieldAccess::ReadOnly, "system columns are read-only");

    let b = w.access(both);
    assert_eq!(b.field_access(Customers, "phone"), FieldAccess::ReadOnly, "most permissive wins");
    assert_eq!(b.field_access(Customers, "email"), FieldAccess::Editable, "unlisted in `wider` is editable");
    assert_eq!(b.field_access(Customers, "annual_revenue"), FieldAccess::Hidden, "hidden by every viewer");
    assert_eq!(b.field_access(Customers, "no_such_field"), FieldAccess::Hidden);

    let c = w.access(nothing);
    for field in ["name", "phone", "id", "owner_id"] {
        assert_eq!(
            c.field_access(Customers, field),
            FieldAccess::Hidden,
            "{field}: the module does not exist for them"
        );
    }
    assert_eq!(b.field_access(Contacts, "name"), FieldAccess::Hidden, "no role views contacts");
}

#[test]
fn explain_names_the_rule_path_and_agrees_with_decide() {
    let mut w = World::new();
    let company = w.department(None);
    let east = w.department(Some(company));
    let manager_role = w.role("manager", |r| r.allow(Customers, VIEW_EDIT, Scope::DepartmentTree));
    let rep = w.role("rep", |r| r.allow(Customers, ALL_ACTIONS, Scope::Own));
    let manager = w.user(company, &[manager_role, rep]);
    let seller = w.user(east, &[rep]);
    let rule = w.sharing_rule(
        Customers,
        RuleSource::Criteria { criteria: vec![crit("region", CmpOp::In, json!(["华东", "华南"]))] },
        Grantee::User { id: manager },
        Level::Read,
    );
    let customer = with_team(w.customer_with(seller, &[("region", text("华东"))]), manager, Level::Read);

    let access = w.access(manager);
    let e = access.explain(Customers, View, &customer);
    assert!(e.allowed && e.module_permission);
    assert_eq!(
        e.granted_by,
        vec![
            Reason::RoleScope { role: manager_role, scope: Scope::DepartmentTree },
            Reason::SharingRule { rule },
            Reason::RecordTeam,
        ]
    );
    assert!(e.denied_by.is_empty());
    let e = access.explain(Customers, Delete, &customer);
    assert!(!e.allowed && e.module_permission && e.granted_by.is_empty(), "{e:?}");

    // Scope `all` grants every record and still names itself.
    let all_role = w.role("all", |r| r.allow(Customers, &[View], Scope::All));
    let watcher = w.user(company, &[all_role]);
    assert_eq!(granted_by(&w, watcher, View, &customer), vec![Reason::RoleScope { role: all_role, scope: Scope::All }]);

    let restriction =
        w.restriction(Customers, Grantee::User { id: manager }, vec![crit("region", CmpOp::Eq, json!("华南"))], false);
    let access = w.access(manager);
    for action in ALL_ACTIONS {
        let e = access.explain(Customers, *action, &customer);
        assert_eq!(e.allowed, access.decide(Customers, *action, &customer));
        assert!(!e.allowed);
    }
    let e = access.explain(Customers, View, &customer);
    assert_eq!(e.denied_by, vec![Reason::Restriction { rule: restriction }]);
    assert_eq!(e.granted_by.len(), 3, "the grants the restriction overrides are still listed");

    // The explanation serializes with the source named, for the API.
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["denied_by"][0]["source"], "restriction");
    assert_eq!(json["granted_by"][0]["scope"], "department_tree");
}

#[test]
fn a_user_of_another_organization_gets_nothing() {
    let mut w = World::new();
    let company = w.department(None);
    let admin_role = w.role("admin", |r| r.modify_all().allow(Customers, ALL_ACTIONS, Scope::All));
    let admin = w.user(company, &[admin_role]);
    w.default_for(Customers, OrgDefault::PublicReadWrite);
    let customer = shared(w.customer(admin), ShareKey::User(admin), Level::Full);

    // The same people and configuration in another organization.
    let mut other = World::new();
    other.org = ORG + 1;
    other.config = w.config.clone();
    other.departments = w.departments.clone();
    other.users = w.users.clone();
    let access = other.access(admin);
    assert_eq!(access.org, ORG + 1);
    for action in ALL_ACTIONS {
        assert!(!access.decide(Customers, *action, &customer));
        let e = access.explain(Customers, *action, &customer);
        assert!(!e.allowed && e.granted_by.is_empty() && e.denied_by.is_empty(), "{e:?}");
        assert!(w.allows(admin, *action, &customer), "at home: {action}");
    }
}
