//! Integration tests: the real `gatekeeper` binary in front of in-process mock
//! providers (`gatekeeper-mock`), on free loopback ports.

mod anthropic;
mod audit;
mod auth;
mod budget_nodes;
mod budgets;
mod credits;
mod failover;
mod hardening;
mod harness;
mod health;
mod http_suite;
mod lifecycle;
mod operators;
mod routing;
mod tuning;

/// Runs each HTTP-suite test once per I/O driver.
macro_rules! under_both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::http_suite::$name("uring") } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::http_suite::$name("epoll") } )*
        }
    };
}

under_both_drivers!(
    non_streaming_answer_arrives_intact,
    streaming_chunks_arrive_as_emitted,
    keep_alive_and_pipelining_answer_in_order,
    chunked_body_and_expect_continue,
    header_and_body_limits_at_their_edge,
    slowloris_is_cut_by_the_header_timeout,
    slow_body_is_cut_by_the_body_timeout,
    idle_keep_alive_connection_is_closed,
    malformed_requests_get_400_and_close,
    thousand_concurrent_keep_alive_connections,
    connection_cap_answers_503,
    metrics_name_the_driver,
    tls_termination_with_a_self_signed_certificate,
);
