//! Anthropic's Messages API, spoken to `kind: anthropic` providers while clients keep
//! speaking OpenAI's chat completions: [`request`] translates the client's body into a
//! Messages request, [`response`] translates a whole answer (and an error) back, and
//! [`stream`] translates a streamed answer event by event.

pub mod request;
pub mod response;
pub mod stream;

pub use request::messages_body;
pub use response::{chat_completion, error_body, AnswerError};
pub use stream::{StreamState, StreamTranslator};

#[cfg(test)]
mod tests;
