//! Call records: the record type, the journal that makes them durable, the
//! writer that batches them into PostgreSQL, and the SQL that inserts them;
//! the postback outbox those inserts fill, and the sender that empties it.

pub mod journal;
pub mod outbox;
pub mod postback;
pub mod record;
pub mod store;
pub mod writer;
