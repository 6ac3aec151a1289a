//! Offline API keys: PASETO `v4.public` tokens verified against configured issuers.
