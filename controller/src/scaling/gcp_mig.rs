//! The `gcp-mig` backend: resizes a zonal or regional managed instance group
//! through the Compute API (faster scale-out than the autoscaler, and scale
//! to zero), within min/max and never below the workers running jobs (the
//! policy guarantees that). A VM removed by a resize gets SIGTERM and its
//! worker drains and gives back unfinished jobs, so nothing is lost.

use google_cloud_compute_v1::client::{InstanceGroupManagers, RegionInstanceGroupManagers};
use google_cloud_compute_v1::model::operation::Status;

use super::backend::{Applied, Backend, BackendError, BoxFuture, Decision};
use super::gcp::{GcpConn, backend_error, configure};

/// Where the group is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Zone(String),
    Region(String),
}

#[derive(Debug, Clone)]
pub struct MigConfig {
    pub project: String,
    pub location: Location,
    pub group: String,
}

enum Client {
    Zonal(InstanceGroupManagers),
    Regional(RegionInstanceGroupManagers),
}

/// Calls `$method` on the group through the zonal or regional client, with
/// `$map` turning either client's response into one type.
macro_rules! on_group {
    ($self:expr, $method:ident, $map:expr $(, $setter:ident($arg:expr))*) => {{
        let c = &$self.config;
        match (&$self.client, &c.location) {
            (Client::Zonal(cl), Location::Zone(z)) => cl
                .$method()
                .set_project(&c.project)
                .set_zone(z)
                .set_instance_group_manager(&c.group)
                $(.$setter($arg))*
                .send()
                .await
                .map($map),
            (Client::Regional(cl), Location::Region(r)) => cl
                .$method()
                .set_project(&c.project)
                .set_region(r)
                .set_instance_group_manager(&c.group)
                $(.$setter($arg))*
                .send()
                .await
                .map($map),
            _ => unreachable!("the client kind follows the location"),
        }
    }};
}

pub struct GcpMigBackend {
    client: Client,
    config: MigConfig,
}

/// Sizes as the Compute API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSize {
    pub target: u32,
    pub running: u32,
    pub instances: u32,
}

impl GcpMigBackend {
    pub async fn new(config: MigConfig, conn: &GcpConn) -> Result<GcpMigBackend, BackendError> {
        let err = |e: google_cloud_gax::client_builder::Error| {
            BackendError::new("gcp-mig", format!("building the Compute client: {e}"), true)
        };
        let client = match config.location {
            Location::Zone(_) => Client::Zonal(
                configure!(InstanceGroupManagers::builder(), conn)
                    .build()
                    .await
                    .map_err(err)?,
            ),
            Location::Region(_) => Client::Regional(
                configure!(RegionInstanceGroupManagers::builder(), conn)
                    .build()
                    .await
                    .map_err(err)?,
            ),
        };
        Ok(GcpMigBackend { client, config })
    }

    /// Target size and instances (with how many are running).
    pub async fn size(&self) -> Result<GroupSize, BackendError> {
        let group = on_group!(self, get, |g| g)
            .map_err(|e| backend_error("gcp-mig", "reading the group", e))?;
        let instances = on_group!(self, list_managed_instances, |r| r.managed_instances)
            .map_err(|e| backend_error("gcp-mig", "listing the group's instances", e))?;
        use google_cloud_compute_v1::model::managed_instance::InstanceStatus;
        let running = instances
            .iter()
            .filter(|i| i.instance_status == Some(InstanceStatus::Running))
            .count();
        Ok(GroupSize {
            target: group.target_size.unwrap_or_default().max(0) as u32,
            running: running as u32,
            instances: instances.len() as u32,
        })
    }

    /// Sets the group's target size.
    pub async fn resize(&self, size: u32) -> Result<(), BackendError> {
        let size = i32::try_from(size).unwrap_or(i32::MAX);
        let op = on_group!(self, resize, |op| op, set_size(size))
            .map_err(|e| backend_error("gcp-mig", "resizing the group", e))?;
        if let Some(err) = op.error.as_ref().filter(|e| !e.errors.is_empty()) {
            let msgs: Vec<String> = err
                .errors
                .iter()
                .filter_map(|e| e.message.clone())
                .collect();
            return Err(BackendError::new(
                "gcp-mig",
                format!("resize failed: {}", msgs.join("; ")),
                true,
            ));
        }
        tracing::debug!(operation = ?op.name, status = ?op.status.as_ref().map(Status::name), "resize accepted");
        Ok(())
    }
}

impl Backend for GcpMigBackend {
    fn name(&self) -> &'static str {
        "gcp-mig"
    }

    fn apply<'a>(&'a self, d: &'a Decision) -> BoxFuture<'a, Result<Applied, BackendError>> {
        Box::pin(async move {
            let size = self.size().await?;
            if size.target == d.desired {
                return Ok(Applied {
                    size: Some(size.target),
                    action: None,
                });
            }
            self.resize(d.desired).await?;
            Ok(Applied {
                size: Some(d.desired),
                action: Some(format!(
                    "resized {} from {} to {} ({} running)",
                    self.config.group, size.target, d.desired, size.running
                )),
            })
        })
    }
}
