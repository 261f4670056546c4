//! The meter task on the real clock: a call whose wallet runs dry is hung up at its
//! deadline, after extending ahead of use through the database.

mod common;

use std::sync::Arc;
use std::time::Duration;

use billing::{AuthorizeRequest, BillingConfig, EndCause, MeterEvent, SettleRequest, SystemClock};
use common::*;

#[tokio::test]
async fn the_meter_task_extends_then_hangs_up_at_the_deadline() {
    for db in storage::testing::all().await {
        let config = BillingConfig {
            first_grant_secs: 2,
            slice_secs: 2,
            lead_secs: 1,
            ..BillingConfig::default()
        };
        let b = billing_with(&db, Arc::new(SystemClock), "n1", config).await;
        add_rate(&b, "44", "GB", tariff(60_000, 0, 1, 1)).await; // 1000 µ per second
        let w = funded_wallet(&b, "acme", 3_500).await; // 3.5 s: 3 whole seconds

        let (tx, mut hangups) = tokio::sync::mpsc::unbounded_channel();
        let (meter, task) = billing::meter::spawn(b.clone(), tx);
        let g = b
            .authorize(AuthorizeRequest {
                call_id: "c1".into(),
                wallet_id: w,
                caller: String::new(),
                callee: "+442071234567".into(),
            })
            .await
            .expect("authorize");
        assert_eq!(g.granted_ms, 2_000);
        meter.track(g);
        let answered = b.clock().now_ms();
        meter.track(b.answer("c1", answered).await.expect("answer"));

        let ev = tokio::time::timeout(Duration::from_secs(30), hangups.recv())
            .await
            .expect("a hangup within 30 s")
            .expect("channel open");
        let received = b.clock().now_ms();
        let MeterEvent::HangUp {
            call_id, deadline, ..
        } = ev
        else {
            panic!("unexpected event {ev:?}");
        };
        assert_eq!(&*call_id, "c1");
        assert_eq!(
            deadline,
            answered + 3_000,
            "extended once, to the last whole second"
        );
        assert!(
            received >= deadline,
            "hung up {} ms early",
            deadline - received
        );
        let g = b.grant("c1").await.expect("grant");
        assert!(g.final_units);

        let cdr = b
            .settle(SettleRequest {
                call_id: "c1".into(),
                ended_at: received,
                cause: EndCause::CreditExhausted,
                trunk: None,
                quality: None,
            })
            .await
            .expect("settle");
        assert_eq!((cdr.billable_secs, cdr.cost), (3, 3_000));
        meter.remove("c1");
        drop(meter);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("meter task stops when its handles are dropped")
            .expect("meter task");
        assert_invariants(&b, w).await;
    }
}
