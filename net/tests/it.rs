//! Integration tests of `gatekeeper-net`, one binary: the upstream client against scripted
//! std servers, and the client-facing server run in-process against a std client.

mod server;
mod upstream;
