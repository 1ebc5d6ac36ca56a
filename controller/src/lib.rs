//! The drove controller and admin CLI, as a library so that its pieces can
//! be tested and reused.
//!
//! - [`cli`]: the `drove` commands.
//! - [`demo`]: `drove demo`, the local multi-process demo.
//! - [`serve`]: `drove serve`: health, metrics, the `/v1` API.
//! - [`leader`]: leadership among controllers (advisory lock).
//! - [`maintenance`]: reaper, pruner, cron, statistics refresher (one loop each).
//! - [`scaling`]: the policy, the scaler loop and its backends.
//! - [`pool`]: database connections for handlers and loops.
//! - [`pgtemp`]: a throwaway PostgreSQL for the demo, benchmarks and tests.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod leader;
pub mod maintenance;
pub mod pgtemp;
pub mod pool;
pub mod scaling;
pub mod serve;
