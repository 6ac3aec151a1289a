//! `gatekeeper keys …` (stub while the library builds).
