//! Client and provider wire formats: what the gateway reads from a request body,
//! what it writes into a provider request, the error JSON clients see, and token
//! usage read from answers and streams. One module per format: [`openai`] (the
//! client-facing format and every OpenAI-compatible provider) and [`anthropic`]
//! (translated both ways, whole answers and streams).

pub mod anthropic;
pub mod openai;
