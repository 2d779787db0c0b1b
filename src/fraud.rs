//! Fraud signals (placeholder, filled below).
