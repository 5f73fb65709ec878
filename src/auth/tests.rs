//! The gate's decisions, on credentials files written as `suivi credentials` writes them.

use std::collections::BTreeSet;

use chrono::{NaiveDate, Utc};

use super::file::{CredentialsFile, Scope, StoredCredential, hash_token};
use super::*;

const DEFAULTS: QuotaDefaults = QuotaDefaults {
    events_per_second: 100,
    new_campaigns_per_day: 1,
    max_batch_events: 10,
};

fn credential(id: &str, token: &str, scopes: &[Scope]) -> StoredCredential {
    StoredCredential {
        id: id.to_owned(),
        hash: hash_token(token),
        created: Utc::now(),
        scopes: scopes.iter().copied().collect(),
        sources: BTreeSet::new(),
        campaigns: BTreeSet::new(),
        totals: false,
        events_per_second: None,
        new_campaigns_per_day: None,
        revoked: None,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// A file with an LMS (writes gendform3 for gendarmerie), a partner (reads gendarmerie), an
/// operator, an admin and a revoked credential.
fn programme() -> CredentialsFile {
    let mut lms = credential("gendform3", "t-lms", &[Scope::EventsWrite]);
    lms.sources = set(&["gendform3"]);
    lms.campaigns = set(&["gendarmerie"]);
    let mut partner = credential(
        "gendarmerie",
        "t-partner",
        &[Scope::FiguresRead, Scope::ReportsRead],
    );
    partner.campaigns = set(&["gendarmerie"]);
    let mut operator = credential("ops", "t-ops", &[Scope::FiguresRead, Scope::ReportsRead]);
    operator.totals = true;
    let mut revoked = credential("old", "t-old", &[Scope::Admin]);
    revoked.revoked = Some(Utc::now());
    CredentialsFile {
        credentials: vec![
            lms,
            partner,
            operator,
            credential("root", "t-root", &[Scope::Admin]),
            revoked,
        ],
    }
}

fn gate_of(file: &CredentialsFile) -> (tempfile::TempDir, Gate) {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("credentials.toml");
    file.write(&path).expect("the file is written");
    let gate = Gate::load(&path, DEFAULTS, None).expect("the gate loads");
    (directory, gate)
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

#[test]
fn http_basic_presents_its_password_as_the_token_whatever_the_username() {
    use base64::Engine;
    let (_directory, gate) = gate_of(&programme());
    let basic = |credentials: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
        .into_bytes()
    };
    for username in ["moodle", "", "t-ops"] {
        let caller = gate
            .authenticate(Some(&basic(&format!("{username}:t-partner"))))
            .expect("the password is a known token");
        assert_eq!(&**caller.id(), "gendarmerie", "username {username:?}");
    }
    assert_eq!(
        gate.authenticate(Some(&basic("t-partner"))).err(),
        Some(Unauthenticated::Malformed),
        "no colon: not user:password"
    );
    assert_eq!(
        gate.authenticate(Some(&basic("moodle:"))).err(),
        Some(Unauthenticated::Malformed),
        "an empty password"
    );
    assert_eq!(
        gate.authenticate(Some(b"Basic not*base64")).err(),
        Some(Unauthenticated::Malformed)
    );
    assert_eq!(
        gate.authenticate(Some(&basic("moodle:t-old"))).err(),
        Some(Unauthenticated::Revoked)
    );
    assert_eq!(
        gate.authenticate(Some(b"Digest t-partner")).err(),
        Some(Unauthenticated::Malformed)
    );
}

#[test]
fn a_token_is_let_in_as_its_credential_and_nothing_else_is() {
    let (_directory, gate) = gate_of(&programme());
    let caller = gate
        .authenticate(Some(&bearer("t-partner")))
        .expect("a known token");
    assert_eq!(&**caller.id(), "gendarmerie");
    assert_eq!(
        gate.authenticate(Some(b"bearer   t-ops  "))
            .map(|c| c.id().to_string()),
        Ok("ops".to_owned()),
        "the scheme is case-insensitive and spaces around the token are ignored"
    );
    assert_eq!(
        gate.authenticate(None).err(),
        Some(Unauthenticated::Missing)
    );
    assert_eq!(
        gate.authenticate(Some(b"Basic dXNlcjpwYXNz")).err(),
        Some(Unauthenticated::Unknown),
        "HTTP Basic user:pass presents the token pass"
    );
    assert_eq!(
        gate.authenticate(Some(b"Bearer")).err(),
        Some(Unauthenticated::Malformed)
    );
    assert_eq!(
        gate.authenticate(Some(&bearer("t-partnerx"))).err(),
        Some(Unauthenticated::Unknown)
    );
    assert_eq!(
        gate.authenticate(Some(&bearer("t-old"))).err(),
        Some(Unauthenticated::Revoked)
    );
    assert!(!gate.is_open());
}

#[test]
fn grants_reach_their_campaigns_and_scopes_only() {
    let (_directory, gate) = gate_of(&programme());
    let caller = |token: &str| gate.authenticate(Some(&bearer(token))).expect("known");
    let (lms, partner, ops, root) = (
        caller("t-lms"),
        caller("t-partner"),
        caller("t-ops"),
        caller("t-root"),
    );
    assert!(partner.may_read(Read::Figures, "gendarmerie"));
    assert!(partner.may_read(Read::Reports, "gendarmerie"));
    assert!(!partner.may_read(Read::Figures, "cnam"));
    assert!(!partner.may_read_totals(Read::Figures));
    assert!(partner.require_write().is_err());
    assert!(lms.require_read(Read::Figures).is_err());
    assert!(!lms.may_read(Read::Figures, "gendarmerie"));
    assert!(lms.require_write().is_ok());
    assert!(ops.may_read(Read::Figures, "cnam") && ops.may_read_totals(Read::Reports));
    assert!(ops.require_write().is_err());
    assert!(root.may_read_totals(Read::Figures) && root.require_write().is_ok());
    let open = Caller::anonymous();
    assert!(open.may_read(Read::Reports, "anything") && open.require_write().is_ok());
}

#[test]
fn a_writer_sends_its_sources_and_campaigns_only() {
    let (_directory, gate) = gate_of(&programme());
    let lms = gate.authenticate(Some(&bearer("t-lms"))).expect("known");
    assert_eq!(lms.check_event("gendform3", "gendarmerie", true), Ok(()));
    assert_eq!(
        lms.check_event("openclassrooms", "gendarmerie", true)
            .map_err(|r| r.code()),
        Err("source_not_allowed")
    );
    assert_eq!(
        lms.check_event("gendform3", "cnam", true)
            .map_err(|r| r.code()),
        Err("campaign_not_allowed")
    );
    // An event naming no campaign is counted as the programme attributes it.
    assert_eq!(lms.check_event("gendform3", "direct", false), Ok(()));
    let root = gate.authenticate(Some(&bearer("t-root"))).expect("known");
    assert_eq!(root.check_event("anything", "cnam", true), Ok(()));
}

#[test]
fn quotas_apply_per_credential_and_survive_a_reload() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("credentials.toml");
    let mut file = programme();
    file.write(&path).expect("written");
    let gate = Gate::load(&path, DEFAULTS, None).expect("the gate loads");
    let lms = gate.authenticate(Some(&bearer("t-lms"))).expect("known");
    // The bucket holds a second of events (100), at least one batch (10).
    assert!(lms.take_events(100).is_ok());
    assert!(lms.take_events(10).is_err());
    let day = NaiveDate::from_ymd_opt(2026, 11, 30).expect("a date");
    assert!(lms.open_campaign("new-one", day).is_ok());
    assert_eq!(
        lms.open_campaign("new-two", day).map_err(|r| r.code()),
        Err("campaign_quota_exceeded")
    );
    // A reload that leaves the LMS's limits as they were keeps its state.
    file.credentials
        .push(credential("extra", "t-extra", &[Scope::Admin]));
    file.write(&path).expect("written");
    assert!(gate.reload(true).expect("reloads"));
    let lms = gate.authenticate(Some(&bearer("t-lms"))).expect("known");
    assert!(lms.take_events(10).is_err(), "the bucket was not refilled");
    assert!(gate.authenticate(Some(&bearer("t-extra"))).is_ok());
    // Another limit is another bucket.
    file.credentials[0].events_per_second = Some(0);
    file.write(&path).expect("written");
    assert!(gate.reload(false).expect("reloads"));
    let lms = gate.authenticate(Some(&bearer("t-lms"))).expect("known");
    assert!(lms.take_events(1_000_000).is_ok(), "0 is no limit");
}

#[test]
fn a_broken_file_leaves_the_credentials_in_force() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let path = directory.path().join("credentials.toml");
    programme().write(&path).expect("written");
    let gate = Gate::load(&path, DEFAULTS, None).expect("the gate loads");
    std::fs::write(&path, "[[credential]]\nid = ").expect("written");
    assert!(gate.reload(true).is_err());
    assert!(gate.authenticate(Some(&bearer("t-ops"))).is_ok());
    // Revoking takes effect on the next reload.
    let mut file = programme();
    file.get_mut("ops").expect("ops").revoked = Some(Utc::now());
    file.write(&path).expect("written");
    assert!(gate.reload(true).expect("reloads"));
    assert_eq!(
        gate.authenticate(Some(&bearer("t-ops"))).err(),
        Some(Unauthenticated::Revoked)
    );
}

#[test]
fn metrics_need_the_metrics_token_only_when_one_is_set() {
    let open = Gate::open(None);
    assert!(open.allows_metrics(None).is_ok());
    let guarded = Gate::open(Some("scrape-me"));
    assert!(guarded.allows_metrics(Some(b"Bearer scrape-me")).is_ok());
    assert_eq!(guarded.allows_metrics(None), Err(Unauthenticated::Missing));
    assert_eq!(
        guarded.allows_metrics(Some(b"Bearer scrape-you")),
        Err(Unauthenticated::Unknown)
    );
    // An open gate lets every other request in.
    assert!(guarded.authenticate(None).is_ok());
}

#[test]
fn a_signed_link_grants_what_a_partner_read_credential_grants_until_its_key_changes() {
    let (directory, gate) = gate_of(&programme());
    let key_path = link::key_path(&directory.path().join("credentials.toml"));
    let expires = Utc::now() + chrono::Days::new(90);
    // No key yet: no link is valid.
    let key = link::LinkKey::generate();
    let token = key.sign("gendarmerie", expires).expect("signed");
    assert_eq!(
        gate.authenticate_link(&token).err(),
        Some(Unauthenticated::LinkInvalid)
    );
    key.write(&key_path).expect("the key is written");
    assert!(gate.reload(true).expect("reloads"));

    let by_link = gate.authenticate_link(&token).expect("a valid link");
    let by_header = gate
        .authenticate(Some(&bearer(&token)))
        .expect("a link also works as a bearer token");
    let partner = gate
        .authenticate(Some(&bearer("t-partner")))
        .expect("the partner's credential");
    for caller in [&by_link, &by_header] {
        assert_eq!(&**caller.id(), "link:gendarmerie");
        for read in [Read::Figures, Read::Reports] {
            assert_eq!(caller.campaigns(read), partner.campaigns(read));
            for campaign in ["gendarmerie", "la-poste", "*"] {
                assert_eq!(
                    caller.may_read(read, campaign),
                    partner.may_read(read, campaign),
                    "{campaign}"
                );
            }
        }
        assert!(caller.require_write().is_err());
        assert!(gate.current(caller).is_ok());
    }

    let expired = key
        .sign("gendarmerie", Utc::now() - chrono::Duration::seconds(1))
        .expect("signed");
    assert!(matches!(
        gate.authenticate_link(&expired),
        Err(Unauthenticated::LinkExpired { .. })
    ));
    let mut altered = token.clone();
    altered.pop();
    assert_eq!(
        gate.authenticate_link(&altered).err(),
        Some(Unauthenticated::LinkInvalid)
    );

    // A new key withdraws every link, open streams included.
    link::LinkKey::generate()
        .write(&key_path)
        .expect("the key is replaced");
    assert!(gate.reload(true).expect("reloads"));
    assert_eq!(
        gate.authenticate_link(&token).err(),
        Some(Unauthenticated::LinkInvalid)
    );
    assert_eq!(
        gate.current(&by_link).err(),
        Some(Unauthenticated::LinkInvalid)
    );
}
