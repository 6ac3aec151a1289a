//! Units every Gatekeeper crate shares: duration strings and calendar dates.
//!
//! [`duration::parse`] reads the human durations of command lines and configs (`250ms`,
//! `10s`, `5m`, `2h`, `30d`); each caller passes a [`duration::Syntax`] naming the units it
//! accepts and what a bare number means, so one parser serves tools with different habits.
//! [`civil`] converts between Unix days and proleptic Gregorian dates
//! ([`civil::days_from_civil`], [`civil::civil_from_days`]) and finds calendar-month bounds
//! ([`civil::month_start`], [`civil::next_month_start`]) for HTTP dates, RFC 3339 claims and
//! monthly budget windows.
//!
//! Everything here is pure, allocation-free and total: input from outside becomes an error
//! value or `None`, never a panic or a wrapped number.
//!
//! ```
//! use std::time::Duration;
//! use gatekeeper_units::{civil, duration::{self, Syntax, Unit}};
//!
//! let syntax = Syntax { units: &[Unit::Millis, Unit::Secs, Unit::Mins], bare: Some(Unit::Secs) };
//! assert_eq!(duration::parse("250ms", syntax), Ok(Duration::from_millis(250)));
//! assert_eq!(duration::parse("3", syntax), Ok(Duration::from_secs(3)));
//! assert!(duration::parse("2h", syntax).is_err());
//!
//! assert_eq!(civil::days_from_civil(2000, 3, 1), Some(11_017));
//! assert_eq!(civil::civil_from_days(11_017), (2000, 3, 1));
//! assert_eq!(civil::month_start(1_709_211_600), Some(1_706_745_600)); // 2024-02-29T13:00Z → 2024-02-01
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod civil;
pub mod duration;
