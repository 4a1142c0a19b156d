//! `crm policy export|apply` (policy as code) and `crm explain`. They act as a named user of the organization
//! (default `admin`), through the same permission-checked paths as the API, and are audited as that user.

use anyhow::{Context, anyhow, bail};
use crm_domain::{Action, Module};
use crm_policy::PolicyConfig;
use crm_store::{Principal, Store};

/// Resolves `--organization` (default: the only organization, or `demo`) and `--as` to a principal.
pub async fn principal(store: &Store, organization: Option<&str>, username: &str) -> anyhow::Result<Principal> {
    let sys = store.unscoped_system_access();
    let orgs = sys.organizations().await?;
    let org = match organization {
        Some(slug) => {
            orgs.iter().find(|(_, s)| s == slug).map(|(id, _)| *id).ok_or_else(|| anyhow!("no organization {slug}"))?
        }
        None if orgs.len() == 1 => orgs[0].0,
        None => bail!("several organizations exist: name one with --organization"),
    };
    let user = sys
        .user_ids(org)
        .await?
        .into_iter()
        .find(|(name, _)| name == username)
        .map(|(_, id)| id)
        .ok_or_else(|| anyhow!("no user {username} in the organization"))?;
    Ok(sys.principal_for(org, user).await?)
}

/// The organization's access configuration as pretty JSON (stable key order: diffable).
pub async fn export(store: &Store, p: Principal) -> anyhow::Result<String> {
    let (policy, version) = store.scoped(p).admin_policy().await?;
    let mut doc = serde_json::to_value(&policy)?;
    if let Some(obj) = doc.as_object_mut() {
        obj.insert(
            "$comment".into(),
            format!("CRM access policy, version {version}. Apply with `crm policy apply FILE --dry-run`.").into(),
        );
    }
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

/// Applies (or with `dry_run` previews) a policy file; prints who gains and loses access.
pub async fn apply(store: &Store, p: Principal, text: &str, dry_run: bool) -> anyhow::Result<()> {
    let mut doc: serde_json::Value = serde_json::from_str(text).context("the policy file is not valid JSON")?;
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("$comment");
    }
    let policy: PolicyConfig =
        serde_json::from_value(doc).context("the policy file does not match the policy format")?;
    let change = store.scoped(p).admin_set_policy(&policy, dry_run).await?;
    if change.changes.is_empty() {
        println!("No user's access changes.");
    }
    for c in &change.changes {
        println!(
            "{:<16} {:<14} visible {:>6} -> {:<6} gained {:?} lost {:?}",
            c.username, c.module, c.visible_before, c.visible_after, c.actions_gained, c.actions_lost
        );
    }
    if dry_run {
        println!("Dry run: nothing applied (current version {}).", change.version);
    } else {
        println!("Applied: policy version {}.", change.version);
    }
    Ok(())
}

/// May `user` do `action` on a record, and why.
pub async fn explain(
    store: &Store,
    p: Principal,
    user: &str,
    module: &str,
    record: i64,
    action: &str,
) -> anyhow::Result<bool> {
    let module: Module = module.parse().map_err(|_| anyhow!("unknown module {module}"))?;
    let action: Action = action.parse().map_err(|_| anyhow!("unknown action {action}"))?;
    let sys = store.unscoped_system_access();
    let uid = sys
        .user_ids(p.org)
        .await?
        .into_iter()
        .find(|(name, _)| name == user)
        .map(|(_, id)| id)
        .ok_or_else(|| anyhow!("no user {user}"))?;
    let e = store.scoped(p).explain_for(uid, module, action, record).await?;
    println!("{}", serde_json::to_string_pretty(&e)?);
    Ok(e.allowed)
}
