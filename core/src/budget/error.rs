//! Why the budget step refused a request.

use super::board::BoardError;
use super::headers::RateView;

/// Which limit a request did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `tokens_per_minute`.
    TokensPerMinute,
    /// `tokens_per_day`.
    TokensPerDay,
    /// `tokens_per_month`.
    TokensPerMonth,
    /// `usd_per_month`.
    UsdPerMonth,
    /// `rpm`.
    Requests,
}

impl LimitKind {
    /// The token limits by window kind index (minute, day, month).
    pub const TOKENS: [LimitKind; 3] = [LimitKind::TokensPerMinute, LimitKind::TokensPerDay, LimitKind::TokensPerMonth];

    /// The limit's name as claims and config write it.
    pub const fn name(self) -> &'static str {
        match self {
            LimitKind::TokensPerMinute => "tokens_per_minute",
            LimitKind::TokensPerDay => "tokens_per_day",
            LimitKind::TokensPerMonth => "tokens_per_month",
            LimitKind::UsdPerMonth => "usd_per_month",
            LimitKind::Requests => "rpm",
        }
    }

    /// OpenAI's error code: `rate_limit_exceeded` for per-minute limits (wait a
    /// little), `insufficient_quota` for day, month and USD (a quota is spent).
    pub const fn code(self) -> &'static str {
        match self {
            LimitKind::TokensPerMinute | LimitKind::Requests => "rate_limit_exceeded",
            LimitKind::TokensPerDay | LimitKind::TokensPerMonth | LimitKind::UsdPerMonth => "insufficient_quota",
        }
    }
}

/// The limit a request was refused by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The tenant's limit (else the key's).
    pub tenant: bool,
    /// Which limit.
    pub kind: LimitKind,
    /// Its value (nano-USD for `usd_per_month`).
    pub limit: u64,
    /// Seconds until its window ends (at least 1): `Retry-After`.
    pub retry_after_s: u64,
    /// Tokens the request asked to reserve.
    pub requested_tokens: u64,
}

/// Why a request was refused at the budget step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The request does not fit a limit (429). Of several, the one whose window ends last.
    #[error("{}", exceeded_message(.refusal))]
    Exceeded {
        /// The limit.
        refusal: Refusal,
        /// The `x-ratelimit-*` headers as of this request.
        view: RateView,
    },
    /// The budget table has no row for a new subject (503).
    #[error("{0}; budgeted requests of keys not seen before are refused until restart")]
    Table(BoardError),
    /// The clock is outside the range windows are counted in.
    #[error("the system clock is out of range for budget windows")]
    Clock,
}

impl BudgetError {
    /// The refusal's reason as an index into `metrics::BUDGET_REFUSAL_REASONS`
    /// (`tokens_per_minute`, `tokens_per_day`, `tokens_per_month`, `usd_per_month`,
    /// `rpm`, `table_full`).
    pub fn reason_slot(&self) -> usize {
        match self {
            BudgetError::Exceeded { refusal, .. } => match refusal.kind {
                LimitKind::TokensPerMinute => 0,
                LimitKind::TokensPerDay => 1,
                LimitKind::TokensPerMonth => 2,
                LimitKind::UsdPerMonth => 3,
                LimitKind::Requests => 4,
            },
            BudgetError::Table(_) | BudgetError::Clock => 5,
        }
    }
}

fn exceeded_message(r: &Refusal) -> String {
    let whose = if r.tenant { "the tenant's" } else { "this key's" };
    let limit = match r.kind {
        LimitKind::UsdPerMonth => format!("{} USD", r.limit as f64 / super::limits::NANO_USD_PER_USD),
        LimitKind::Requests => format!("{} requests", r.limit),
        _ => format!("{} tokens", r.limit),
    };
    let tokens = matches!(r.kind, LimitKind::TokensPerMinute | LimitKind::TokensPerDay | LimitKind::TokensPerMonth);
    if tokens && r.requested_tokens > r.limit {
        return format!(
            "this request needs {} tokens (prompt estimate + max_tokens), more than {whose} {} of {limit}; \
             lower max_tokens",
            r.requested_tokens,
            r.kind.name()
        );
    }
    format!("{whose} budget {} ({limit}) is used up; retry in {} s", r.kind.name(), r.retry_after_s)
}
