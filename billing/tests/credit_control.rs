//! Real-time credit control against a real database (SQLite and PostgreSQL): exact hangup
//! deadlines with a fake clock, idempotent settlement, expiry of dead hosts'
//! reservations, and hundreds of concurrent calls on one wallet.

mod common;

use std::sync::Arc;

use billing::{
    AuthorizeRequest, BillingError, Clock, EndCause, LedgerKind, Meter, MeterEvent, Movement,
    Refusal, SettleRequest, Tariff,
};
use common::*;

fn auth(call_id: &str, wallet_id: i64, callee: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        call_id: call_id.into(),
        wallet_id,
        caller: "+14155550100".into(),
        callee: callee.into(),
    }
}

fn settle_at(call_id: &str, ended_at: i64, cause: EndCause) -> SettleRequest {
    SettleRequest {
        call_id: call_id.into(),
        ended_at,
        cause,
        trunk: Some("test-trunk".into()),
        quality: Some(serde_json::json!({"mos": 4.3})),
    }
}

/// The longest talk time a budget buys, found by walking the block grid (independent of
/// `Tariff::max_affordable_secs`).
fn brute_force_secs(t: &Tariff, budget: i64) -> i64 {
    let mut best = 0;
    let mut s = t.increment_first;
    while t.connect_fee + (s * t.rate_per_min + 59) / 60 <= budget {
        best = s;
        s += t.increment_next;
    }
    best
}

/// Drives a meter on the fake clock until it hangs the call up; returns (deadline, now).
async fn drive_until_hangup(
    b: &billing::Billing,
    clock: &FakeClockHandle,
    meter: &mut Meter,
) -> (i64, i64) {
    for _ in 0..10_000 {
        let at = meter.next_timeout().expect("the meter has a deadline");
        clock.set(at);
        while let Some(ev) = meter.poll(at) {
            match ev {
                MeterEvent::Extend { call_id } => {
                    let g = b.extend(&call_id).await.expect("extend");
                    meter.extended(&g, clock.now_ms());
                }
                MeterEvent::HangUp { deadline, .. } => return (deadline, at),
            }
        }
    }
    panic!("no hangup after 10 000 meter steps");
}

type FakeClockHandle = Arc<billing::FakeClock>;

#[tokio::test]
async fn hangup_deadline_is_exact_to_the_millisecond() {
    // $1.00 in the wallet, $0.07/min with a $0.03 connect fee.
    let cases = [
        (tariff(70_000, 30_000, 60, 60), 780),
        (tariff(70_000, 30_000, 6, 6), 828),
        (tariff(70_000, 30_000, 1, 1), 831),
        (tariff(123_457, 0, 1, 1), 485),
        (tariff(70_000, 30_000, 30, 6), 828),
    ];
    for db in storage::testing::all().await {
        for (i, (t, expect_secs)) in cases.iter().enumerate() {
            let clock = fake_clock();
            let b = billing(&db, clock.clone(), "n1").await;
            add_rate(&b, "44", "GB", *t).await;
            let w = funded_wallet(&b, &format!("w{i}"), 1_000_000).await;
            assert_eq!(brute_force_secs(t, 1_000_000), *expect_secs, "{t:?}");

            let call = format!("call-{i}");
            let g = b
                .authorize(auth(&call, w, "+442071234567"))
                .await
                .expect("authorize");
            assert!(g.granted_ms >= 60_000 && !g.final_units);
            let mut meter = Meter::for_billing(&b);
            meter.track(&g, clock.now_ms());
            clock.advance(7_321); // ringing
            let answered_at = clock.now_ms();
            let g = b.answer(&call, answered_at).await.expect("answer");
            meter.track(&g, answered_at);

            let (deadline, now) = drive_until_hangup(&b, &clock, &mut meter).await;
            assert_eq!(
                deadline,
                answered_at + expect_secs * 1000,
                "{t:?} on {:?}",
                db.db.backend()
            );
            assert_eq!(now, deadline, "the meter hangs up at the deadline itself");

            let cdr = b
                .settle(settle_at(&call, now, EndCause::CreditExhausted))
                .await
                .expect("settle");
            assert_eq!(cdr.billable_secs, *expect_secs);
            assert_eq!(cdr.cost, t.cost_of_secs(*expect_secs));
            let wallet = b.wallet(w).await.expect("wallet");
            assert_eq!(wallet.balance, 1_000_000 - cdr.cost);
            assert_eq!(wallet.reserved, 0);
            // What is left cannot buy the next block: the credit really is used up.
            let next = t.cost_of_secs(expect_secs + t.increment_next) - cdr.cost;
            assert!(
                wallet.balance < next,
                "{} left, next block costs {next}",
                wallet.balance
            );
            assert_invariants(&b, w).await;
        }
    }
}

#[tokio::test]
async fn settling_twice_changes_nothing() {
    for db in storage::testing::all().await {
        let clock = fake_clock();
        let b = billing(&db, clock.clone(), "n1").await;
        add_rate(&b, "44", "GB", tariff(60_000, 10_000, 1, 1)).await;
        let w = funded_wallet(&b, "acme", 5_000_000).await;
        b.authorize(auth("c1", w, "+442071234567"))
            .await
            .expect("authorize");
        b.answer("c1", T0 + 1_000).await.expect("answer");
        let first = b
            .settle(settle_at("c1", T0 + 43_500, EndCause::Normal))
            .await
            .expect("settle");
        assert_eq!(first.duration_ms, 42_500);
        assert_eq!(first.billable_secs, 43);
        assert_eq!(first.cost, 10_000 + 43_000);
        assert_eq!(first.quality, Some(serde_json::json!({"mos": 4.3})));
        let before = b.wallet(w).await.expect("wallet");
        // Replayed with other numbers: the first settlement stands.
        let again = b
            .settle(settle_at("c1", T0 + 99_000, EndCause::Normal))
            .await
            .expect("replay");
        assert_eq!(again, first);
        assert_eq!(b.wallet(w).await.expect("wallet"), before);
        assert_eq!(b.ledger(w, 10).await.expect("ledger").len(), 2);
        // The call id cannot be reused.
        let r = b.authorize(auth("c1", w, "+442071234567")).await;
        assert!(matches!(r, Err(BillingError::DuplicateCall(_))), "{r:?}");
        assert!(matches!(
            b.settle(settle_at("nope", T0, EndCause::Normal)).await,
            Err(BillingError::UnknownCall(_))
        ));
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn unanswered_calls_cost_nothing_and_release_their_hold() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        add_rate(&b, "44", "GB", tariff(60_000, 10_000, 60, 60)).await;
        let w = funded_wallet(&b, "acme", 1_000_000).await;
        let g = b
            .authorize(auth("c1", w, "+442071234567"))
            .await
            .expect("authorize");
        assert_eq!(g.reserved, 70_000);
        assert_eq!(b.wallet(w).await.expect("wallet").reserved, 70_000);
        let r = b.authorize(auth("c1", w, "+442071234567")).await;
        assert!(matches!(r, Err(BillingError::DuplicateCall(_))));
        let cdr = b
            .settle(settle_at("c1", T0 + 30_000, EndCause::NotAnswered))
            .await
            .expect("settle");
        assert_eq!((cdr.cost, cdr.billable_secs, cdr.answered_at), (0, 0, None));
        let wallet = b.wallet(w).await.expect("wallet");
        assert_eq!((wallet.balance, wallet.reserved), (1_000_000, 0));
        assert_eq!(
            b.ledger(w, 10).await.expect("ledger").len(),
            1,
            "no zero movements"
        );
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn short_wallets_get_final_units_or_a_refusal() {
    for db in storage::testing::all().await {
        let b = billing(&db, fake_clock(), "n1").await;
        add_rate(&b, "44", "GB", tariff(60_000, 0, 6, 6)).await; // $0.001/s
        let w = funded_wallet(&b, "acme", 20_000).await; // 20 s
        let g = b
            .authorize(auth("c1", w, "+442071234567"))
            .await
            .expect("authorize");
        assert_eq!(
            (g.granted_ms, g.final_units, g.reserved),
            (18_000, true, 18_000)
        );
        let r = b.authorize(auth("c2", w, "+442071234567")).await;
        match r {
            Err(BillingError::Refused(Refusal::InsufficientBalance { available, needed })) => {
                assert_eq!((available, needed), (2_000, 6_000));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn a_top_up_lifts_final_units() {
    for db in storage::testing::all().await {
        let clock = fake_clock();
        let b = billing(&db, clock.clone(), "n1").await;
        add_rate(&b, "44", "GB", tariff(60_000, 0, 1, 1)).await;
        let w = funded_wallet(&b, "acme", 90_000).await; // 90 s
        b.authorize(auth("c1", w, "+442071234567"))
            .await
            .expect("authorize");
        let g = b.answer("c1", T0).await.expect("answer");
        let mut meter = Meter::for_billing(&b);
        meter.track(&g, T0);
        clock.set(T0 + 45_000);
        assert!(matches!(
            meter.poll(T0 + 45_000),
            Some(MeterEvent::Extend { .. })
        ));
        let g = b.extend("c1").await.expect("extend");
        assert_eq!((g.granted_ms, g.final_units), (90_000, true));
        meter.extended(&g, clock.now_ms());
        assert_eq!(meter.next_timeout(), Some(T0 + 90_000));
        // The customer tops up at 60 s: the starved call extends again.
        clock.set(T0 + 60_000);
        b.post(Movement {
            wallet_id: w,
            kind: LedgerKind::Purchase,
            amount: 5_000_000,
            idempotency_key: "pay_2".into(),
            reference: None,
            reason: "top-up".into(),
        })
        .await
        .expect("top-up");
        assert_eq!(meter.wake_starved(Some(w), T0 + 60_000), 1);
        assert!(matches!(
            meter.poll(T0 + 60_000),
            Some(MeterEvent::Extend { .. })
        ));
        let g = b.extend("c1").await.expect("extend");
        assert_eq!((g.granted_ms, g.final_units), (150_000, false));
        meter.extended(&g, T0 + 60_000);
        assert_eq!(meter.next_timeout(), Some(T0 + 135_000));
        assert_invariants(&b, w).await;
    }
}

#[tokio::test]
async fn dead_hosts_reservations_expire_and_restarts_settle_leftovers() {
    for db in storage::testing::all().await {
        let clock = fake_clock();
        let a = billing(&db, clock.clone(), "host-a").await;
        let other = billing(&db, clock.clone(), "host-b").await;
        add_rate(&a, "44", "GB", tariff(60_000, 0, 1, 1)).await;
        other.reload_rates().await.expect("reload");
        let w = funded_wallet(&a, "acme", 10_000_000).await;
        a.authorize(auth("a1", w, "+442071234567"))
            .await
            .expect("authorize");
        a.answer("a1", T0).await.expect("answer");
        clock.set(T0 + 45_000);
        a.extend("a1").await.expect("extend"); // last sign of life at 45 s
        a.authorize(auth("a2", w, "+442071234567"))
            .await
            .expect("authorize");
        // host-a dies. Before the TTL nothing is touched.
        clock.set(T0 + 45_000 + 119_999);
        assert!(other
            .expire_reservations()
            .await
            .expect("janitor")
            .is_empty());
        clock.set(T0 + 45_000 + 120_001);
        let settled = other.expire_reservations().await.expect("janitor");
        assert_eq!(settled.len(), 2);
        let a1 = settled.iter().find(|c| c.call_id == "a1").expect("a1");
        assert_eq!(
            (a1.hangup_cause.as_str(), a1.billable_secs, a1.cost),
            ("node_lost", 45, 45_000)
        );
        let a2 = settled.iter().find(|c| c.call_id == "a2").expect("a2");
        assert_eq!(a2.cost, 0);
        assert!(other
            .expire_reservations()
            .await
            .expect("janitor")
            .is_empty());

        // host-b restarts with a live call of its own: it settles it at start-up.
        other
            .authorize(auth("b1", w, "+442071234567"))
            .await
            .expect("authorize");
        other.answer("b1", clock.now_ms()).await.expect("answer");
        let restarted = billing(&db, clock.clone(), "host-b").await;
        let left = restarted.settle_own_leftovers().await.expect("leftovers");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hangup_cause, "node_restart");
        assert!(a.live_grants().await.expect("live").is_empty());
        assert_eq!(
            a.wallet(w).await.expect("wallet").balance,
            10_000_000 - 45_000
        );
        assert_invariants(&a, w).await;
    }
}

/// Hundreds of calls on one wallet that barely covers them, from many tasks (and on
/// PostgreSQL from two engines with separate pools, as two hosts would be): the wallet is
/// never overdrawn at any step, and at the end balance == sum(ledger) and the money taken
/// equals the sum of the CDR costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_never_overdraw_a_shared_wallet() {
    const CALLS: usize = 240;
    for db in storage::testing::all().await {
        let clock: Arc<dyn Clock> = Arc::new(billing::SystemClock);
        let host_a = billing(&db, clock.clone(), "host-a").await;
        let host_b = if db.db.backend() == storage::Backend::Postgres {
            let second = storage::Db::open(&db.url, &storage::DbOptions::default())
                .await
                .expect("second pool");
            billing::Billing::new(
                second,
                clock.clone(),
                "host-b",
                billing::BillingConfig::default(),
            )
            .await
            .expect("second engine")
        } else {
            billing(&db, clock.clone(), "host-b").await
        };
        // $0.06/min at 6/6: the first grant (60 s) costs 60_000.
        add_rate(&host_a, "44", "GB", tariff(60_000, 0, 6, 6)).await;
        host_b.reload_rates().await.expect("reload");
        // Enough for 200 first grants and a 33 s one; the other 39 calls do not fit.
        let initial = 200 * 60_000 + 33_333;
        let w = funded_wallet(&host_a, "big-co", initial).await;

        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checker = {
            let (b, done) = (host_a.clone(), done.clone());
            tokio::spawn(async move {
                let mut samples = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let (bal, res, sum): (i64, i64, i64) = sqlx::query_as(
                        "SELECT balance, reserved, (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) \
                         FROM reservations WHERE wallet_id = $1) FROM wallets WHERE id = $1",
                    )
                    .bind(w)
                    .fetch_one(b.db().pool())
                    .await
                    .expect("sample");
                    assert!(bal - res >= 0, "overdrawn: balance {bal}, reserved {res}");
                    assert!(res >= 0);
                    if b.db().backend() == storage::Backend::Postgres {
                        // One statement, one snapshot: the two must agree.
                        assert_eq!(res, sum, "reserved != sum(reservations)");
                    }
                    samples += 1;
                    tokio::task::yield_now().await;
                }
                samples
            })
        };

        // Every call is authorized (or refused) before any ends: all live at once.
        let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
        let mut tasks = Vec::new();
        for i in 0..CALLS {
            let b = if i % 2 == 0 {
                host_a.clone()
            } else {
                host_b.clone()
            };
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("call-{i}");
                let r = b.authorize(auth(&id, w, "+442071234567")).await;
                barrier.wait().await;
                match r {
                    Ok(_) => {}
                    Err(BillingError::Refused(Refusal::InsufficientBalance { .. })) => return None,
                    Err(e) => panic!("authorize {id}: {e}"),
                }
                let answered = b.clock().now_ms();
                b.answer(&id, answered).await.expect("answer");
                let mut g = None;
                for _ in 0..(i % 4) {
                    g = Some(b.extend(&id).await.expect("extend"));
                }
                let granted = g.map(|g| g.granted_ms).unwrap_or(60_000);
                // Talk for some of the grant, or past it (capped at the grant when billed).
                let talked = match i % 3 {
                    0 => granted,
                    1 => granted / 3,
                    _ => granted + 5_000,
                };
                let cdr = b
                    .settle(settle_at(&id, answered + talked, EndCause::Normal))
                    .await
                    .expect("settle");
                assert!(cdr.duration_ms <= granted);
                Some(cdr.cost)
            }));
        }
        let mut authorized = 0;
        let mut charged = 0;
        for t in tasks {
            if let Some(cost) = t.await.expect("call task") {
                authorized += 1;
                charged += cost;
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let samples = checker.await.expect("checker");
        assert!(samples > 0);
        assert_eq!(authorized, 201, "200 full first grants and one of 33 s");

        let wallet = host_a.wallet(w).await.expect("wallet");
        assert_eq!(wallet.reserved, 0);
        assert_eq!(wallet.balance, host_a.ledger_sum(w).await.expect("ledger"));
        assert_eq!(
            initial - wallet.balance,
            host_a.cdr_cost_sum(w).await.expect("cdrs")
        );
        assert_eq!(initial - wallet.balance, charged);
        assert_invariants(&host_a, w).await;
        eprintln!(
            "{:?}: {authorized}/{CALLS} authorized, {samples} invariant samples, {} charged",
            db.db.backend(),
            billing::money::format_amount(charged)
        );
    }
}
