//! Call records: the record type, the journal that makes them durable, the
//! writer that batches them into PostgreSQL, and the SQL that inserts them.

pub mod journal;
pub mod record;
pub mod store;
pub mod writer;
