//! Admission arithmetic: limits at their edges, settlement, release, roll-over.

use super::*;
use crate::keys::{Budget, BUDGET_CLAIM_MAX};
use crate::metrics::ShardMetrics;

/// 2024-02-29T23:59:30Z: 30 s before a minute, a day and a month end.
const T: i64 = 1_709_251_170;

struct Fixture {
    board: BudgetBoard,
    settings: BudgetSettings,
    metrics: Vec<ShardMetrics>,
}

impl Fixture {
    fn new(shards: usize) -> Fixture {
        Fixture {
            board: BudgetBoard::new(shards, 16),
            settings: BudgetSettings::default(),
            metrics: (0..shards).map(|_| ShardMetrics::new(0, 0)).collect(),
        }
    }

    fn ctx(&self, shard: usize) -> BudgetContext<'_> {
        BudgetContext { board: &self.board, shard, settings: &self.settings, metrics: &self.metrics[shard] }
    }

    fn admit(&self, shard: usize, claims: &Claims, need: u64, now: i64) -> Result<Admission<'_>, BudgetError> {
        admit(self.ctx(shard), Payment::Key, Some(claims), need, now)
    }

    fn spent(&self, jti: &str, kind: usize, now: i64) -> CellValues {
        let row = self.board.find(SubjectRef { tenant: false, name: jti }).expect("row");
        let start = windows(now).expect("windows")[kind].start_unix_s();
        self.board.row(row).expect("body").total(kind, start)
    }
}

fn key(budget: Budget, rpm: Option<u64>) -> Claims {
    Claims { jti: "k1".into(), budget, rpm, ..Claims::default() }
}

fn per_minute(n: u64) -> Claims {
    key(Budget { tokens_per_minute: Some(n), ..Budget::default() }, None)
}

fn ok(usage: (u64, u64)) -> Outcome {
    Outcome {
        status: 200,
        usage: Some(Usage { prompt_tokens: usage.0, completion_tokens: usage.1 }),
        price_per_1k: None,
    }
}

fn refusal(r: Result<Admission<'_>, BudgetError>) -> Refusal {
    match r {
        Err(BudgetError::Exceeded { refusal, .. }) => refusal,
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("admitted"),
    }
}

#[test]
fn exactly_the_limit_is_admitted_and_one_more_token_is_not() {
    let f = Fixture::new(1);
    let c = per_minute(100);
    let a = f.admit(0, &c, 100, T).expect("exactly at the limit");
    let r = refusal(f.admit(0, &c, 1, T));
    assert_eq!(
        (r.kind, r.kind.code(), r.limit, r.tenant),
        (LimitKind::TokensPerMinute, "rate_limit_exceeded", 100, false)
    );
    assert_eq!(r.retry_after_s, 30, "seconds to the minute's end");
    let too_big = f.admit(0, &c, 101, T).map(|_| ()).unwrap_err().to_string();
    assert!(too_big.contains("needs 101 tokens") && too_big.contains("lower max_tokens"), "{too_big}");
    assert_eq!(a.settle(ok((40, 20))), 60);
    let b = f.admit(0, &c, 40, T).expect("what the answer did not use is free again");
    assert!(f.admit(0, &c, 1, T).is_err());
    drop(b);
    assert_eq!(f.spent("k1", 0, T).settled_tokens, 60);
}

#[test]
fn a_dropped_or_failed_request_releases_its_reservation() {
    let f = Fixture::new(1);
    let c = per_minute(100);
    drop(f.admit(0, &c, 100, T).expect("fits"));
    let a = f.admit(0, &c, 100, T).expect("released on drop");
    assert_eq!(a.settle(Outcome { status: 502, usage: None, price_per_1k: None }), 0);
    let a = f.admit(0, &c, 100, T).expect("released on failure");
    assert_eq!(f.metrics[0].budget.reserved_tokens.get(), 100);
    drop(a);
    let v = f.spent("k1", 0, T);
    assert_eq!((v.settled_tokens, v.reserved_tokens, v.requests), (0, 0, 3));
    assert_eq!(f.metrics[0].budget.reserved_tokens.get(), 0);
}

#[test]
fn an_answer_without_usage_costs_its_reservation() {
    let f = Fixture::new(1);
    let a = f.admit(0, &per_minute(100), 70, T).expect("fits");
    assert_eq!(a.settle(Outcome { status: 200, usage: None, price_per_1k: None }), 70);
}

#[test]
fn other_shards_reservations_and_the_remote_column_count() {
    let f = Fixture::new(2);
    let c = per_minute(100);
    let _held = f.admit(0, &c, 60, T).expect("shard 0");
    assert!(f.admit(1, &c, 41, T).is_err(), "shard 0's reservation counts on shard 1");
    let b = f.admit(1, &c, 40, T).expect("exactly the rest");
    drop(b);
    let row = f.board.find(SubjectRef { tenant: false, name: "k1" }).expect("row");
    let remote = f.board.row(row).and_then(|r| r.cell(2, 0)).expect("remote cell");
    let start = windows(T).expect("w")[0].start_unix_s();
    remote.store(CellValues { settled_tokens: 40, ..CellValues::fresh(start) });
    assert!(f.admit(1, &c, 1, T).is_err(), "other replicas' spend counts");
}

#[test]
fn windows_roll_over_at_minute_day_and_month_edges() {
    let f = Fixture::new(1);
    let c = key(
        Budget {
            tokens_per_minute: Some(10),
            tokens_per_day: Some(20),
            tokens_per_month: Some(30),
            ..Budget::default()
        },
        None,
    );
    f.admit(0, &c, 10, T).expect("fits").settle(ok((10, 0)));
    assert_eq!(refusal(f.admit(0, &c, 1, T + 29)).kind, LimitKind::TokensPerMinute, "last second of the minute");
    // 23:59:00 is the next minute but the same day: the day's 20 still hold.
    let day_end = T + 30;
    f.admit(0, &c, 10, T - 60).expect("an earlier minute").settle(ok((10, 0)));
    let r = refusal(f.admit(0, &c, 1, T + 29));
    assert_eq!(r.kind, LimitKind::TokensPerDay, "the day is spent too; its window ends last");
    assert_eq!((r.kind.code(), r.retry_after_s), ("insufficient_quota", 1));
    // 2024-03-01T00:00:00Z: a new minute, day and month.
    let a = f.admit(0, &c, 10, day_end).expect("everything rolled over");
    assert_eq!(f.spent("k1", 2, day_end).reserved_tokens, 10);
    a.settle(ok((5, 5)));
    // The column's cells now count March: February's were reclaimed in place.
    assert_eq!(f.spent("k1", 2, T).settled_tokens, 0, "an ended window reads as nothing");
    assert_eq!(f.spent("k1", 2, day_end).settled_tokens, 10);
}

#[test]
fn a_settlement_after_its_window_ended_does_not_touch_the_next() {
    let f = Fixture::new(1);
    let c = per_minute(100);
    let old = f.admit(0, &c, 50, T).expect("fits");
    let new = f.admit(0, &c, 100, T + 30).expect("a new minute owes nothing to the old");
    old.settle(ok((50, 0)));
    let v = f.spent("k1", 0, T + 30);
    assert_eq!((v.settled_tokens, v.reserved_tokens), (0, 100));
    new.settle(ok((1, 1)));
}

#[test]
fn requests_per_minute_count_admissions() {
    let f = Fixture::new(2);
    let c = key(Budget::default(), Some(2));
    let _a = f.admit(0, &c, 1, T).expect("1");
    let _b = f.admit(1, &c, 1, T).expect("2: at the limit");
    let r = refusal(f.admit(0, &c, 1, T));
    assert_eq!((r.kind, r.kind.code(), r.limit), (LimitKind::Requests, "rate_limit_exceeded", 2));
    assert_eq!(f.metrics[0].budget.refusals[4].get(), 1);
}

#[test]
fn the_tenants_limit_applies_beside_the_keys_and_the_tighter_wins() {
    let mut f = Fixture::new(1);
    f.settings.tenants.insert("acme".into(), Limits::new([Some(50), None, None], None, None));
    let mut c = per_minute(1000);
    c.tenant = Some("acme".into());
    let r = refusal(f.admit(0, &c, 51, T));
    assert!(r.tenant && r.limit == 50, "{r:?}");
    let a = f.admit(0, &c, 50, T).expect("at the tenant's limit");
    let other = Claims { jti: "k2".into(), ..c.clone() };
    assert!(f.admit(0, &other, 1, T).is_err(), "the tenant's total spans its keys");
    drop(a);
    let mut no_key_limit = Claims { jti: "k3".into(), tenant: Some("acme".into()), ..Claims::default() };
    assert!(f.admit(0, &no_key_limit, 50, T).is_ok(), "a tenant limit alone meters the key");
    no_key_limit.tenant = Some("unknown".into());
    assert!(f.admit(0, &no_key_limit, u64::MAX, T).expect("no limit").trace().is_none(), "unmetered");
}

#[test]
fn usd_is_settled_at_the_answering_price_and_refuses_once_spent() {
    let f = Fixture::new(1);
    let c = key(Budget { usd_per_month: Some(0.002), ..Budget::default() }, None);
    let a = f.admit(0, &c, 10, T).expect("nothing spent yet");
    // 1,000 prompt tokens at 0.001 USD / 1k + 1,000 at 0.002 = 0.003 USD, past the 0.002.
    let spend = Outcome { price_per_1k: Some((0.001, 0.002)), ..ok((1000, 1000)) };
    assert_eq!(spend.spend(10), (2000, 3_000_000));
    a.settle(spend);
    let r = refusal(f.admit(0, &c, 1, T));
    assert_eq!((r.kind, r.kind.code()), (LimitKind::UsdPerMonth, "insufficient_quota"));
    assert_eq!(r.retry_after_s, 30, "to the month's end");
}

#[test]
fn arithmetic_saturates_instead_of_wrapping() {
    let f = Fixture::new(1);
    let c = per_minute(BUDGET_CLAIM_MAX);
    assert!(f.admit(0, &c, u64::MAX, T).is_err());
    let a = f.admit(0, &c, BUDGET_CLAIM_MAX, T).expect("the largest limit, exactly");
    a.settle(ok((u64::MAX, u64::MAX)));
    let v = f.spent("k1", 0, T);
    assert_eq!((v.settled_tokens, v.reserved_tokens), (u64::MAX, 0));
    assert!(f.admit(0, &c, 0, T).is_err(), "spent reads as spent, not as wrapped to 0");
    let huge = Outcome { price_per_1k: Some((f64::MAX, f64::MAX)), ..ok((u64::MAX, 1)) };
    assert_eq!(huge.spend(0).1, u64::MAX);
}

#[test]
fn unauthenticated_and_unlimited_requests_are_unmetered() {
    let f = Fixture::new(1);
    let c = per_minute(1);
    assert!(admit(f.ctx(0), Payment::Unauthenticated, Some(&c), 5, T).expect("no key").trace().is_none());
    assert!(admit(f.ctx(0), Payment::Key, None, 5, T).expect("no claims").trace().is_none());
    assert!(f.admit(0, &key(Budget::default(), None), 5, T).expect("no limits").trace().is_none());
    assert_eq!(f.board.subjects(), 0, "no row for an unbudgeted key");
}

#[test]
fn the_headers_report_the_tightest_window_after_this_reservation() {
    let f = Fixture::new(1);
    let c = key(Budget { tokens_per_minute: Some(100), tokens_per_day: Some(1000), ..Budget::default() }, Some(10));
    let a = f.admit(0, &c, 30, T).expect("fits");
    let view = a.trace().expect("metered").view;
    assert_eq!(view.tokens, Some(RateLine { limit: 100, remaining: 70, reset_s: 30 }));
    assert_eq!(view.requests, Some(RateLine { limit: 10, remaining: 9, reset_s: 30 }));
}

#[test]
fn a_full_table_refuses_new_subjects_with_its_own_error() {
    let mut f = Fixture::new(1);
    f.board = BudgetBoard::new(1, 1);
    let _a = f.admit(0, &per_minute(10), 1, T).expect("first subject");
    let other = Claims { jti: "k2".into(), ..per_minute(10) };
    assert!(matches!(f.admit(0, &other, 1, T), Err(BudgetError::Table(BoardError::Full { subjects_max: 1 }))));
    assert_eq!(f.metrics[0].budget.refusals[5].get(), 1);
}

#[test]
fn refusal_metrics_are_labelled_by_the_limits_name() {
    for kind in [LimitKind::TokensPerMinute, LimitKind::TokensPerDay, LimitKind::TokensPerMonth, LimitKind::UsdPerMonth]
        .into_iter()
        .chain([LimitKind::Requests])
    {
        let refusal = Refusal { tenant: false, kind, limit: 1, retry_after_s: 1, requested_tokens: 1 };
        let e = BudgetError::Exceeded { refusal, view: RateView::default() };
        assert_eq!(crate::metrics::BUDGET_REFUSAL_REASONS[e.reason_slot()], kind.name());
    }
    let full = BudgetError::Table(BoardError::Full { subjects_max: 1 });
    assert_eq!(crate::metrics::BUDGET_REFUSAL_REASONS[full.reason_slot()], "table_full");
}
