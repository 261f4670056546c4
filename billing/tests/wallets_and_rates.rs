//! Wallets, the ledger and the rate deck in the database, on SQLite and PostgreSQL.

mod common;

use billing::import::{parse_deck, DeckFormat, ImportOptions};
use billing::{BillingError, LedgerKind, Movement, NewWallet, OwnerKind, Refusal};
use common::*;

fn movement(wallet_id: i64, amount: i64, key: &str) -> Movement {
    Movement {
        wallet_id,
        kind: if amount > 0 {
            LedgerKind::Purchase
        } else {
            LedgerKind::Adjustment
        },
        amount,
        idempotency_key: key.into(),
        reference: None,
        reason: "test".into(),
    }
}

#[tokio::test]
async fn replaying_a_movement_changes_nothing() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        let w = funded_wallet(&b, "acme", 0).await;
        let first = b.post(movement(w, 5_000_000, "pay_1")).await.expect("post");
        assert!(first.applied);
        assert_eq!(first.entry.balance_after, 5_000_000);
        let again = b
            .post(movement(w, 5_000_000, "pay_1"))
            .await
            .expect("replay");
        assert!(!again.applied, "{:?}", db.db.backend());
        assert_eq!(again.entry.id, first.entry.id);
        assert_eq!(b.wallet(w).await.expect("wallet").balance, 5_000_000);
        // Same key, different movement: refused, nothing changes.
        let conflict = b.post(movement(w, 7_000_000, "pay_1")).await;
        assert!(matches!(
            conflict,
            Err(BillingError::IdempotencyConflict(_))
        ));
        assert_eq!(b.wallet(w).await.expect("wallet").balance, 5_000_000);
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn debits_never_go_below_the_free_balance() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        let w = funded_wallet(&b, "acme", 1_000_000).await;
        let r = b.post(movement(w, -1_500_000, "adj_1")).await;
        assert!(
            matches!(
                r,
                Err(BillingError::InsufficientFunds {
                    available: 1_000_000,
                    requested: 1_500_000
                })
            ),
            "{r:?}"
        );
        b.post(movement(w, -400_000, "adj_2")).await.expect("debit");
        assert_eq!(b.wallet(w).await.expect("wallet").balance, 600_000);
        assert_eq!(b.ledger(w, 10).await.expect("ledger").len(), 2);
        assert!(b.post(movement(w, 0, "adj_3")).await.is_err());
        let bad_kind = Movement {
            kind: LedgerKind::CallCharge,
            ..movement(w, -1, "adj_4")
        };
        assert!(matches!(
            b.post(bad_kind).await,
            Err(BillingError::Invalid(_))
        ));
        assert!(matches!(
            b.post(movement(999, 1, "adj_5")).await,
            Err(BillingError::UnknownWallet(999))
        ));
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn one_wallet_per_owner() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        let w = funded_wallet(&b, "acme", 0).await;
        let dup = b
            .create_wallet(NewWallet {
                owner_kind: OwnerKind::Company,
                owner_ref: "acme".into(),
                name: String::new(),
                allowed_countries: None,
                max_rate_per_min: None,
            })
            .await;
        assert!(matches!(dup, Err(BillingError::WalletExists { id, .. }) if id == w));
        let person = b
            .create_wallet(NewWallet {
                owner_kind: OwnerKind::Person,
                owner_ref: "acme".into(),
                name: "a person called acme".into(),
                allowed_countries: Some(vec!["gb".into(), "US".into()]),
                max_rate_per_min: Some(100_000),
            })
            .await
            .expect("person wallet");
        assert_eq!(
            person.allowed_countries,
            Some(vec!["GB".into(), "US".into()])
        );
        assert_eq!(b.wallets().await.expect("wallets").len(), 2);
    }
}

const TWILIO_DECK: &str = "\
ISO,Country,Description,Price / min,Origination Prefixes,Destination Prefixes
GB,United Kingdom,United Kingdom,0.0140,,44
GB,United Kingdom,United Kingdom - London,0.0120,,\"4420, 4421\"
GB,United Kingdom,United Kingdom - Mobile,0.0425,,\"447400, 447401, 447402\"
FR,France,France,0.0200,,33
";

#[tokio::test]
async fn imported_decks_are_looked_up_by_longest_prefix() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        let opts = ImportOptions {
            format: DeckFormat::Twilio,
            ..ImportOptions::default()
        };
        let rates = parse_deck(TWILIO_DECK.as_bytes(), &opts).expect("deck");
        let mut calls = Vec::new();
        let summary = b
            .import_rates(&rates, false, &mut |done, total| calls.push((done, total)))
            .await
            .expect("import");
        assert_eq!(summary.written, 7);
        assert_eq!(summary.total, 7);
        assert_eq!(calls.last(), Some(&(7, 7)));
        let q = b.quote("+442071234567", "").expect("quote");
        assert_eq!(q.rate.prefix, "4420");
        assert_eq!(q.rate.tariff.rate_per_min, 12_000);
        assert_eq!(
            b.quote("+447400123456", "").expect("mobile").rate.prefix,
            "447400"
        );
        assert!(matches!(
            b.quote("+4930123456", ""),
            Err(Refusal::NoRate { .. })
        ));
        // A second engine (another process) sees the deck after a reload.
        let other = billing(&db, fake_clock(), "n2").await;
        assert_eq!(other.rate_trie().len(), 7);
        // Re-importing updates in place; --replace drops what the new deck lacks.
        let cheaper = TWILIO_DECK.replace("0.0120", "0.0100");
        let rates = parse_deck(cheaper.as_bytes(), &opts).expect("deck");
        b.import_rates(&rates, false, &mut |_, _| {})
            .await
            .expect("reimport");
        assert_eq!(
            b.quote("+442071234567", "")
                .expect("q")
                .rate
                .tariff
                .rate_per_min,
            10_000
        );
        let only_fr = parse_deck(
            "ISO,Country,Description,Price / min,Origination Prefixes,Destination Prefixes\nFR,France,France,0.02,,33\n"
                .as_bytes(),
            &opts,
        )
        .expect("deck");
        let s = b
            .import_rates(&only_fr, true, &mut |_, _| {})
            .await
            .expect("replace");
        assert_eq!((s.deleted, s.total), (7, 1));
        assert!(b.quote("+442071234567", "").is_err());
        assert_eq!(b.list_rates(Some("3"), 10).await.expect("list").len(), 1);
    }
}

#[tokio::test]
async fn block_list_and_wallet_policy_refuse_calls() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        add_rate(&b, "44", "GB", tariff(10_000, 0, 60, 60)).await;
        add_rate(&b, "4470", "GB", tariff(900_000, 0, 60, 60)).await;
        add_rate(&b, "33", "FR", tariff(20_000, 0, 60, 60)).await;
        let w = funded_wallet(&b, "acme", 10_000_000).await;
        let authorize = |callee: &str, id: &str| billing::AuthorizeRequest {
            call_id: id.into(),
            wallet_id: w,
            caller: String::new(),
            callee: callee.into(),
        };
        // Above the global maximum ($0.50/min by default).
        let r = b.authorize(authorize("+447012345678", "c1")).await;
        assert!(
            matches!(r, Err(BillingError::Refused(Refusal::RateTooHigh { .. }))),
            "{r:?}"
        );
        b.block_prefix("+4420", "test block").await.expect("block");
        let r = b.authorize(authorize("+442071234567", "c2")).await;
        assert!(
            matches!(r, Err(BillingError::Refused(Refusal::Blocked { .. }))),
            "{r:?}"
        );
        assert!(b.unblock_prefix("4420").await.expect("unblock"));
        b.update_wallet_policy(w, Some(Some(vec!["FR".into()])), None)
            .await
            .expect("policy");
        let r = b.authorize(authorize("+442071234567", "c3")).await;
        assert!(
            matches!(r, Err(BillingError::Refused(Refusal::CountryNotAllowed { ref country })) if country == "GB"),
            "{r:?}"
        );
        b.authorize(authorize("+33142685300", "c4"))
            .await
            .expect("France is allowed");
        let r = b.authorize(authorize("+1 not a number", "c5")).await;
        assert!(
            matches!(r, Err(BillingError::Refused(Refusal::InvalidNumber { .. }))),
            "{r:?}"
        );
        // Nothing was reserved by the refused calls.
        let wal = b.wallet(w).await.expect("wallet");
        assert_eq!(wal.reserved, 20_000);
        assert_invariants(&b, w).await;
    }
}
