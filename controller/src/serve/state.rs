//! What the HTTP handlers share.

use std::sync::{Arc, Mutex};

use drove_queue::Schema;
use tokio::sync::watch;

use super::auth::Token;
use super::metrics::ControllerMetrics;
use crate::maintenance::stats::StatsCache;
use crate::pool::Pool;
use crate::scaling::scaler::ScalingStatus;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub schema: Schema,
    pub pool: Pool,
    pub token: Token,
    pub cache: Arc<StatsCache>,
    pub metrics: ControllerMetrics,
    pub leader: watch::Receiver<bool>,
    pub scaling: Arc<Mutex<ScalingStatus>>,
    pub max_batch: usize,
}

impl AppState {
    pub fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
