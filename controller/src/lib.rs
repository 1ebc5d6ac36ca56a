//! The drove controller and admin CLI, as a library so that its pieces can
//! be tested and reused: the CLI commands ([`cli`]) and a throwaway
//! PostgreSQL for demos, benchmarks and tests ([`pgtemp`]).

pub mod cli;
pub mod pgtemp;
