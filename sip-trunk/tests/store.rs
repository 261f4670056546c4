//! The trunk and number store on SQLite and PostgreSQL.

use sip_trunk::store::{self, TrunkError, TrunkSettings};
use sip_trunk::{Provider, TrunkTransport};

fn twilio() -> TrunkSettings {
    TrunkSettings {
        provider: Some(Provider::Twilio),
        host: Some("acme.pstn.twilio.com".into()),
        transport: Some(TrunkTransport::Tls),
        username: Some("acme".into()),
        password: Some("s3cret-trunk-pass".into()),
        caller_ids: Some(vec!["+15551230000".into(), "+1555999*".into()]),
        inbound_sources: Some(vec!["54.172.60.0/30".into()]),
        ..TrunkSettings::default()
    }
}

#[tokio::test]
async fn trunks_and_numbers_on_both_databases() {
    for tdb in storage::testing::all().await {
        let db = &tdb.db;
        let t = store::add(db, "twilio-us", &twilio()).await.expect("add");
        assert_eq!(t.max_cps, 30, "profile default");
        assert!(t.has_password);
        assert_eq!(t.codecs, vec!["PCMU", "PCMA"]);
        let json = serde_json::to_string(&t).expect("json");
        assert!(!json.contains("s3cret"), "{json}");
        let secret = store::secret(db, "twilio-us").await.expect("secret");
        assert_eq!(secret.password, "s3cret-trunk-pass");
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert!(matches!(
            store::add(db, "twilio-us", &twilio()).await,
            Err(TrunkError::Exists(_))
        ));

        let telnyx = TrunkSettings {
            provider: Some(Provider::Telnyx),
            host: Some("sip.telnyx.com".into()),
            priority: Some(20),
            ..TrunkSettings::default()
        };
        store::add(db, "telnyx", &telnyx).await.expect("add telnyx");
        let names: Vec<String> = store::trunks(db)
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["twilio-us", "telnyx"], "by priority");

        // Bad input names the field, nothing is written.
        for (bad, field) in [
            (
                TrunkSettings {
                    host: Some("bad host!".into()),
                    ..twilio()
                },
                "host",
            ),
            (
                TrunkSettings {
                    caller_ids: Some(vec!["5551234".into()]),
                    ..twilio()
                },
                "caller_ids",
            ),
            (
                TrunkSettings {
                    inbound_sources: Some(vec!["10.0.0.0/33".into()]),
                    ..twilio()
                },
                "inbound_sources",
            ),
            (
                TrunkSettings {
                    max_cps: Some(0),
                    ..twilio()
                },
                "max_cps",
            ),
        ] {
            match store::add(db, "bad", &bad).await {
                Err(TrunkError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(
            store::trunk(db, "bad").await,
            Err(TrunkError::Unknown(_))
        ));

        // Update keeps what is not named; the password only changes when given.
        let u = store::update(
            db,
            "twilio-us",
            &TrunkSettings {
                enabled: Some(false),
                max_cps: Some(5),
                ..TrunkSettings::default()
            },
        )
        .await
        .expect("update");
        assert!(!u.enabled);
        assert_eq!(u.max_cps, 5);
        assert_eq!(u.host, "acme.pstn.twilio.com");
        assert_eq!(
            store::secret(db, "twilio-us").await.expect("s").password,
            "s3cret-trunk-pass"
        );

        // Each host's view of the trunk's health.
        let mut h = sip_trunk::TrunkHealth::default();
        h.record(sip_trunk::HealthPolicy::default(), Some(12.5), "200 OK");
        store::record_health(db, u.id, "node-a", &h, 5_000)
            .await
            .expect("health");
        h.record(sip_trunk::HealthPolicy::default(), None, "timeout");
        store::record_health(db, u.id, "node-a", &h, 6_000)
            .await
            .expect("health again");
        let rows = store::health(db).await.expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (
                rows[0].state.as_str(),
                rows[0].latency_ms,
                rows[0].checked_at
            ),
            ("up", Some(12.5), 6_000)
        );
        assert_eq!(rows[0].last_result, "timeout");

        // Numbers.
        let n = store::add_number(db, "+15551230000", "twilio-us")
            .await
            .expect("number");
        assert_eq!(n.trunk, "twilio-us");
        assert!(matches!(
            store::add_number(db, "+15551230000", "telnyx").await,
            Err(TrunkError::NumberExists(_))
        ));
        assert!(matches!(
            store::add_number(db, "5551230000", "telnyx").await,
            Err(TrunkError::Invalid { .. })
        ));
        let n = store::assign_number(db, "+15551230000", "company", "acme", "seat:desk1")
            .await
            .expect("assign");
        assert_eq!(n.owner_ref.as_deref(), Some("acme"));
        assert_eq!(store::numbers(db).await.expect("numbers").len(), 1);
        match store::remove(db, "twilio-us").await {
            Err(TrunkError::InUse {
                count: 1, example, ..
            }) => assert_eq!(example, "+15551230000"),
            other => panic!("{other:?}"),
        }
        store::remove_number(db, "+15551230000")
            .await
            .expect("remove number");
        store::remove(db, "twilio-us").await.expect("remove trunk");
        assert!(matches!(
            store::remove_number(db, "+15551230000").await,
            Err(TrunkError::UnknownNumber(_))
        ));
    }
}

/// Prefixes, the change topic every write bumps (running servers reload on it), and the
/// per-attempt call log, on both backends.
#[tokio::test]
async fn routing_columns_change_topic_and_attempts_on_both_databases() {
    for tdb in storage::testing::all().await {
        let db = &tdb.db;
        let mut watcher =
            storage::ChangeWatcher::new(db.clone(), std::time::Duration::from_millis(20))
                .await
                .expect("watcher");
        let s = TrunkSettings {
            prefixes: Some(vec!["+44".into(), "+331".into()]),
            ..twilio()
        };
        let t = store::add(db, "eu", &s).await.expect("add");
        assert_eq!(t.prefixes, vec!["+44", "+331"]);
        let changed = tokio::time::timeout(std::time::Duration::from_secs(5), watcher.changed())
            .await
            .expect("a change within 5 s")
            .expect("changes");
        assert_eq!(changed, vec![storage::Topic::Trunks]);
        let bad = TrunkSettings {
            prefixes: Some(vec!["44".into()]),
            ..TrunkSettings::default()
        };
        assert!(matches!(
            store::update(db, "eu", &bad).await,
            Err(TrunkError::Invalid {
                field: "prefixes",
                ..
            })
        ));
        let secrets = store::secrets(db).await.expect("secrets");
        assert_eq!(secrets[0].password, "s3cret-trunk-pass");

        let mut a = store::Attempt {
            call_id: "c1@x".into(),
            seq: 1,
            node_id: "n1".into(),
            direction: sip_trunk::AttemptDirection::Outbound,
            trunk: "eu".into(),
            target: "sip:+442071234567@acme.pstn.twilio.com".into(),
            started_at: 1_000,
            ended_at: None,
            status: None,
            outcome: String::new(),
        };
        store::record_attempt(db, &a).await.expect("start");
        a.ended_at = Some(1_250);
        a.status = Some(503);
        a.outcome = "rejected 503 → next trunk".into();
        store::record_attempt(db, &a).await.expect("end");
        let b = store::Attempt {
            seq: 2,
            trunk: "backup".into(),
            status: Some(200),
            outcome: "answered".into(),
            ..a.clone()
        };
        store::record_attempt(db, &b).await.expect("second");
        let got = store::attempts(db, "c1@x").await.expect("attempts");
        assert_eq!(got, vec![a, b]);
        assert!(store::attempts(db, "other").await.expect("none").is_empty());
    }
}
