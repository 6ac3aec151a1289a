//! HTTP/1.1 wire format: request heads in, responses out.

pub mod request;
pub mod response;
