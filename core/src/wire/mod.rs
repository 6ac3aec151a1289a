//! Client and provider wire formats: what the gateway reads from a request body,
//! what it writes into a provider request, the error JSON clients see, and token
//! usage read from answers and streams. One file per format: [`openai`] today (the
//! client-facing format and every OpenAI-compatible provider); an `anthropic.rs`
//! translating both ways belongs beside it.

pub mod openai;
